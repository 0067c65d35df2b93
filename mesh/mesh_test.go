package mesh_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/store"
)

// start runs a device on loopback bootstrapped to boot (an anchor if
// anchor is set).
func start(t testing.TB, c *testnet.CA, d *testnet.Identity, anchor bool, boot ...*testnet.Peer) *testnet.Peer {
	t.Helper()
	opts := []device.Option{testnet.Boot(boot...)}
	if anchor {
		opts = append(opts, device.WithAnchor(0, 0))
	}
	return testnet.Start(t, c, d, opts...)
}

func TestGroupConversation(t *testing.T) {
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "a"), false)
	b := start(t, c, c.Enrol(t, "b"), false, a)
	testnet.Eventually(t, 10*time.Second, "admitted", func() bool { return a.N.IsAdmitted(b.N.ID()) && b.N.IsAdmitted(a.N.ID()) })
	id, err := a.C.Create("Ward 7", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "hello")
	testnet.Eventually(t, 10*time.Second, "b reads hello", func() bool { return slices.Equal(testnet.Texts(b, id), []string{"hello"}) })
}

func TestOfflineCatchUpAndAnchor(t *testing.T) {
	c := testnet.NewCA(t)
	x := start(t, c, c.Enrol(t, "x", mesh.RoleAnchor), true)
	a := start(t, c, c.Enrol(t, "a"), false, x)
	b := start(t, c, c.Enrol(t, "b"), false, x)
	cdev := c.Enrol(t, "c")
	cc := start(t, c, cdev, false, x)
	for _, p := range []*testnet.Peer{b, cc} {
		testnet.Eventually(t, 10*time.Second, "a knows b and c", func() bool { _, err := a.N.Recipient(p.N.ID(), time.Now()); return err == nil })
	}
	id, err := a.C.Create("Ward 7", []peer.ID{b.N.ID(), cc.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "first")
	for _, p := range []*testnet.Peer{b, cc} {
		testnet.Eventually(t, 10*time.Second, "first arrives", func() bool { return slices.Contains(testnet.Texts(p, id), "first") })
	}
	cc.Stop()
	for i := range 20 {
		testnet.Send(t, a, id, "gap")
		_ = i
	}
	cc = start(t, c, cdev, false, x)
	testnet.Eventually(t, 20*time.Second, "c catches up", func() bool { return len(testnet.Texts(cc, id)) == 21 })
	cc.Stop()
	op := testnet.Send(t, a, id, "via-anchor-only")
	testnet.Eventually(t, 15*time.Second, "b gets it", func() bool { return slices.Contains(testnet.Texts(b, id), "via-anchor-only") })
	// Held: the anchor stored it, c has not got it; b's receipt is back
	// on a (b goes away next, and only its receipt says it has the message).
	testnet.Eventually(t, 15*time.Second, "held, and delivered to b", func() bool {
		msgs, _ := a.C.Messages(id)
		for _, m := range msgs {
			if m.ID == op {
				return m.State == chat.StateHeld && m.PerRecipient[b.ID] == chat.StateDelivered
			}
		}
		return false
	})
	a.Stop()
	b.Stop()
	before := x.M.CarriedCount()
	cc = start(t, c, cdev, false, x)
	testnet.Eventually(t, 20*time.Second, "anchor carries it to c", func() bool { return slices.Contains(testnet.Texts(cc, id), "via-anchor-only") })
	// C's automatic receipt travels back through the anchor while A is away.
	testnet.Eventually(t, 10*time.Second, "c's receipt applied on c", func() bool {
		msgs, _ := cc.C.Messages(id)
		return len(msgs) > 0 && msgs[len(msgs)-1].State == chat.StateDelivered
	})
	testnet.Eventually(t, 10*time.Second, "anchor holds everything c holds", func() bool {
		held := map[crdt.OpID]bool{}
		for _, op := range x.M.IDsOf(chat.TagOf(id, a.N.ID())) {
			held[op] = true
		}
		for _, op := range cc.M.IDsOf(chat.TagOf(id, a.N.ID())) {
			if !held[op] {
				return false
			}
		}
		return x.M.CarriedCount() > before
	})
	cc.Stop()
	a = start(t, c, a.Ident, false, x)
	testnet.Eventually(t, 20*time.Second, "a sees delivered", func() bool {
		msgs, _ := a.C.Messages(id)
		for _, m := range msgs {
			if m.ID == op {
				return m.State == chat.StateDelivered
			}
		}
		return false
	})
}

// TestRestartFromDisk: a device's conversations, keys and plaintexts come
// back from its encrypted store after a restart.
func TestRestartFromDisk(t *testing.T) {
	c := testnet.NewCA(t)
	dir := t.TempDir()
	openStore := func() ds.Batching {
		s, err := store.Open(dir, []byte("pass"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a := start(t, c, c.Enrol(t, "a"), false)
	bdev := c.Enrol(t, "b")
	bdev.Store = openStore()
	b := start(t, c, bdev, false, a)
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		testnet.Send(t, a, id, "m")
	}
	testnet.Eventually(t, 10*time.Second, "b has 5", func() bool { return len(testnet.Texts(b, id)) == 5 })
	b.Stop()
	bdev.Store.(*store.Store).Close()
	bdev.Store = openStore()
	b2 := start(t, c, bdev, false, a)
	if got := testnet.Texts(b2, id); len(got) != 5 {
		t.Fatalf("after restart b has %d messages", len(got))
	}
	testnet.Send(t, a, id, "PLAINTEXT-MARKER-41c7")
	testnet.Eventually(t, 10*time.Second, "marker arrives", func() bool { return slices.Contains(testnet.Texts(b2, id), "PLAINTEXT-MARKER-41c7") })
	b2.Stop()
	bdev.Store.(*store.Store).Close()
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
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "a"), false)
	b := start(t, c, c.Enrol(t, "b"), false, a)
	cdev := c.Enrol(t, "c")
	cc := start(t, c, cdev, false, a)
	for _, p := range []*testnet.Peer{b, cc} {
		testnet.Eventually(t, 10*time.Second, "a knows b and c", func() bool { _, err := a.N.Recipient(p.N.ID(), time.Now()); return err == nil })
	}
	id, err := a.C.Create("t", []peer.ID{b.N.ID(), cc.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	joined := func(p *testnet.Peer) bool {
		for _, sum := range p.C.Conversations() {
			if sum.ID == id && len(sum.Members) == 3 {
				return true
			}
		}
		return false
	}
	testnet.Eventually(t, 10*time.Second, "b and c joined", func() bool { return joined(b) && joined(cc) })
	cc.Stop()
	for i := range 50 {
		p := []*testnet.Peer{a, b}[i%2]
		op := testnet.Send(t, p, id, "msg")
		switch i % 5 {
		case 1:
			p.C.Edit(id, op, "edited")
		case 2:
			p.C.Delete(id, op)
		case 3:
			q := []*testnet.Peer{b, a}[i%2]
			testnet.Eventually(t, 5*time.Second, "seen", func() bool { return len(testnet.Texts(q, id)) > i })
			q.C.React(id, op, "👍", true)
		}
	}
	cc = start(t, c, cdev, false, a, b)
	same := func() bool {
		ma, _ := a.C.Messages(id)
		mb, _ := b.C.Messages(id)
		mc, _ := cc.C.Messages(id)
		strip := func(ms []conversations.Message) []conversations.Message {
			for i := range ms {
				ms[i].State, ms[i].PerRecipient, ms[i].Receipts = "", nil, nil
			}
			return ms
		}
		return len(ma) == 50 && reflect.DeepEqual(strip(ma), strip(mb)) && reflect.DeepEqual(strip(ma), strip(mc))
	}
	testnet.Eventually(t, 5*time.Second, "identical state on A, B and C", same)
}

// TestCutSessionsConverge: with reconciliation cut short at its round
// limit (lowered to two rounds, where a real device reaches MaxRounds only
// with tens of thousands of scattered differences), two devices that each
// wrote 300 messages while the other was away still converge: sessions
// are cut (counted), and each side fetches what it learnt before the cut.
// A session at the limit used to fail and fetch nothing, so the pair
// never converged.
func TestCutSessionsConverge(t *testing.T) {
	t.Cleanup(mesh.SetRoundLimit(2)) // first registered, last run: after the devices stop
	c := testnet.NewCA(t)
	adev, bdev := c.Enrol(t, "a"), c.Enrol(t, "b")
	a := start(t, c, adev, false)
	b := start(t, c, bdev, false, a)
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "b joined", func() bool { return len(b.C.Conversations()) == 1 })
	b.Stop()
	const n = 300
	for range n {
		testnet.Send(t, a, id, "from a")
	}
	a.Stop()
	b = start(t, c, bdev, false)
	for range n {
		testnet.Send(t, b, id, "from b")
	}
	a = start(t, c, adev, false, b)
	for _, p := range []*testnet.Peer{a, b} {
		testnet.Eventually(t, 30*time.Second, "both hold every message", func() bool { return len(testnet.Texts(p, id)) == 2*n })
	}
	if cuts := a.M.Cuts() + b.M.Cuts(); cuts == 0 {
		t.Fatal("no session was cut: the case no longer tests the cut")
	} else {
		t.Logf("%d sessions cut", cuts)
	}
}

// TestSyncGarbage: a peer that sends garbage on the sync protocol is cut
// off; the service keeps serving everyone else.
func TestSyncGarbage(t *testing.T) {
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "a"), false)
	b := start(t, c, c.Enrol(t, "b"), false, a)
	testnet.Eventually(t, 10*time.Second, "admitted", func() bool { return a.N.IsAdmitted(b.N.ID()) })
	for _, junk := range [][]byte{[]byte("\x05hello"), {0xff, 0xff, 0xff, 0xff, 0x0f}, {}} {
		st, err := b.N.Host().NewStream(context.Background(), a.N.ID(), mesh.ProtoSync)
		if err != nil {
			t.Fatal(err)
		}
		st.Write(junk)
		st.CloseWrite()
		buf := make([]byte, 1)
		st.SetReadDeadline(time.Now().Add(mesh.FrameTimeout + 2*time.Second))
		if _, err := st.Read(buf); err == nil {
			t.Fatal("garbage answered")
		}
		st.Close()
	}
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "still working")
	testnet.Eventually(t, 10*time.Second, "b reads", func() bool { return slices.Contains(testnet.Texts(b, id), "still working") })
}

// TestAnchorQuota: an anchor at its quota keeps working, dropping the
// oldest envelopes first.
func TestAnchorQuota(t *testing.T) {
	c := testnet.NewCA(t)
	xdev := c.Enrol(t, "x")
	trustX := start(t, c, xdev, true)
	const quota = 20 << 10 // about fifteen 1 KiB messages
	trustX.M.SetAnchorQuota(quota)
	a := start(t, c, c.Enrol(t, "a"), false, trustX)
	b := start(t, c, c.Enrol(t, "b"), false, trustX)
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var last crdt.OpID
	for range 40 {
		last = testnet.Send(t, a, id, kib)
	}
	tag := chat.TagOf(id, a.N.ID())
	testnet.Eventually(t, 10*time.Second, "anchor holds the newest message", func() bool {
		return slices.Contains(trustX.M.IDsOf(tag), last)
	})
	held, total := trustX.M.CarriedBytes() // one look under the lock: sync may be carrying more
	if held > quota {
		t.Fatalf("anchor holds %d bytes over its quota of %d", held, quota)
	}
	if held != total {
		t.Fatalf("anchor's running total %d, index holds %d", total, held)
	}
	testnet.Eventually(t, 10*time.Second, "b still gets everything", func() bool { return len(testnet.Texts(b, id)) == 40 })
}

// TestIdleRoundsSkipSyncedPeers: once two devices have synced and nothing
// changed, a round leaves the peer alone (an idle mesh stays quiet); a
// local change, or the periodic full round, makes it due again.
func TestIdleRoundsSkipSyncedPeers(t *testing.T) {
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "a"), false)
	b := start(t, c, c.Enrol(t, "b"), false, a)
	testnet.Eventually(t, 10*time.Second, "b learns a's prekey", func() bool {
		_, err := b.N.Recipient(a.N.ID(), time.Now())
		return err == nil
	})
	id, err := b.C.Create("ward", []peer.ID{a.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "a joined", func() bool { _, err := a.C.Messages(id); return err == nil })
	due := func(full bool) bool { return slices.Contains(b.M.DuePeers(full), a.N.ID()) }
	testnet.Eventually(t, 10*time.Second, "b synced with a since its last change", func() bool { b.M.SyncWith(a.N.ID()); return !due(false) })
	if !due(true) {
		t.Fatal("a full round skipped a peer")
	}
	testnet.Send(t, b, id, "bed 4 needs a review")
	if !due(false) {
		t.Fatal("a local change did not make the peer due")
	}
}

// TestRoundsTakeTurns: a device with more peers than a periodic round's
// fan-out syncs with a few of them, those synced longest ago first
// (TestDuePeersChoice); a sync it begins, and one a peer opened with it,
// each count as that peer's turn; a connection sync does not run with (an
// outsider's, not admitted) never takes a place. No periodic or kicked
// rounds run here (hour-long timers): only the test's syncs.
func TestRoundsTakeTurns(t *testing.T) {
	c := testnet.NewCA(t)
	quiet := device.WithTimers(time.Hour, time.Hour)
	hub := testnet.Start(t, c, c.Enrol(t, "hub"), quiet)
	var spokes []*testnet.Peer
	var ids []peer.ID
	for _, name := range []string{"s1", "s2", "s3", "s4", "s5"} {
		s := testnet.Start(t, c, c.Enrol(t, name), testnet.Boot(hub), quiet)
		spokes, ids = append(spokes, s), append(ids, s.N.ID())
	}
	testnet.Eventually(t, 10*time.Second, "the hub admits every spoke", func() bool {
		for _, p := range ids {
			if !hub.N.IsAdmitted(p) {
				return false
			}
		}
		return true
	})
	outsider, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer outsider.Close()
	if err := outsider.Connect(context.Background(), peer.AddrInfo{ID: hub.N.ID(), Addrs: hub.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		due, _ := hub.M.DueTurns(true)
		if len(due) != 3 || slices.Contains(due, outsider.ID()) {
			t.Fatalf("a round with 5 spokes due (and an outsider connected) took %v", due)
		}
		hub.M.SyncWith(due[0])
		testnet.Eventually(t, 10*time.Second, "a sync the hub began counts as the spoke's turn", func() bool {
			next, _ := hub.M.DueTurns(true)
			return !slices.Contains(next, due[0])
		})
	}
	due, _ := hub.M.DueTurns(true)
	i := slices.Index(ids, due[0])
	spokes[i].M.SyncWith(hub.N.ID())
	testnet.Eventually(t, 10*time.Second, "the hub counts the spoke's session as its turn", func() bool {
		next, _ := hub.M.DueTurns(true)
		return !slices.Contains(next, due[0])
	})
}
