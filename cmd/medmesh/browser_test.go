package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// exifJPEG is a photo as a phone camera writes it: a JPEG with an APP1
// EXIF segment holding GPS coordinates.
func exifJPEG(t *testing.T) string {
	img := image.NewRGBA(image.Rect(0, 0, 800, 600))
	for x := range 800 {
		for y := 0; y < 600; y += 3 {
			img.Set(x, y, color.RGBA{uint8(x), 90, 120, 255})
		}
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, nil)
	raw := buf.Bytes()
	exif := []byte("Exif\x00\x00GPSLatitude 51.5072N GPSLongitude 0.1276W")
	seg := append([]byte{0xFF, 0xE1, byte((len(exif) + 2) >> 8), byte(len(exif) + 2)}, exif...)
	out := append(append(append([]byte{}, raw[:2]...), seg...), raw[2:]...)
	p := filepath.Join(t.TempDir(), "ward-photo.jpg")
	os.WriteFile(p, out, 0o600)
	return p
}

// TestWebAppInBrowser drives two devices' apps in headless Chromium:
// unlock, start a conversation from the directory, an urgent message
// acknowledged, ticks moving, a photo with GPS data that arrives without it,
// the basement device offline and back, and the inactivity lock. Screenshots
// of the main screens go to testdata/out.
func TestWebAppInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	var out bytes.Buffer
	e := testEnv(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	var devs []*running
	for i, who := range []string{"ben", "amira"} {
		dir := filepath.Join(root, who)
		cli(t, e, "init", "--dir", dir, "--name", "Dr "+who, "--staff-id", who, "--dept", "Ward 7", "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"))
		o := runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, lockAfter: time.Hour}
		if i > 0 {
			o.bootstrap = []peer.AddrInfo{{ID: devs[0].n.ID(), Addrs: devs[0].n.Host().Addrs()}}
		}
		d, err := startDevice(ctx, e, o, []byte("device-secret"), e.logger())
		if err != nil {
			t.Fatal(err)
		}
		defer d.close()
		devs = append(devs, d)
	}
	ben, amira := devs[0], devs[1]
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := ben.n.Recipient(amira.n.ID(), time.Now()); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("devices never met")
		}
	}
	photo := exifJPEG(t)

	// One browser per device, as on two phones.
	browser := func() context.Context {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
			chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(412, 915))
		actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
		t.Cleanup(acancel)
		tab, c1 := chromedp.NewContext(actx)
		t.Cleanup(c1)
		tab, c2 := context.WithTimeout(tab, 120*time.Second)
		t.Cleanup(c2)
		return tab
	}
	benTab, amiraTab := browser(), browser()
	os.MkdirAll("testdata/out", 0o755)
	shot := func(tab context.Context, name string) {
		t.Helper()
		b, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p, _ := filepath.Abs(filepath.Join("testdata/out", name+".png"))
		os.WriteFile(p, b, 0o644)
		t.Logf("screenshot: %s", p)
	}
	step := func(tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	unlock := func(tab context.Context, d *running) {
		step(tab, "unlock",
			chromedp.Navigate(d.url()),
			chromedp.WaitVisible(chromedp.CSS("#pass")),
			chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
			chromedp.Click(chromedp.CSS("#unlock-form button")),
			chromedp.WaitVisible(chromedp.CSS("#list-view")))
	}
	unlock(benTab, ben)
	shot(benTab, "01-lock-then-list")
	step(benTab, "new chat from the directory",
		chromedp.Click(chromedp.CSS("#new-chat")),
		chromedp.SendKeys(chromedp.CSS("#search"), "amira"),
		chromedp.WaitVisible(chromedp.CSS("#directory input[type=checkbox]")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="directory"]//span[contains(., "Dr amira · Ward 7")]`)),
		chromedp.Click(chromedp.CSS("#directory input[type=checkbox]")),
		chromedp.SendKeys(chromedp.CSS("#title"), "Bay 3"))
	step(benTab, "a mistyped NHS number is refused with a clear error",
		chromedp.SetValue(chromedp.CSS("#nhs"), "943 476 5918"),
		chromedp.SendKeys(chromedp.CSS("#patient-name"), "Jane Doe"),
		chromedp.SetValue(chromedp.CSS("#dob"), "1950-03-14"),
		chromedp.Click(chromedp.CSS("#new-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.Search(`//p[@id="new-error"][contains(., "check digit")]`)))
	step(benTab, "the NHS number corrected",
		chromedp.SetValue(chromedp.CSS("#nhs"), "943 476 5919"))
	shot(benTab, "02-new-chat")
	step(benTab, "urgent message",
		chromedp.Click(chromedp.CSS("#new-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#text")),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="patient-banner"][contains(., "Jane Doe")][contains(., "NHS No. 943 476 5919")][contains(., "Born 14-Mar-1950")]`)),
		chromedp.Click(chromedp.CSS("#urgent")),
		chromedp.SendKeys(chromedp.CSS("#text"), "Crash call bay 3"),
		chromedp.Click(chromedp.CSS("#send-form button")),
		chromedp.WaitVisible(chromedp.CSS("li.mine.urgent")))

	unlock(amiraTab, amira)
	step(amiraTab, "open the chat and acknowledge",
		chromedp.WaitVisible(chromedp.CSS("#conversations .badge.urgent")),
		chromedp.Click(chromedp.CSS("#conversations li button")),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="patient-banner"][contains(., "Jane Doe")][contains(., "NHS No. 943 476 5919")]`)),
		chromedp.WaitVisible(chromedp.CSS("button.ack")),
		chromedp.Click(chromedp.CSS("button.ack")))
	step(benTab, "sender sees the acknowledgement",
		chromedp.WaitVisible(chromedp.CSS(`li.mine span[title="acknowledged"]`)),
		chromedp.WaitVisible(chromedp.Search(`//div[contains(., "Acknowledged by Dr amira")]`)))
	shot(benTab, "03-acknowledged")
	step(benTab, "group info: members, roles, admin controls",
		chromedp.Click(chromedp.CSS("#info")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="members"]/li[contains(., "You · group admin")]`)),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="members"]/li[contains(., "Dr amira")]/button[contains(., "Remove")]`)),
		chromedp.WaitVisible(chromedp.CSS("#add-member")))
	shot(benTab, "03b-group-info")
	step(benTab, "close group info", chromedp.Click(chromedp.CSS("#info")))
	step(benTab, "a plain message",
		chromedp.SendKeys(chromedp.CSS("#text"), "Thanks, on my way"),
		chromedp.Click(chromedp.CSS("#send-form button")))
	step(benTab, "ticks move to read while amira has the chat open",
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"mine")][.//div[contains(., "Thanks, on my way")]]//span[@title="read"]`)))

	step(amiraTab, "a photo with GPS data",
		chromedp.SetUploadFiles(chromedp.CSS("#photo"), []string{photo}),
		chromedp.WaitVisible(chromedp.CSS("li.mine canvas.thumb")))
	step(benTab, "photo arrives", chromedp.WaitVisible(chromedp.CSS("li:not(.mine) canvas.thumb")))
	shot(benTab, "04-photo")
	msgs, err := ben.svc.Messages(ben.svc.Conversations()[0].ID)
	if err != nil || msgs[len(msgs)-1].Photo == nil {
		t.Fatalf("photo not in the conversation: %v", err)
	}
	photoID := msgs[len(msgs)-1].ID
	served, err := ben.svc.Photo(ben.svc.Conversations()[0].ID, photoID, true)
	if err != nil || len(served) == 0 || bytes.Contains(served, []byte("GPS")) || bytes.Contains(served, []byte("Exif")) {
		t.Fatalf("stored photo keeps metadata (or is missing): %v", err)
	}

	// Into the basement, through the demo's control page: the message
	// waits, then arrives.
	control, stopControl, err := demoControl([]demoPerson{{dir: "ben"}, {dir: "amira"}}, devs)
	if err != nil {
		t.Fatal(err)
	}
	defer stopControl()
	toggle := func(action string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, control+"amira/"+action, nil)
		req.Header.Set("Origin", strings.TrimSuffix(control, "/")) // the control page's own form
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	toggle("off")
	if !amira.n.Offline() {
		t.Fatal("demo control did not take amira offline")
	}
	step(amiraTab, "queued while offline",
		chromedp.SendKeys(chromedp.CSS("#text"), "from the basement"),
		chromedp.Click(chromedp.CSS("#send-form button")),
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"mine")][.//div[contains(., "from the basement")]]//span[@title="queued"]`)),
		chromedp.WaitVisible(chromedp.Search(`//span[@id="banner"][contains(., "offline")]`)))
	shot(amiraTab, "05-offline-queued")
	toggle("on")
	step(amiraTab, "delivered once back",
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"mine")][.//div[contains(., "from the basement")]]//span[@title!="queued"]`)))
	step(benTab, "arrives at ben", chromedp.WaitVisible(chromedp.Search(`//div[contains(., "from the basement")]`)))

	// Amira, a member but not the admin, corrects the patient's name; the
	// correction reaches ben.
	step(amiraTab, "a member corrects the patient",
		chromedp.Click(chromedp.CSS("#info")),
		chromedp.WaitVisible(chromedp.CSS("#patient-form")),
		chromedp.SetValue(chromedp.CSS("#pf-name"), "Jane Doe-Smith"),
		chromedp.Click(chromedp.CSS("#patient-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.Search(`//div[@id="patient-banner"][contains(., "Jane Doe-Smith")][contains(., "NHS No. 943 476 5919")]`)),
		chromedp.Click(chromedp.CSS("#info")))

	// Search by patient, on the device: by NHS number, by name, and a
	// search that finds nothing.
	step(benTab, "search by NHS number",
		chromedp.Click(chromedp.CSS("#back")),
		chromedp.WaitVisible(chromedp.CSS("#patient-search")),
		chromedp.SendKeys(chromedp.CSS("#patient-search"), "476 59"),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="conversations"]/li[contains(., "Bay 3")][contains(., "Jane Doe-Smith 943 476 5919")]`)))
	shot(benTab, "07-patient-search")
	step(benTab, "a search that finds nobody",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("patient-search").value = "", {}`),
		chromedp.SendKeys(chromedp.CSS("#patient-search"), "john"),
		chromedp.WaitVisible(chromedp.CSS("#no-match")),
		chromedp.WaitNotPresent(chromedp.CSS("#conversations li")))
	step(benTab, "search by name",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("patient-search").value = "", {}`),
		chromedp.SendKeys(chromedp.CSS("#patient-search"), "jane"),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="conversations"]/li[contains(., "Bay 3")]`)),
		chromedp.WaitNotVisible(chromedp.CSS("#no-match")))

	amira.app.Server().SetLockAfter(4 * time.Second)
	// Inactivity lock: amira's app is left open and untouched; after 4 s
	// without use its background status poll (every 5 s, not counted as
	// use) finds the session locked and the lock screen comes up.
	step(amiraTab, "locked by inactivity", chromedp.WaitVisible(chromedp.CSS("#lock")))
	shot(amiraTab, "06-locked")
}
