package mesh

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/store"
)

type testCA struct{ ca *identity.CA }

func newCA(t testing.TB) *testCA {
	ca, err := identity.NewRootCA("General Hospital", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca}
}

type dev struct {
	key   *identity.DeviceKey
	chain []*x509.Certificate
	store ds.Batching
}

func (c *testCA) enrol(t testing.TB, name string) *dev {
	k, _ := identity.GenerateDeviceKey()
	csr, _ := identity.CreateCSR(k, identity.Details{Name: name, StaffID: name})
	r, _ := identity.ParseCSR(csr)
	cert, err := c.ca.Sign(r, identity.SignOptions{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := identity.ParseCertificates(c.ca.Chain(cert))
	return &dev{key: k, chain: chain, store: dssync.MutexWrap(ds.NewMapDatastore())}
}

type peerNode struct {
	n       *node.Node
	s       *Service
	dev     *dev
	stopped bool
}

func (p *peerNode) stop() {
	if !p.stopped {
		p.stopped = true
		p.s.Close()
		p.n.Close()
	}
}

func start(t testing.TB, c *testCA, d *dev, anchor bool, boot ...*peerNode) *peerNode {
	t.Helper()
	trust, _ := identity.NewTrust([]*x509.Certificate{c.ca.Cert})
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("MEDMESH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := node.Config{Key: d.key, Chain: d.chain, Trust: trust, Store: d.store, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: log}
	for _, b := range boot {
		cfg.Bootstrap = append(cfg.Bootstrap, peer.AddrInfo{ID: b.n.ID(), Addrs: b.n.Host().Addrs()})
	}
	n, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Node: n, Device: &chat.Device{Key: d.key.Identity, ID: d.key.PeerID(), Prekeys: n.Prekeys(), CertKEM: d.key.KEM},
		Store: d.store, Anchor: anchor, Logger: log, SyncEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := &peerNode{n: n, s: s, dev: d}
	t.Cleanup(p.stop)
	return p
}

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

func textsOf(t testing.TB, p *peerNode, id chat.ConversationID) []string {
	msgs, err := p.s.Messages(id)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.Text)
	}
	return out
}

func send(t testing.TB, p *peerNode, id chat.ConversationID, text string) crdt.OpID {
	t.Helper()
	op, err := p.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.Send(text, chat.SendOptions{}) })
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func TestGroupConversation(t *testing.T) {
	c := newCA(t)
	a := start(t, c, c.enrol(t, "a"), false)
	b := start(t, c, c.enrol(t, "b"), false, a)
	eventually(t, 10*time.Second, "admitted", func() bool { return a.n.IsAdmitted(b.n.ID()) && b.n.IsAdmitted(a.n.ID()) })
	id, err := a.s.Create("Ward 7", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	send(t, a, id, "hello")
	eventually(t, 10*time.Second, "b reads hello", func() bool { return slices.Equal(textsOf(t, b, id), []string{"hello"}) })
}

func TestOfflineCatchUpAndAnchor(t *testing.T) {
	c := newCA(t)
	x := start(t, c, c.enrol(t, "x"), true)
	a := start(t, c, c.enrol(t, "a"), false, x)
	b := start(t, c, c.enrol(t, "b"), false, x)
	cdev := c.enrol(t, "c")
	cc := start(t, c, cdev, false, x)
	for _, p := range []*peerNode{b, cc} {
		eventually(t, 10*time.Second, "a knows b and c", func() bool { _, err := a.n.Recipient(p.n.ID(), time.Now()); return err == nil })
	}
	id, err := a.s.Create("Ward 7", []peer.ID{b.n.ID(), cc.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	send(t, a, id, "first")
	for _, p := range []*peerNode{b, cc} {
		eventually(t, 10*time.Second, "first arrives", func() bool { return slices.Contains(textsOf(t, p, id), "first") })
	}
	cc.stop()
	for i := range 20 {
		send(t, a, id, "gap")
		_ = i
	}
	cc = start(t, c, cdev, false, x)
	eventually(t, 20*time.Second, "c catches up", func() bool { return len(textsOf(t, cc, id)) == 21 })
	cc.stop()
	op := send(t, a, id, "via-anchor-only")
	eventually(t, 15*time.Second, "b gets it", func() bool { return slices.Contains(textsOf(t, b, id), "via-anchor-only") })
	eventually(t, 15*time.Second, "held", func() bool {
		msgs, _ := a.s.Messages(id)
		for _, m := range msgs {
			if m.ID == op.String() {
				return m.State == chat.StateHeld
			}
		}
		return false
	})
	a.stop()
	b.stop()
	cc = start(t, c, cdev, false, x)
	eventually(t, 20*time.Second, "anchor carries it to c", func() bool { return slices.Contains(textsOf(t, cc, id), "via-anchor-only") })
}

// TestRestartFromDisk: a device's conversations, keys and plaintexts come
// back from its encrypted store after a restart.
func TestRestartFromDisk(t *testing.T) {
	c := newCA(t)
	dir := t.TempDir()
	openStore := func() ds.Batching {
		s, err := store.Open(dir, []byte("pass"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := start(t, c, c.enrol(t, "a"), false)
	bdev := c.enrol(t, "b")
	bdev.store = openStore()
	b := start(t, c, bdev, false, a)
	eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	id, err := a.s.Create("t", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		send(t, a, id, "m")
	}
	eventually(t, 10*time.Second, "b has 5", func() bool { return len(textsOf(t, b, id)) == 5 })
	b.stop()
	bdev.store.(*store.Store).Close()
	bdev.store = openStore()
	b2 := start(t, c, bdev, false)
	if got := textsOf(t, b2, id); len(got) != 5 {
		t.Fatalf("after restart b has %d messages", len(got))
	}
}
