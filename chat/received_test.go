package chat

import (
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// TestReceivedAtIsTheFirstRecipientReceipt: a message's received time is
// the earliest receipt of one of its recipients that covers it — its
// sender's own receipts and receipts made before it was held do not count,
// and a message no recipient has signed for has none.
func TestReceivedAtIsTheFirstRecipientReceipt(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	t0 := w.now
	at := func(d time.Duration) { w.now = t0.Add(d) }

	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	e2, m2 := ok(split(rb.Send("two, by bob", SendOptions{})))
	deliver(t, e1, rb, rc)
	deliver(t, e2, ra, rc)
	at(time.Minute)
	ownB, _ := ok(split(rb.Receipt(Delivered))) // covers m1 (bob's recipient) and m2 (bob's own)
	at(2 * time.Minute)
	recC, _ := ok(split(rc.Receipt(Delivered))) // covers both, later
	at(3 * time.Minute)
	e3, m3 := ok(split(ra.Send("three", SendOptions{})))
	deliver(t, e3, rc)
	at(4 * time.Minute)
	readC, _ := ok(split(rc.Receipt(Read, m3)))
	at(5 * time.Minute)
	e4, m4 := ok(split(ra.Send("four: nobody has it", SendOptions{})))
	deliver(t, slices.Concat(ownB, recC, e3, readC, e4), ra)

	got := ra.ReceivedAt([]crdt.OpID{m1, m2, m3, m4})
	want := map[crdt.OpID]time.Time{
		m1: t0.Add(time.Minute),     // bob's delivery, before carol's
		m2: t0.Add(2 * time.Minute), // carol's: bob's own receipt does not count
		m3: t0.Add(4 * time.Minute), // carol's read
	}
	for id, wt := range want {
		if g, ok := got[id]; !ok || !g.Equal(wt) {
			t.Errorf("%s received %v (%v), want %v", id.String()[:8], g, ok, wt)
		}
	}
	if g, ok := got[m4]; ok {
		t.Errorf("a message nobody signed for is received at %v", g)
	}
	if len(got) != len(want) {
		t.Errorf("%d received times, want %d", len(got), len(want))
	}
}
