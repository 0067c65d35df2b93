package web

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/testnet"
)

// clone copies a device's identity and store, as a backup restored onto a
// second phone would.
func clone(t *testing.T, id *testnet.Identity) *testnet.Identity {
	t.Helper()
	res, err := id.Store.Query(context.Background(), query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	c := *id
	c.Store = dssync.MutexWrap(ds.NewMapDatastore())
	for _, en := range all {
		if err := c.Store.Put(context.Background(), ds.NewKey(en.Key), en.Value); err != nil {
			t.Fatal(err)
		}
	}
	return &c
}

// holds reports whether p holds op (applied or not) in conversation id
// created by creator, as the mesh asks it.
func holds(p *testnet.Peer, id chat.ConversationID, creator peer.ID, op crdt.OpID) bool {
	return slices.Contains(p.C.IDs(chat.TagOf(id, creator)), op)
}

// checkWithdrawn: the entry keeps the contract's fields (id, sender, time,
// state, urgent, text — empty now) and says why it was withdrawn.
func checkWithdrawn(t *testing.T, m apiMessage, sender peer.ID, reason error, state string) {
	t.Helper()
	for _, f := range []string{"id", "sender", "text", "time", "state", "urgent"} {
		if _, ok := m[f]; !ok {
			t.Fatalf("withdrawn entry lacks %q: %v", f, m)
		}
	}
	if m["sender"] != sender.String() || m["text"] != "" || m["photo"] != nil {
		t.Fatalf("withdrawn entry keeps content or lost its sender: %v", m)
	}
	if why, _ := m["withdrawn"].(string); !strings.Contains(why, reason.Error()) {
		t.Fatalf("withdrawn %q, want the reason %q", why, reason)
	}
	if state != "" && m["state"] != state {
		t.Fatalf("state %v, want %s as computed", m["state"], state)
	}
}

// TestWithdrawnRemovedSender: an admin, offline, removes a member whose
// concurrent message the member's own device had already shown. Once they
// meet, the member's API keeps the message in place, without its text,
// withdrawn with the reason; it is no longer the conversation's last text
// nor waiting to be sent. Standing messages carry no "withdrawn" field.
func TestWithdrawnRemovedSender(t *testing.T) {
	ca := testnet.NewCA(t)
	a := start(t, ca, ca.Enrol(t, "Dr Asha"))
	b := start(t, ca, ca.Enrol(t, "Dr Bola"), a.Peer)
	testnet.Knows(t, a.Peer, b.Peer)
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	before := testnet.Send(t, a.Peer, id, "handover at 8")
	testnet.Eventually(t, 10*time.Second, "b joined and read a's message", func() bool {
		return len(testnet.Texts(b.Peer, id)) == 1
	})

	a.N.SetOffline(true)
	testnet.Eventually(t, 10*time.Second, "a and b apart", func() bool {
		return b.N.Host().Network().Connectedness(a.ID) != network.Connected
	})
	m := testnet.Send(t, b.Peer, id, "bed 4: 10 mg morphine given")
	if got := b.message(t, id, m.String()); got == nil || got["text"] != "bed 4: 10 mg morphine given" || got["withdrawn"] != nil {
		t.Fatalf("before the removal arrives: %v", got)
	}
	if err := a.C.Remove(id, b.ID); err != nil {
		t.Fatal(err)
	}
	a.N.SetOffline(false)
	testnet.Eventually(t, 20*time.Second, "b hears of its removal", func() bool {
		got := b.message(t, id, m.String())
		return got != nil && got["withdrawn"] != nil
	})
	msgs := b.messages(t, id)
	if len(msgs) != 2 {
		t.Fatalf("%d messages on b, want 2 (nothing disappears): %v", len(msgs), msgs)
	}
	checkWithdrawn(t, find(msgs, m.String()), b.ID, chat.ErrRemoved, "")
	if st, _ := find(msgs, m.String())["state"].(string); !slices.Contains([]string{chat.StateQueued, chat.StateHeld, chat.StateDelivered, chat.StateRead, chat.StateAcknowledged}, st) {
		t.Fatalf("state %q", st)
	}
	if got := find(msgs, before.String()); got["text"] != "handover at 8" || got["withdrawn"] != nil {
		t.Fatalf("standing message: %v", got)
	}
	sum := b.summary(t, id)
	if sum["last"] != "handover at 8" || sum["queued"] != float64(0) {
		t.Fatalf("summary counts the withdrawn message: %v", sum)
	}
	if _, ok := sum["flags"]; ok {
		t.Fatalf("flags without misbehaviour: %v", sum)
	}
	// The admin never showed it: once it holds the op, it lists it not at
	// all (void on arrival, nothing withdrawn).
	testnet.Eventually(t, 10*time.Second, "a holds b's op", func() bool { return holds(a.Peer, id, a.ID, m) })
	if got := a.message(t, id, m.String()); got != nil {
		t.Fatalf("the admin lists a message it never showed: %v", got)
	}
}

// equivocated builds the equivocation case for real: a member's phone is
// restored from a backup onto a second phone, and both send under the same
// message key — "10 mg" from the first, which the admin shows, then
// "100 mg" from the clone. The admin's device withdraws "10 mg" and flags
// the member. It returns the admin's device, the member's ID, the
// conversation and the withdrawn message.
func equivocated(t *testing.T, opts ...Option) (*dev, peer.ID, chat.ConversationID, crdt.OpID) {
	t.Helper()
	ca := testnet.NewCA(t)
	a := serve(t, testnet.Start(t, ca, ca.Enrol(t, "Dr Asha")), opts...)
	be := ca.Enrol(t, "Dr Bola")
	b := testnet.Start(t, ca, be, testnet.Boot(a.Peer))
	testnet.Knows(t, a.Peer, b)
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a.Peer, id, "handover at 8")
	testnet.Eventually(t, 10*time.Second, "b joined", func() bool { return len(testnet.Texts(b, id)) == 1 })
	b.Stop()
	backup := clone(t, be)

	b = testnet.Start(t, ca, be, testnet.Boot(a.Peer))
	m := testnet.Send(t, b, id, "bed 4: 10 mg morphine given")
	testnet.Eventually(t, 15*time.Second, "a shows 10 mg", func() bool { return len(testnet.Texts(a.Peer, id)) == 2 })
	b.Stop()

	twin := testnet.Start(t, ca, backup) // alone: it sends before it hears of "10 mg"
	testnet.Send(t, twin, id, "bed 4: 100 mg morphine given")
	if err := twin.N.Host().Connect(context.Background(), peer.AddrInfo{ID: a.ID, Addrs: a.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 20*time.Second, "a flags the member", func() bool {
		for _, s := range a.C.Conversations() {
			if s.ID == id && s.Flags[b.ID] != "" {
				return true
			}
		}
		return false
	})
	twin.Stop()
	return a, b.ID, id, m
}

// TestWithdrawnEquivocationAndFlags: on the admin's device the message it
// had shown stays listed, withdrawn with the equivocation reason and its
// state as computed ("delivered" for a recipient); the conversation
// carries the flag; the withdrawn message is neither unread nor the last
// text.
func TestWithdrawnEquivocationAndFlags(t *testing.T) {
	a, member, id, m := equivocated(t)
	msgs := a.messages(t, id)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want the standing one and the withdrawn one: %v", len(msgs), msgs)
	}
	checkWithdrawn(t, find(msgs, m.String()), member, chat.ErrEquivocation, chat.StateDelivered)
	sum := a.summary(t, id)
	flags, _ := sum["flags"].(map[string]any)
	if why, _ := flags[member.String()].(string); !strings.Contains(why, chat.ErrEquivocation.Error()) || len(flags) != 1 {
		t.Fatalf("flags %v", sum["flags"])
	}
	if sum["unread"] != float64(0) || sum["urgent"] != float64(0) || sum["last"] != "handover at 8" {
		t.Fatalf("summary counts the withdrawn message: %v", sum)
	}
}

// TestWithdrawnReasonsInApp: the app's plain-English table knows every
// reason the chat core gives, word for word.
func TestWithdrawnReasonsInApp(t *testing.T) {
	js, err := fs.ReadFile(appFiles, "app/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []error{chat.ErrRemoved, chat.ErrEquivocation, chat.ErrRevokedSender} {
		if !strings.Contains(string(js), e.Error()) {
			t.Errorf("app.js has no plain words for %q", e)
		}
	}
}

// TestWithdrawnInBrowser: the admin's app, in headless Chromium, shows the
// withdrawn message in place as a notice in plain words, and a warning
// naming the flagged member from the directory.
func TestWithdrawnInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	a, _, _, _ := equivocated(t, WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour))
	srv := a.srv

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(412, 915))
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
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
	step("the list marks the conversation and shows the standing last message",
		chromedp.WaitVisible(chromedp.CSS("#conversations .badge.warn")),
		chromedp.WaitVisible(chromedp.Search(`//ul[@id="conversations"]//span[@class="last"][.="handover at 8"]`)))
	step("open the chat", chromedp.Click(chromedp.CSS("#conversations li button")))
	step("the withdrawn message in place, in plain words",
		chromedp.WaitVisible(chromedp.Search(`//li[contains(@class,"withdrawn")][.//div[@class="who"][.="Dr Bola"]]`+
			`//div[@class="notice"][.="Message withdrawn — the sender's device sent conflicting versions of this message"]`)))
	step("the warning names the member",
		chromedp.WaitVisible(chromedp.Search(`//div[@id="flags"]/p[contains(., "Dr Bola")][contains(., "conflicting versions")]`)))
	body, err := chromedp.Run(tab, chromedp.TextContent(chromedp.CSS("#messages")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(body, "10 mg") || strings.Contains(body, "100 mg") {
		t.Fatalf("withdrawn text shown: %q", body)
	}
	if b, err := chromedp.Run(tab, chromedp.FullScreenshot(100)); err == nil {
		os.MkdirAll("testdata/out", 0o755)
		p, _ := filepath.Abs(filepath.Join("testdata/out", "withdrawn.png"))
		os.WriteFile(p, b, 0o644)
		t.Logf("screenshot: %s", p)
	}
}
