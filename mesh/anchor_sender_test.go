package mesh

import (
	"log/slog"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// carriedFrom is what an anchor carries from one sender: the IDs and bytes
// in its index, and the running total in its per-sender ledger.
type carriedFrom struct {
	ids    map[crdt.OpID]bool
	bytes  int64 // summed over the index
	ledger int64 // the running total
}

func senderView(s *Service, sender peer.ID) carriedFrom {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := carriedFrom{ids: map[crdt.OpID]bool{}}
	for _, c := range s.carried {
		for id, h := range c.ops {
			if h.sender == sender {
				v.ids[id] = true
				v.bytes += int64(h.size)
			}
		}
	}
	if a := s.sendersLocked().by[sender]; a != nil {
		v.ledger = a.bytes
	}
	return v
}

func setQuota(p *peerNode, quota int64) int64 {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.s.cfg.AnchorQuota = quota
	return p.s.senderShare()
}

// TestAnchorSenderShare: a device flooding an anchor (any admitted device
// can push valid envelopes for a tag; the anchor cannot read membership)
// is held to its share of the quota, its own oldest envelopes dropped, and
// never evicts another sender's envelopes — also after the anchor restarts
// on the same store.
func TestAnchorSenderShare(t *testing.T) {
	c := newCA(t)
	xdev := c.enrol(t, "x")
	x := start(t, c, xdev, true)
	const quota = 20 << 10 // twenty 1 KiB messages; a sender's share is a quarter
	share := setQuota(x, quota)
	if share != quota/4 {
		t.Fatalf("share of a %d-byte quota is %d", quota, share)
	}
	a := start(t, c, c.enrol(t, "a"), false, x)
	b := start(t, c, c.enrol(t, "b"), false, x)
	f := start(t, c, c.enrol(t, "f"), false, x)
	for _, p := range []*peerNode{a, f} {
		eventually(t, 10*time.Second, "b's prekey known", func() bool { _, err := p.n.Recipient(b.n.ID(), time.Now()); return err == nil })
	}

	ward, err := a.s.Create("ward", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var mine []crdt.OpID
	for _, text := range []string{"bed 4 needs a review", "CT booked for 3pm", "family informed"} {
		mine = append(mine, send(t, a, ward, text))
	}
	eventually(t, 10*time.Second, "the anchor carries a's messages", func() bool {
		held := senderView(x.s, a.n.ID()).ids
		for _, id := range mine {
			if !held[id] {
				return false
			}
		}
		return true
	})
	honest := senderView(x.s, a.n.ID())
	if honest.bytes > share {
		t.Fatalf("test assumption: a's %d bytes exceed a share of %d", honest.bytes, share)
	}

	flood, err := f.s.Create("flood", []peer.ID{b.n.ID()})
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	floodMore := func(n int) {
		t.Helper()
		for range n {
			send(t, f, flood, kib)
		}
		sent += n
		eventually(t, 20*time.Second, "b has the flood", func() bool { return len(textsOf(t, b, flood)) == sent })
		// One complete sync with f that starts now offers the anchor every
		// envelope of the flood.
		x.s.mu.Lock()
		now := x.s.changes
		x.s.mu.Unlock()
		eventually(t, 20*time.Second, "the anchor synced with f", func() bool {
			x.s.syncWith(f.n.ID())
			x.s.mu.Lock()
			defer x.s.mu.Unlock()
			done, ok := x.s.synced[f.n.ID()]
			return ok && done >= now
		})
		if got := senderView(x.s, f.n.ID()).bytes; got <= share-2<<10 {
			t.Fatalf("the anchor holds only %d bytes from f after the flood", got)
		}
	}
	check := func(when string) {
		t.Helper()
		fv := senderView(x.s, f.n.ID())
		if fv.bytes > share {
			t.Errorf("%s: the anchor holds %d bytes from f, over its share of %d", when, fv.bytes, share)
		}
		if fv.bytes != fv.ledger {
			t.Errorf("%s: f's running total %d, index holds %d", when, fv.ledger, fv.bytes)
		}
		if len(fv.ids) >= sent {
			t.Errorf("%s: the anchor dropped none of f's %d envelopes", when, sent)
		}
		av := senderView(x.s, a.n.ID())
		for id := range honest.ids {
			if !av.ids[id] {
				t.Errorf("%s: f's flood evicted a's envelope %s", when, id)
			}
		}
		if av.bytes != av.ledger {
			t.Errorf("%s: a's running total %d, index holds %d", when, av.ledger, av.bytes)
		}
	}
	floodMore(40) // about twice the whole quota
	check("flooded")

	// Restart the anchor on the same store: the index and each sender's
	// total come back, and the bound holds for what f pushes next.
	x.stop()
	x = start(t, c, xdev, true, a, b, f)
	for _, sender := range []peer.ID{a.n.ID(), f.n.ID()} {
		if v := senderView(x.s, sender); v.bytes != v.ledger || v.bytes == 0 {
			t.Fatalf("restored: %s's running total %d, index holds %d", sender, v.ledger, v.bytes)
		}
	}
	if got := setQuota(x, quota); got != share {
		t.Fatalf("share after restart %d, want %d", got, share)
	}
	floodMore(20)
	check("restarted and flooded again")
}

// TestAnchorSenderShareRestore: restoring a carried index recomputes each
// sender from the stored envelope, orders its envelopes by age (the store
// lists them by tag and ID), and trims a sender over its share — oldest
// first, nobody else's.
func TestAnchorSenderShareRestore(t *testing.T) {
	store := ds.NewMapDatastore()
	t0 := time.Unix(1_700_000_000, 0)
	s := &Service{cfg: Config{AnchorQuota: 64 << 10, AnchorTTL: time.Hour, Store: store, Now: func() time.Time { return t0 }},
		log: slog.New(slog.DiscardHandler), ctx: t.Context(), carried: map[string]*carrier{}, convs: map[string]*conv{}}
	share := s.senderShare() // 16 KiB
	sender := func() peer.ID {
		k, err := identity.GenerateDeviceKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.PeerID()
	}
	flooder, honest := sender(), sender()
	type stored struct {
		id     crdt.OpID
		at     time.Time
		sender peer.ID
	}
	var all []stored
	put := func(tag byte, from peer.ID, at time.Time, size int) {
		e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: make([]byte, 16), Sender: []byte(from),
			Epoch: make([]byte, 32), Body: make([]byte, size), Sig: make([]byte, 64), Wall: at.UnixMilli()}
		e.Tag[0] = tag
		raw, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := crdt.OpID(e2e.ID(raw))
		rec, _ := detcbor.Marshal(carriedRecord{At: at.Unix(), Raw: raw})
		if err := store.Put(t.Context(), carrierKey(e.Tag).ChildString(id.String()), rec); err != nil {
			t.Fatal(err)
		}
		all = append(all, stored{id, at, from})
	}
	// The honest sender's envelopes are the oldest of all; the flooder's
	// twice its share, over two tags (one of them the honest sender's).
	for i := range 4 {
		put(1, honest, t0.Add(time.Duration(i)*time.Second), 1000)
	}
	for i := range 32 {
		put(byte(1+i%2), flooder, t0.Add(time.Duration(10+i)*time.Second), 1000)
	}
	if err := s.restoreCarried(); err != nil {
		t.Fatal(err)
	}
	fv, hv := senderView(s, flooder), senderView(s, honest)
	if fv.bytes > share || fv.bytes < share-2000 || fv.bytes != fv.ledger {
		t.Fatalf("flooder holds %d bytes (running total %d), share %d", fv.bytes, fv.ledger, share)
	}
	if len(hv.ids) != 4 || hv.bytes != hv.ledger {
		t.Fatalf("honest sender holds %d envelopes, %d bytes (running total %d)", len(hv.ids), hv.bytes, hv.ledger)
	}
	// What the flooder keeps is its newest.
	var newest time.Time
	for _, e := range all {
		if e.sender == flooder && !fv.ids[e.id] && e.at.After(newest) {
			newest = e.at
		}
	}
	for _, e := range all {
		if e.sender == flooder && fv.ids[e.id] && !e.at.After(newest) {
			t.Fatalf("kept the flooder's envelope of %v, dropped one of %v", e.at.Sub(t0), newest.Sub(t0))
		}
	}
	var total int64
	for _, c := range s.carried {
		for _, h := range c.ops {
			total += int64(h.size)
		}
	}
	if total != s.carriedBytes {
		t.Fatalf("running total %d, index holds %d", s.carriedBytes, total)
	}
	// Dropped envelopes leave the store too: a second restore finds the same.
	s2 := &Service{cfg: s.cfg, log: s.log, ctx: t.Context(), carried: map[string]*carrier{}, convs: map[string]*conv{}}
	if err := s2.restoreCarried(); err != nil {
		t.Fatal(err)
	}
	if got := senderView(s2, flooder); len(got.ids) != len(fv.ids) || got.ledger != fv.ledger {
		t.Fatalf("second restore: %d envelopes, %d bytes; first %d, %d", len(got.ids), got.ledger, len(fv.ids), fv.ledger)
	}
}

// TestSenderShare: the share is a sixteenth of the quota, at least 8 MiB,
// and at most a quarter of a small quota.
func TestSenderShare(t *testing.T) {
	for _, tc := range []struct{ quota, share int64 }{
		{1 << 30, 64 << 20},
		{256 << 20, 16 << 20},
		{64 << 20, 8 << 20},
		{16 << 20, 4 << 20},
		{20 << 10, 5 << 10},
	} {
		s := &Service{cfg: Config{AnchorQuota: tc.quota}}
		if got := s.senderShare(); got != tc.share {
			t.Errorf("quota %d: share %d, want %d", tc.quota, got, tc.share)
		}
	}
}
