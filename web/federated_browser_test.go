package web

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestFederatedInBrowser: in asha's app, "New chat" lists bea, a device
// of a federated trust, under "Other trusts" with her trust; ticking her
// starts a chat she joins. No screen overflows a 390-pixel-wide phone.
func TestFederatedInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	a, b := testnet.NewCA(t), testnet.NewCA(t)
	app := WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour)
	asha := serve(t, testnet.Start(t, a, a.Enrol(t, "Dr Asha")), app)
	bea := serve(t, testnet.Start(t, b, b.Enrol(t, "Dr Bea")))
	testnet.Federate(t, a.FederationRecord(t, b, identity.Policy{}, 1, false), asha.Peer)
	testnet.Federate(t, b.FederationRecord(t, a, identity.Policy{Invites: true}, 1, false), bea.Peer) // trust B lets our staff invite its devices
	testnet.Connect(t, bea.Peer, asha.Peer)
	testnet.Federated(t, asha.Peer, bea.Peer)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(390, 844))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	tab, c1 := chromedp.NewContext(actx)
	t.Cleanup(c1)
	tab, c2 := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(c2)
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("unlock",
		chromedp.Navigate(asha.srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
	step("New chat lists bea under Other trusts",
		chromedp.Click(chromedp.CSS("#new-chat")),
		chromedp.WaitVisible(chromedp.Search(`//h3[@id="federated-head"][.="Other trusts"]`)),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="federated"]//label[contains(., "Dr Bea · General Hospital")]`)))
	overflow, err := chromedp.Run(tab, chromedp.Evaluate[[]string](overflowJS))
	if err != nil {
		t.Fatal(err)
	}
	if len(overflow) > 0 {
		t.Errorf("New chat overflows horizontally at 390 px: %v", overflow)
	}
	step("tick bea and start",
		chromedp.SendKeys(chromedp.CSS("#title"), "Joint clinic"),
		chromedp.Click(chromedp.Search(`//ul[@id="federated"]//label[contains(., "Dr Bea")]/input`)),
		chromedp.Click(chromedp.CSS("#new-form > button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#chat-view")))
	step("the group lists bea with her trust",
		chromedp.Click(chromedp.CSS("#info")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="members"]//span[starts-with(., "Dr Bea · General Hospital [")]`)))
	convs := asha.C.Conversations()
	if len(convs) != 1 || !slices.Contains(convs[0].Members, bea.ID) {
		t.Fatalf("asha's conversations: %+v", convs)
	}
	testnet.Eventually(t, within, "bea joins", func() bool { return testnet.Joined(bea.Peer, convs[0].ID, 2) })
}
