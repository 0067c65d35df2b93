package conversations

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/mesh"
)

// published collects what a service publishes; bareKicks counts Publish
// calls (which ask for a sync round) that carried no welcome.
type published struct {
	mu        sync.Mutex
	envs      [][]byte
	bareKicks int
}

func (p *published) Publish(_ []byte, envs, welcomes [][]byte, _ []peer.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.envs = append(p.envs, envs...)
	if len(welcomes) == 0 {
		p.bareKicks++
	}
}

func (p *published) Gossip(_ []byte, envs, _ [][]byte, _ []peer.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.envs = append(p.envs, envs...)
}

func (p *published) take() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.envs
	p.envs = nil
	return out
}

// burst has alice send k messages to bob's service, one gossip delivery
// every gap, then lets every receipt window end. It returns the envelopes
// bob published (his receipts), alice's replica and the messages.
func burst(t *testing.T, window time.Duration, k int, gap time.Duration) ([][]byte, *chat.Replica, []crdt.OpID, *Service) {
	t.Helper()
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore()), ReceiptWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	pub := &published{}
	s.Attach(pub)
	ra, out, err := chat.Create(alice.dev, dir, "ward", []peer.ID{bob.id})
	if err != nil {
		t.Fatal(err)
	}
	var envs []mesh.Checked
	for _, raw := range out.Envelopes {
		envs = append(envs, rtChecked(t, raw))
	}
	if !s.Deliver(ra.Tag(), envs, alice.id) {
		t.Fatal("bob did not join")
	}
	var msgs []crdt.OpID
	for range k {
		o, err := ra.Send("bed 4", chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, o.ID)
		s.Deliver(ra.Tag(), []mesh.Checked{rtChecked(t, o.Envelopes[0])}, alice.id)
		time.Sleep(gap) // virtual time (synctest)
	}
	time.Sleep(2 * max(window, ReceiptWindow))
	synctest.Wait()
	pub.mu.Lock()
	kicks := pub.bareKicks
	pub.mu.Unlock()
	if kicks != 0 {
		// Receipts are every member's for every message: gossiped, with no
		// sync round asked for (the welcome of a new sending epoch is).
		t.Fatalf("bob's receipts asked for %d sync rounds", kicks)
	}
	return pub.take(), ra, msgs, s
}

// TestReceiptWindowBoundsBurst: 100 messages arriving one by one over a
// second make bob's device publish a handful of cumulative receipts (one
// at once, then one per window), not one per message; when they reach
// alice, every message is delivered to bob — and only then.
func TestReceiptWindowBoundsBurst(t *testing.T) {
	const k, gap = 100, 10 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		receipts, ra, msgs, s := burst(t, 0, k, gap)
		defer s.Close()
		bound := 2 + int(k*gap/ReceiptWindow)
		if len(receipts) == 0 || len(receipts) > bound {
			t.Fatalf("%d receipt ops for a burst of %d messages (bound %d)", len(receipts), k, bound)
		}
		st := ra.State()
		for _, m := range st.Messages {
			for p, lvl := range m.Receipts {
				if lvl != 0 {
					t.Fatalf("delivered to %s before any receipt arrived", p)
				}
			}
		}
		for _, raw := range receipts {
			if err := ra.Receive(raw); err != nil {
				t.Fatal(err)
			}
		}
		st = ra.State()
		if len(st.Messages) != len(msgs) {
			t.Fatalf("%d messages", len(st.Messages))
		}
		for _, m := range st.Messages {
			if d := ra.DeliveryOf(m); d.State != chat.StateDelivered {
				t.Fatalf("message %s: %s", m.ID.String()[:8], d.State)
			}
		}
		t.Logf("%d receipt ops for %d messages", len(receipts), k)
	})
}

// TestReceiptWindowOff: without a window every batch makes its receipt at
// once (what the window saves).
func TestReceiptWindowOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		receipts, _, _, s := burst(t, -1, 20, 10*time.Millisecond)
		defer s.Close()
		if len(receipts) != 20 {
			t.Fatalf("%d receipts for 20 batches", len(receipts))
		}
	})
}

// TestReadsCoalesced: the first read is recorded at once (the reader's own
// view shows it); reads reported while its window is open go in one receipt
// at its end; Close stops the windows.
func TestReadsCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, ra, msgs, s := burst(t, 0, 10, 0)
		id := ra.ID()
		pub := s.pub.(*published)
		if err := s.Receipt(id, chat.Read, msgs[0]); err != nil {
			t.Fatal(err)
		}
		if n := len(pub.take()); n != 1 {
			t.Fatalf("first read: %d ops", n)
		}
		st, _ := s.State(id)
		if st.Messages[0].Receipts[s.cfg.Device.ID] != chat.Read {
			t.Fatal("the reader's own view does not show the read")
		}
		for _, m := range msgs[1:] {
			if err := s.Receipt(id, chat.Read, m); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(pub.take()); n != 0 {
			t.Fatalf("reads within the window made %d ops at once", n)
		}
		time.Sleep(ReceiptWindow)
		synctest.Wait()
		if n := len(pub.take()); n != 1 {
			t.Fatalf("window end: %d ops", n)
		}
		st, _ = s.State(id)
		for _, m := range st.Messages {
			if m.Receipts[s.cfg.Device.ID] != chat.Read {
				t.Fatal("a read reported in the window is not recorded")
			}
		}
		// One more read opens a window; Close stops it.
		if err := s.Receipt(id, chat.Read, msgs[len(msgs)-1]); err != nil {
			t.Fatal(err)
		}
		s.Close()
		synctest.Wait()
	})
}

// TestCloseKeepsOwedReceipt: a message delivered while bob's receipt
// window is open is owed a receipt at the window's end; when the Service
// closes first, Close makes that receipt and saves it, so after a restart
// bob's store holds it (sync hands it to alice) — it is not lost.
func TestCloseKeepsOwedReceipt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, ra, msgs, s := burst(t, 0, 1, 0) // its receipt is published; no window is open now
		pub := s.pub.(*published)
		alice := ra.State().Messages[0].Sender
		_ = msgs
		o, err := ra.Send("bed 5", chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Deliver(ra.Tag(), []mesh.Checked{rtChecked(t, o.Envelopes[0])}, alice)
		first := len(pub.take())
		o2, err := ra.Send("bed 6", chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Deliver(ra.Tag(), []mesh.Checked{rtChecked(t, o2.Envelopes[0])}, alice) // window open: owed
		if n := len(pub.take()); first != 1 || n != 0 {
			t.Fatalf("setup: %d receipts at once, then %d within the window; want 1, 0", first, n)
		}
		s.Close()
		synctest.Wait()
		s2, err := Open(s.cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		envs := s2.Envelopes(ra.Tag(), s2.IDs(ra.Tag()))
		for _, raw := range envs {
			_ = ra.Receive(raw) // alice's own ops are known already
		}
		d, err := ra.Delivery(o2.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != chat.StateDelivered {
			t.Fatalf("after close and restart the message bob received is %s to alice", d.State)
		}
	})
}
