package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestWebAppInBrowser drives the real app in headless Chromium: unlock,
// open the seeded conversation, send a message, and see it reach the other
// device; a screenshot lands in testdata/out for a person to look at.
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
	var devs []*device
	for i, who := range []string{"ben", "amira"} {
		dir := filepath.Join(root, who)
		cli(t, e, "init", "--dir", dir, "--name", "Dr "+who, "--staff-id", who, "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"))
		o := runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}}
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
	convID, err := ben.svc.Create("Ward 7 handover", []peer.ID{amira.n.ID()})
	if err != nil {
		t.Fatal(err)
	}

	photo := filepath.Join(t.TempDir(), "photo.png")
	img := image.NewRGBA(image.Rect(0, 0, 640, 480))
	for x := range 640 {
		img.Set(x, x%480, color.RGBA{180, 40, 40, 255})
	}
	var pngBuf bytes.Buffer
	png.Encode(&pngBuf, img)
	os.WriteFile(photo, pngBuf.Bytes(), 0o600)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(412, 915))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 60*time.Second)
	defer tcancel()
	err = chromedp.Do(bctx,
		chromedp.Navigate(amira.url()),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#conversations li button")),
		chromedp.Click(chromedp.CSS("#conversations li button")),
		chromedp.WaitVisible(chromedp.CSS("#text")),
		chromedp.SendKeys(chromedp.CSS("#text"), "On my way from the basement"),
		chromedp.Click(chromedp.CSS("#send-form button")),
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"mine")]/div[contains(., "On my way from the basement")]`)),
		chromedp.Click(chromedp.CSS(`li.mine button[title="React 👍"]`)),
		chromedp.WaitVisible(chromedp.CSS("li.mine .reactions")),
		chromedp.SetUploadFiles(chromedp.CSS("#photo"), []string{photo}),
		chromedp.WaitVisible(chromedp.CSS("li.mine img.thumb")),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	os.MkdirAll("testdata/out", 0o755)
	os.WriteFile("testdata/out/webapp-chat.png", shot, 0o644)
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		msgs, _ := ben.svc.Messages(convID)
		if len(msgs) == 2 && msgs[0].Text == "On my way from the basement" && msgs[1].Photo != nil && msgs[1].Photo.Ready {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the message typed in the browser never reached the other device")
		}
	}
}
