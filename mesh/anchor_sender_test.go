package mesh_test

import (
	"maps"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestAnchorSenderShare: a device flooding an anchor (any admitted device
// can push valid envelopes for a tag; the anchor cannot read membership)
// is held to its share of the quota, its own oldest envelopes dropped, and
// never evicts another sender's envelopes — also after the anchor restarts
// on the same store.
func TestAnchorSenderShare(t *testing.T) {
	c := testnet.NewCA(t)
	xdev := c.Enrol(t, "x")
	x := start(t, c, xdev, true)
	const quota = 20 << 10 // twenty 1 KiB messages; a sender's share is a quarter
	share := x.M.SetAnchorQuota(quota)
	if share != quota/4 {
		t.Fatalf("share of a %d-byte quota is %d", quota, share)
	}
	a := start(t, c, c.Enrol(t, "a"), false, x)
	b := start(t, c, c.Enrol(t, "b"), false, x)
	f := start(t, c, c.Enrol(t, "f"), false, x)
	for _, p := range []*testnet.Peer{a, f} {
		testnet.Eventually(t, 10*time.Second, "b's prekey known", func() bool { _, err := p.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	}

	ward, err := a.C.Create("ward", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var mine []crdt.OpID
	for _, text := range []string{"bed 4 needs a review", "CT booked for 3pm", "family informed"} {
		mine = append(mine, testnet.Send(t, a, ward, text))
	}
	testnet.Eventually(t, 10*time.Second, "the anchor carries a's messages", func() bool {
		held := x.M.SenderView(a.N.ID()).IDs
		for _, id := range mine {
			if !held[id] {
				return false
			}
		}
		return true
	})
	honest := x.M.SenderView(a.N.ID())
	if honest.Bytes > share {
		t.Fatalf("test assumption: a's %d bytes exceed a share of %d", honest.Bytes, share)
	}

	flood, err := f.C.Create("flood", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	floodMore := func(n int) {
		t.Helper()
		for range n {
			testnet.Send(t, f, flood, kib)
		}
		sent += n
		testnet.Eventually(t, 20*time.Second, "b has the flood", func() bool { return len(testnet.Texts(b, flood)) == sent })
		// Syncs with f offer the anchor the flood: it fills f's share.
		// (Waiting only for a sync record at least as new as the anchor's
		// change count does not do: while the anchor has taken nothing of
		// the flood, a record of a sync before it qualifies.)
		testnet.Eventually(t, 20*time.Second, "the anchor holds a share's worth from f", func() bool {
			x.M.SyncWith(f.N.ID())
			return x.M.SenderView(f.N.ID()).Bytes > share-2<<10
		})
		// One complete sync with f that starts now (after the anchor took
		// part of the flood) offers the anchor every envelope of it.
		now := x.M.Changes()
		testnet.Eventually(t, 20*time.Second, "the anchor synced with f", func() bool {
			x.M.SyncWith(f.N.ID())
			done, ok := x.M.Synced(f.N.ID())
			return ok && done >= now
		})
		// What the anchor dropped it does not fetch again: another
		// complete sync leaves what it holds from f as it was (fetching
		// the dropped envelopes anew would displace the held ones).
		held := x.M.SenderView(f.N.ID()).IDs
		again := x.M.Changes()
		testnet.Eventually(t, 20*time.Second, "the anchor synced with f again", func() bool {
			x.M.SyncWith(f.N.ID())
			done, ok := x.M.Synced(f.N.ID())
			return ok && done >= again
		})
		if now := x.M.SenderView(f.N.ID()).IDs; !maps.Equal(now, held) {
			t.Fatalf("the anchor fetched f's dropped envelopes again: held %d, now %d", len(held), len(now))
		}
	}
	check := func(when string) {
		t.Helper()
		fv := x.M.SenderView(f.N.ID())
		if fv.Bytes > share {
			t.Errorf("%s: the anchor holds %d bytes from f, over its share of %d", when, fv.Bytes, share)
		}
		if fv.Bytes != fv.Ledger {
			t.Errorf("%s: f's running total %d, index holds %d", when, fv.Ledger, fv.Bytes)
		}
		if len(fv.IDs) >= sent {
			t.Errorf("%s: the anchor dropped none of f's %d envelopes", when, sent)
		}
		av := x.M.SenderView(a.N.ID())
		for id := range honest.IDs {
			if !av.IDs[id] {
				t.Errorf("%s: f's flood evicted a's envelope %s", when, id)
			}
		}
		if av.Bytes != av.Ledger {
			t.Errorf("%s: a's running total %d, index holds %d", when, av.Ledger, av.Bytes)
		}
	}
	floodMore(40) // about twice the whole quota
	check("flooded")

	// Restart the anchor on the same store: the index and each sender's
	// total come back, and the bound holds for what f pushes next.
	x.Stop()
	x = start(t, c, xdev, true, a, b, f)
	for _, sender := range []peer.ID{a.N.ID(), f.N.ID()} {
		if v := x.M.SenderView(sender); v.Bytes != v.Ledger || v.Bytes == 0 {
			t.Fatalf("restored: %s's running total %d, index holds %d", sender, v.Ledger, v.Bytes)
		}
	}
	if got := x.M.SetAnchorQuota(quota); got != share {
		t.Fatalf("share after restart %d, want %d", got, share)
	}
	floodMore(20)
	check("restarted and flooded again")
}
