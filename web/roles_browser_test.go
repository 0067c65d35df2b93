package web

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/rota"
)

// TestRolesInBrowser: in a nurse's app, "New chat" offers the on-call
// role beside people, with who holds it; choosing it starts a chat that
// reaches the registrar on call and says so. The "On call" screen shows
// the holder; a registrar's app takes the role from there. No screen
// overflows a 390-pixel-wide phone.
func TestRolesInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	ca := testnet.NewCA(t)
	app := WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour)
	startApp := func(name string, roles []string, boot ...*testnet.Peer) *dev {
		p := testnet.Start(t, ca, ca.Enrol(t, name, roles...), testnet.Boot(boot...))
		return serve(t, p, WithRoles(p.D), app)
	}
	admin := startApp("Admin", []string{rota.AdminRole})
	ann := startApp("Dr Ann", []string{"cardio-registrar"}, admin.Peer)
	bob := startApp("Dr Bob", []string{"cardio-registrar"}, admin.Peer)
	nurse := startApp("Nurse Noor", []string{"nurse"}, admin.Peer)
	all := []*testnet.Peer{admin.Peer, ann.Peer, bob.Peer, nurse.Peer}
	for _, p := range all {
		testnet.Knows(t, p, slices.DeleteFunc(slices.Clone(all), func(o *testnet.Peer) bool { return o == p })...)
	}
	if code, out := admin.call(t, "POST", "/api/v1/roles", `{"action":"define","role":"cardio-reg","name":"Cardiology registrar on call","requires":"cardio-registrar"}`); code != 200 {
		t.Fatalf("define: %d %v", code, out)
	}
	testnet.Eventually(t, 15*time.Second, "ann learns the role", func() bool { _, ok := roleIn(ann.roles(t), "cardio-reg"); return ok })
	if code, out := ann.call(t, "POST", "/api/v1/roles", `{"action":"take","role":"cardio-reg"}`); code != 200 {
		t.Fatalf("take: %d %v", code, out)
	}
	testnet.Eventually(t, 15*time.Second, "the nurse and bob see ann on call", func() bool {
		for _, p := range []*dev{nurse, bob} {
			if v, _ := roleIn(p.roles(t), "cardio-reg"); !slices.Equal(holderNames(v), []string{"Dr Ann"}) {
				return false
			}
		}
		return true
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(390, 844))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	var browser context.Context // the first tab: later ones open in its browser
	browse := func(d *dev) (context.Context, func(string, ...chromedp.Action[chromedp.Void])) {
		parent := actx
		if browser != nil {
			parent = browser
		}
		tab, c1 := chromedp.NewContext(parent)
		if browser == nil {
			browser = tab
		}
		t.Cleanup(c1)
		tab, c2 := context.WithTimeout(tab, 60*time.Second)
		t.Cleanup(c2)
		step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
			t.Helper()
			if err := chromedp.Do(tab, steps...); err != nil {
				t.Fatalf("%s: %s: %v", d.Ident.Name, what, err)
			}
		}
		step("unlock",
			chromedp.Navigate(d.srv.URL),
			chromedp.WaitVisible(chromedp.CSS("#pass")),
			chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
			chromedp.Click(chromedp.CSS("#unlock-form button")),
			chromedp.WaitVisible(chromedp.CSS("#list-view")))
		return tab, step
	}
	shot := func(tab context.Context, name string) {
		t.Helper()
		overflow, err := chromedp.Run(tab, chromedp.Evaluate[[]string](overflowJS))
		if err != nil {
			t.Fatal(err)
		}
		if len(overflow) > 0 {
			t.Errorf("%s overflows horizontally at 390 px: %v", name, overflow)
		}
		if b, err := chromedp.Run(tab, chromedp.FullScreenshot(100)); err == nil {
			os.MkdirAll("testdata/out", 0o755)
			p, _ := filepath.Abs(filepath.Join("testdata/out", name+".png"))
			os.WriteFile(p, b, 0o644)
		}
	}

	tab, step := browse(nurse)
	step("New chat offers the role with its holder",
		chromedp.Click(chromedp.CSS("#new-chat")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="on-call-roles"]//label[contains(., "Cardiology registrar on call — Dr Ann")]`)))
	shot(tab, "roles-new-chat")
	step("choose the role and start",
		chromedp.Click(chromedp.Search(`//ul[@id="on-call-roles"]//label[contains(., "Cardiology registrar on call")]/input`)),
		chromedp.Click(chromedp.CSS("#new-form > button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#chat-view")),
		chromedp.WaitVisible(chromedp.Search(`//p[@id="role-note"][contains(., "To Cardiology registrar on call: Dr Ann")]`)),
		chromedp.WaitVisible(chromedp.Search(`//h2[@id="chat-title"][.="Cardiology registrar on call"]`)))
	shot(tab, "roles-chat")
	// The conversation reached ann, linked to the role.
	convs := nurse.C.Conversations()
	if len(convs) != 1 || convs[0].Role == nil || convs[0].Role.ID != "cardio-reg" || !slices.Contains(convs[0].Members, ann.ID) {
		t.Fatalf("nurse's conversations: %+v", convs)
	}
	id := convs[0].ID
	testnet.Eventually(t, 15*time.Second, "ann is in it", func() bool {
		c, err := ann.C.Conversation(id)
		return err == nil && c.Role != nil && *c.Role == (chat.RoleLink{ID: "cardio-reg", Name: "Cardiology registrar on call"})
	})
	step("the On call screen shows the holder, and no Take button for a nurse",
		chromedp.Click(chromedp.CSS("#back")),
		chromedp.Click(chromedp.CSS("#open-roles")),
		chromedp.WaitVisible(chromedp.Search(`//li[@data-role="cardio-reg"]//div[@class="holders"][.="On call: Dr Ann"]`)))
	if takes, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#roles .take').length`)); err != nil || takes != 0 {
		t.Fatalf("a nurse is offered Take: %d %v", takes, err)
	}
	shot(tab, "roles-screen")

	btab, bstep := browse(bob)
	bstep("bob takes the role",
		chromedp.Click(chromedp.CSS("#open-roles")),
		chromedp.WaitVisible(chromedp.Search(`//li[@data-role="cardio-reg"]//button[contains(@class,"take")]`)),
		chromedp.Click(chromedp.Search(`//li[@data-role="cardio-reg"]//button[contains(@class,"take")]`)),
		chromedp.WaitVisible(chromedp.Search(`//li[@data-role="cardio-reg"]//div[@class="holders"][.="On call: Dr Bob"]`)))
	shot(btab, "roles-taken")
	testnet.Eventually(t, 15*time.Second, "the nurse's device sees bob on call", func() bool {
		v, _ := roleIn(nurse.roles(t), "cardio-reg")
		return slices.Equal(holderNames(v), []string{"Dr Bob"})
	})
}
