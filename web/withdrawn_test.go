package web

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http/httptest"
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
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// requireAll is set by CI: a test that would skip for a missing tool fails.
func requireAll() bool { return os.Getenv("MEDMESH_REQUIRE_ALL") == "1" }

// enrolled is a device's identity and store, kept across restarts.
type enrolled struct {
	key   *identity.DeviceKey
	chain []*x509.Certificate
	trust *identity.Trust
	store ds.Batching
}

func enrol(t *testing.T, ca *identity.CA, name, staffID string) *enrolled {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := identity.CreateCSR(k, identity.Details{Name: name, StaffID: staffID})
	r, _ := identity.ParseCSR(csr)
	cert, err := ca.Sign(r, identity.SignOptions{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := identity.ParseCertificates(ca.Chain(cert))
	trust, _ := identity.NewTrust([]*x509.Certificate{ca.Cert})
	return &enrolled{key: k, chain: chain, trust: trust, store: dssync.MutexWrap(ds.NewMapDatastore())}
}

// clone copies the device's store, as a backup restored onto a second
// phone would.
func (e *enrolled) clone(t *testing.T) *enrolled {
	t.Helper()
	res, err := e.store.Query(context.Background(), query.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	c := *e
	c.store = dssync.MutexWrap(ds.NewMapDatastore())
	for _, en := range all {
		c.store.Put(context.Background(), ds.NewKey(en.Key), en.Value)
	}
	return &c
}

// device is a running node and mesh service on loopback.
type device struct {
	n      *node.Node
	s      *mesh.Service
	closed bool
}

func (d *device) close() {
	if !d.closed {
		d.closed = true
		d.s.Close()
		d.n.Close()
	}
}

func (d *device) info() peer.AddrInfo { return peer.AddrInfo{ID: d.n.ID(), Addrs: d.n.Host().Addrs()} }

func startDevice(t *testing.T, e *enrolled, boot ...*device) *device {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cfg := node.Config{Key: e.key, Chain: e.chain, Trust: e.trust, Store: e.store, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: log}
	for _, b := range boot {
		cfg.Bootstrap = append(cfg.Bootstrap, b.info())
	}
	n, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := mesh.New(mesh.Config{Node: n, Device: &chat.Device{Key: e.key.Identity, ID: e.key.PeerID(), Prekeys: n.Prekeys(), CertKEM: e.key.KEM},
		Store: e.store, Logger: log, SyncEvery: time.Second})
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	d := &device{n: n, s: s}
	t.Cleanup(d.close)
	return d
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

func sendText(t *testing.T, d *device, id chat.ConversationID, text string) crdt.OpID {
	t.Helper()
	op, err := d.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.Send(text, chat.SendOptions{}) })
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// getJSON GETs path from the API with the token and decodes the answer.
func getJSON(t *testing.T, s *Server, path string, v any) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer tok")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, w.Body)
	}
}

func apiOf(d *device, opts ...Option) *Server {
	return New(d.n, "tok", slog.New(slog.DiscardHandler), append([]Option{WithConversations(d.s, d.n)}, opts...)...)
}

// apiMessage is a message entry as a client decodes it: raw fields, so a
// missing or renamed one shows.
type apiMessage map[string]any

func messages(t *testing.T, s *Server, id chat.ConversationID) []apiMessage {
	t.Helper()
	var out []apiMessage
	getJSON(t, s, "/api/v1/conversations/"+id.String()+"/messages", &out)
	return out
}

func summary(t *testing.T, s *Server, id chat.ConversationID) map[string]any {
	t.Helper()
	var list []map[string]any
	getJSON(t, s, "/api/v1/conversations", &list)
	for _, c := range list {
		if c["id"] == id.String() {
			return c
		}
	}
	t.Fatalf("conversation %s not listed", id)
	return nil
}

func find(msgs []apiMessage, id crdt.OpID) apiMessage {
	for _, m := range msgs {
		if m["id"] == id.String() {
			return m
		}
	}
	return nil
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
	ca, err := identity.NewRootCA("General Hospital", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := startDevice(t, enrol(t, ca, "Dr Asha", "asha"))
	b := startDevice(t, enrol(t, ca, "Dr Bola", "bola"), a)
	waitFor(t, 10*time.Second, "a knows b", func() bool { _, err := a.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	id, err := a.s.Create("Ward 7", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	before := sendText(t, a, id, "handover at 8")
	api := apiOf(b)
	waitFor(t, 10*time.Second, "b joined and read a's message", func() bool {
		msgs, err := b.s.Messages(id)
		return err == nil && len(msgs) == 1
	})

	a.n.SetOffline(true)
	waitFor(t, 10*time.Second, "a and b apart", func() bool {
		return b.n.Host().Network().Connectedness(a.n.ID()) != network.Connected
	})
	m := sendText(t, b, id, "bed 4: 10 mg morphine given")
	if got := find(messages(t, api, id), m); got == nil || got["text"] != "bed 4: 10 mg morphine given" || got["withdrawn"] != nil {
		t.Fatalf("before the removal arrives: %v", got)
	}
	if _, err := a.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.Remove(b.n.ID()) }); err != nil {
		t.Fatal(err)
	}
	a.n.SetOffline(false)
	waitFor(t, 20*time.Second, "b hears of its removal", func() bool {
		got := find(messages(t, api, id), m)
		return got != nil && got["withdrawn"] != nil
	})
	msgs := messages(t, api, id)
	if len(msgs) != 2 {
		t.Fatalf("%d messages on b, want 2 (nothing disappears): %v", len(msgs), msgs)
	}
	checkWithdrawn(t, find(msgs, m), b.n.ID(), chat.ErrRemoved, "")
	if st, _ := find(msgs, m)["state"].(string); !slices.Contains([]string{chat.StateQueued, chat.StateHeld, chat.StateDelivered, chat.StateRead, chat.StateAcknowledged}, st) {
		t.Fatalf("state %q", st)
	}
	if got := find(msgs, before); got["text"] != "handover at 8" || got["withdrawn"] != nil {
		t.Fatalf("standing message: %v", got)
	}
	sum := summary(t, api, id)
	if sum["last"] != "handover at 8" || sum["queued"] != float64(0) {
		t.Fatalf("summary counts the withdrawn message: %v", sum)
	}
	if _, ok := sum["flags"]; ok {
		t.Fatalf("flags without misbehaviour: %v", sum)
	}
	// The admin never showed it: once it holds the op, it lists it not at
	// all (void on arrival, nothing withdrawn).
	waitFor(t, 10*time.Second, "a holds b's op", func() bool {
		held := false
		a.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) {
			held = slices.Contains(r.IDs(), m)
			return nil, crdt.OpID{}, nil
		})
		return held
	})
	if got := find(messages(t, apiOf(a), id), m); got != nil {
		t.Fatalf("the admin lists a message it never showed: %v", got)
	}
}

func textsOn(d *device, id chat.ConversationID) []string {
	msgs, _ := d.s.Messages(id)
	var out []string
	for _, m := range msgs {
		out = append(out, m.Text)
	}
	return out
}

// equivocated builds the equivocation case for real: a member's phone is
// restored from a backup onto a second phone, and both send under the same
// message key — "10 mg" from the first, which the admin shows, then
// "100 mg" from the clone. The admin's device withdraws "10 mg" and flags
// the member. It returns the admin's device, the member's ID, the
// conversation and the withdrawn message.
func equivocated(t *testing.T) (*device, peer.ID, chat.ConversationID, crdt.OpID) {
	t.Helper()
	ca, err := identity.NewRootCA("General Hospital", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := startDevice(t, enrol(t, ca, "Dr Asha", "asha"))
	be := enrol(t, ca, "Dr Bola", "bola")
	b := startDevice(t, be, a)
	waitFor(t, 10*time.Second, "a knows b", func() bool { _, err := a.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	id, err := a.s.Create("Ward 7", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, a, id, "handover at 8")
	waitFor(t, 10*time.Second, "b joined", func() bool { return len(textsOn(b, id)) == 1 })
	b.close()
	backup := be.clone(t)

	b = startDevice(t, be, a)
	m := sendText(t, b, id, "bed 4: 10 mg morphine given")
	waitFor(t, 15*time.Second, "a shows 10 mg", func() bool { return len(textsOn(a, id)) == 2 })
	b.close()

	twin := startDevice(t, backup) // alone: it sends before it hears of "10 mg"
	sendText(t, twin, id, "bed 4: 100 mg morphine given")
	if err := twin.n.Host().Connect(context.Background(), a.info()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a flags the member", func() bool {
		for _, s := range a.s.Conversations() {
			if s.ID == id.String() && s.Flags[b.n.ID().String()] != "" {
				return true
			}
		}
		return false
	})
	twin.close()
	return a, b.n.ID(), id, m
}

// TestWithdrawnEquivocationAndFlags: on the admin's device the message it
// had shown stays listed, withdrawn with the equivocation reason and its
// state as computed ("delivered" for a recipient); the conversation
// carries the flag; the withdrawn message is neither unread nor the last
// text.
func TestWithdrawnEquivocationAndFlags(t *testing.T) {
	a, member, id, m := equivocated(t)
	api := apiOf(a)
	msgs := messages(t, api, id)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want the standing one and the withdrawn one: %v", len(msgs), msgs)
	}
	checkWithdrawn(t, find(msgs, m), member, chat.ErrEquivocation, chat.StateDelivered)
	sum := summary(t, api, id)
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
	a, _, _, _ := equivocated(t)
	srv := httptest.NewServer(apiOf(a, WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour)))
	t.Cleanup(srv.Close)

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
