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

// TestAnchorSenderShareRestore: restoring a carried index recomputes each
// sender from the stored envelope, orders its envelopes by age (the store
// lists them by tag and ID), and trims a sender over its share — oldest
// first, nobody else's.
func TestAnchorSenderShareRestore(t *testing.T) {
	store := ds.NewMapDatastore()
	t0 := time.Unix(1_700_000_000, 0)
	s := &Service{cfg: Config{AnchorQuota: 64 << 10, AnchorTTL: time.Hour, Store: store, Now: func() time.Time { return t0 }},
		log: slog.New(slog.DiscardHandler), ctx: t.Context(), carried: map[string]*carrier{}}
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
	fv, hv := s.SenderView(flooder), s.SenderView(honest)
	if fv.Bytes > share || fv.Bytes < share-2000 || fv.Bytes != fv.Ledger {
		t.Fatalf("flooder holds %d bytes (running total %d), share %d", fv.Bytes, fv.Ledger, share)
	}
	if len(hv.IDs) != 4 || hv.Bytes != hv.Ledger {
		t.Fatalf("honest sender holds %d envelopes, %d bytes (running total %d)", len(hv.IDs), hv.Bytes, hv.Ledger)
	}
	// What the flooder keeps is its newest.
	var newest time.Time
	for _, e := range all {
		if e.sender == flooder && !fv.IDs[e.id] && e.at.After(newest) {
			newest = e.at
		}
	}
	for _, e := range all {
		if e.sender == flooder && fv.IDs[e.id] && !e.at.After(newest) {
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
	s2 := &Service{cfg: s.cfg, log: s.log, ctx: t.Context(), carried: map[string]*carrier{}}
	if err := s2.restoreCarried(); err != nil {
		t.Fatal(err)
	}
	if got := s2.SenderView(flooder); len(got.IDs) != len(fv.IDs) || got.Ledger != fv.Ledger {
		t.Fatalf("second restore: %d envelopes, %d bytes; first %d, %d", len(got.IDs), got.Ledger, len(fv.IDs), fv.Ledger)
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
