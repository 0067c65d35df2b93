package mesh

import (
	"bytes"
	"context"
	"crypto/x509"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
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
	before := carriedCount(x)
	cc = start(t, c, cdev, false, x)
	eventually(t, 20*time.Second, "anchor carries it to c", func() bool { return slices.Contains(textsOf(t, cc, id), "via-anchor-only") })
	// C's automatic receipt travels back through the anchor while A is away.
	eventually(t, 10*time.Second, "c's receipt applied on c", func() bool {
		msgs, _ := cc.s.Messages(id)
		return len(msgs) > 0 && msgs[len(msgs)-1].State == chat.StateDelivered
	})
	eventually(t, 10*time.Second, "anchor holds everything c holds", func() bool {
		held := map[crdt.OpID]bool{}
		for _, op := range x.s.idsOf(chat.TagOf(id, a.n.ID())) {
			held[op] = true
		}
		for _, op := range cc.s.idsOf(chat.TagOf(id, a.n.ID())) {
			if !held[op] {
				return false
			}
		}
		return carriedCount(x) > before
	})
	cc.stop()
	a = start(t, c, a.dev, false, x)
	eventually(t, 20*time.Second, "a sees delivered", func() bool {
		msgs, _ := a.s.Messages(id)
		for _, m := range msgs {
			if m.ID == op.String() {
				return m.State == chat.StateDelivered
			}
		}
		return false
	})
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
		t.Cleanup(func() { s.Close() })
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
	b2 := start(t, c, bdev, false, a)
	if got := textsOf(t, b2, id); len(got) != 5 {
		t.Fatalf("after restart b has %d messages", len(got))
	}
	send(t, a, id, "PLAINTEXT-MARKER-41c7")
	eventually(t, 10*time.Second, "marker arrives", func() bool { return slices.Contains(textsOf(t, b2, id), "PLAINTEXT-MARKER-41c7") })
	b2.stop()
	bdev.store.(*store.Store).Close()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if raw, _ := os.ReadFile(p); bytes.Contains(raw, []byte("PLAINTEXT-MARKER")) {
				t.Errorf("plaintext at rest in %s", p)
			}
		}
		return nil
	})
}

// TestCatchUpIdenticalState: C is offline while A and B write 50 messages
// with edits, deletes and reactions; when C returns, all three hold the
// identical conversation within 5 s.
func TestCatchUpIdenticalState(t *testing.T) {
	c := newCA(t)
	a := start(t, c, c.enrol(t, "a"), false)
	b := start(t, c, c.enrol(t, "b"), false, a)
	cdev := c.enrol(t, "c")
	cc := start(t, c, cdev, false, a)
	for _, p := range []*peerNode{b, cc} {
		eventually(t, 10*time.Second, "a knows b and c", func() bool { _, err := a.n.Recipient(p.n.ID(), time.Now()); return err == nil })
	}
	id, err := a.s.Create("t", []peer.ID{b.n.ID(), cc.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	joined := func(p *peerNode) bool {
		for _, sum := range p.s.Conversations() {
			if sum.ID == id.String() && len(sum.Members) == 3 {
				return true
			}
		}
		return false
	}
	eventually(t, 10*time.Second, "b and c joined", func() bool { return joined(b) && joined(cc) })
	cc.stop()
	for i := range 50 {
		p := []*peerNode{a, b}[i%2]
		op := send(t, p, id, "msg")
		switch i % 5 {
		case 1:
			p.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.Edit(op, "edited") })
		case 2:
			p.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.Delete(op) })
		case 3:
			q := []*peerNode{b, a}[i%2]
			eventually(t, 5*time.Second, "seen", func() bool { return len(textsOf(t, q, id)) > i })
			q.s.Do(id, func(r *chat.Replica) ([][]byte, crdt.OpID, error) { return r.React(op, "👍") })
		}
	}
	cc = start(t, c, cdev, false, a, b)
	same := func() bool {
		ma, _ := a.s.Messages(id)
		mb, _ := b.s.Messages(id)
		mc, _ := cc.s.Messages(id)
		strip := func(ms []MessageView) []MessageView {
			for i := range ms {
				ms[i].State, ms[i].Recipient = "", nil
			}
			return ms
		}
		return len(ma) == 50 && reflect.DeepEqual(strip(ma), strip(mb)) && reflect.DeepEqual(strip(ma), strip(mc))
	}
	eventually(t, 5*time.Second, "identical state on A, B and C", same)
}

// TestSyncGarbage: a peer that sends garbage on the sync protocol is cut
// off; the service keeps serving everyone else.
func TestSyncGarbage(t *testing.T) {
	c := newCA(t)
	a := start(t, c, c.enrol(t, "a"), false)
	b := start(t, c, c.enrol(t, "b"), false, a)
	eventually(t, 10*time.Second, "admitted", func() bool { return a.n.IsAdmitted(b.n.ID()) })
	for _, junk := range [][]byte{[]byte("\x05hello"), {0xff, 0xff, 0xff, 0xff, 0x0f}, {}} {
		st, err := b.n.Host().NewStream(context.Background(), a.n.ID(), ProtoSync)
		if err != nil {
			t.Fatal(err)
		}
		st.Write(junk)
		st.CloseWrite()
		buf := make([]byte, 1)
		st.SetReadDeadline(time.Now().Add(frameTimeout + 2*time.Second))
		if _, err := st.Read(buf); err == nil {
			t.Fatal("garbage answered")
		}
		st.Close()
	}
	eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	id, err := a.s.Create("t", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	send(t, a, id, "still working")
	eventually(t, 10*time.Second, "b reads", func() bool { return slices.Contains(textsOf(t, b, id), "still working") })
}

func carriedCount(p *peerNode) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	n := 0
	for _, cr := range p.s.carried {
		n += len(cr.ops)
	}
	return n
}

// TestAnchorQuota: an anchor at its quota keeps working, dropping the
// oldest envelopes first.
func TestAnchorQuota(t *testing.T) {
	c := newCA(t)
	xdev := c.enrol(t, "x")
	trustX := start(t, c, xdev, true)
	trustX.s.mu.Lock()
	trustX.s.cfg.AnchorQuota = 20 << 10 // about fifteen 1 KiB messages
	trustX.s.mu.Unlock()
	a := start(t, c, c.enrol(t, "a"), false, trustX)
	b := start(t, c, c.enrol(t, "b"), false, trustX)
	eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	id, err := a.s.Create("t", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var last crdt.OpID
	for range 40 {
		last = send(t, a, id, kib)
	}
	tag := chat.TagOf(id, a.n.ID())
	eventually(t, 10*time.Second, "anchor holds the newest message", func() bool {
		return slices.Contains(trustX.s.idsOf(tag), last)
	})
	trustX.s.mu.Lock()
	var held int64
	for _, cr := range trustX.s.carried {
		for _, h := range cr.ops {
			held += int64(h.size)
		}
	}
	total := trustX.s.carriedBytes // under mu: sync may be carrying more
	trustX.s.mu.Unlock()
	if held > trustX.s.cfg.AnchorQuota {
		t.Fatalf("anchor holds %d bytes over its quota of %d", held, trustX.s.cfg.AnchorQuota)
	}
	if held != total {
		t.Fatalf("anchor's running total %d, index holds %d", total, held)
	}
	eventually(t, 10*time.Second, "b still gets everything", func() bool { return len(textsOf(t, b, id)) == 40 })
}

// TestIdleRoundsSkipSyncedPeers: once two devices have synced and nothing
// changed, a round leaves the peer alone (an idle mesh stays quiet); a
// local change, or the periodic full round, makes it due again.
func TestIdleRoundsSkipSyncedPeers(t *testing.T) {
	c := newCA(t)
	a := start(t, c, c.enrol(t, "a"), false)
	b := start(t, c, c.enrol(t, "b"), false, a)
	eventually(t, 10*time.Second, "b learns a's prekey", func() bool {
		_, err := b.n.Recipient(a.n.ID(), time.Now())
		return err == nil
	})
	id, err := b.s.Create("ward", []peer.ID{a.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a joined", func() bool { _, err := a.s.Messages(id); return err == nil })
	due := func(full bool) bool { return slices.Contains(b.s.duePeers(full), a.n.ID()) }
	eventually(t, 10*time.Second, "b synced with a since its last change", func() bool { b.s.syncWith(a.n.ID()); return !due(false) })
	if !due(true) {
		t.Fatal("a full round skipped a peer")
	}
	send(t, b, id, "bed 4 needs a review")
	if !due(false) {
		t.Fatal("a local change did not make the peer due")
	}
}

// TestAnchorTTL: carried envelopes past their TTL go, oldest first, with
// the next one kept; the running summary follows what is held.
func TestAnchorTTL(t *testing.T) {
	s := &Service{cfg: Config{AnchorQuota: 1 << 20, AnchorTTL: time.Hour, Store: ds.NewMapDatastore()},
		log: slog.New(slog.DiscardHandler), ctx: t.Context()}
	c := &carrier{tag: []byte("t"), ops: map[crdt.OpID]held{}}
	s.carried = map[string]*carrier{"t": c}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 10 {
		s.holdLocked(c, crdt.OpID{byte(i)}, held{at: t0.Add(time.Duration(i) * 10 * time.Minute), size: 100})
	}
	s.enforceLocked(t0.Add(time.Hour)) // nothing older than an hour yet
	if len(c.ops) != 10 || s.carriedBytes != 1000 {
		t.Fatalf("within TTL: %d held, %d bytes", len(c.ops), s.carriedBytes)
	}
	s.enforceLocked(t0.Add(time.Hour + 25*time.Minute)) // the first three are past
	if len(c.ops) != 7 || s.carriedBytes != 700 || !s.oldestCarried.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("after TTL: %d held, %d bytes, oldest %v", len(c.ops), s.carriedBytes, s.oldestCarried.Sub(t0))
	}
	if _, ok := c.ops[crdt.OpID{2}]; ok {
		t.Fatal("an envelope past its TTL is still held")
	}
	s.cfg.AnchorQuota = 250
	s.enforceLocked(t0.Add(time.Hour + 25*time.Minute))
	if len(c.ops) != 2 || s.carriedBytes != 200 {
		t.Fatalf("over quota: %d held, %d bytes", len(c.ops), s.carriedBytes)
	}
}
