package chat

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// TestRedteam10BackdatedReceiptPullsDeadlineForward: Bob sends an urgent
// message asking for an acknowledgement within 10 minutes. One minute
// later Carol — a plain member, no admin — sends a delivery receipt of
// it stamped an hour back. A direct dependant by another author stamped
// more than MaxSkew earlier pulls the message's sort key down to its own
// time (crdt "clocks lie"), and the deadline is computed from that key:
// (the conversation was quiet for hours, so nothing clamps the key back
// up): on every replica the message is now 50 minutes overdue, re-alerted at
// once, and Bob's device escalates it to the next on-call right away —
// before the registrar had the 10 minutes the sender gave.
func TestRedteam10BackdatedReceiptPullsDeadlineForward(t *testing.T) {
	t.Skip("redteam10: a plain member's backdated receipt pulls an urgent message's key, and so its deadline, back: escalation at once")
	w := newWorld(t)
	alice, bob, carol, dan := w.device("alice"), w.device("bob"), w.device("carol"), w.device("dan")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	deliver(t, ok2(t)(ra.Promote(bob.ID)), rb, rc)
	w.now = w.now.Add(3 * time.Hour) // a quiet night on the ward
	sent := w.now
	envs, mid := urgent(t, rb, "sepsis bed 9", 10*time.Minute)
	deliver(t, envs, ra, rc)
	if m := msgOf(t, ra, mid); !m.Deadline().Equal(sent.Add(10 * time.Minute)) {
		t.Fatalf("setup: deadline %v, sent %v", m.Deadline(), sent)
	}
	w.now = sent.Add(time.Minute)
	ep, ok := rc.current(rc.headView())
	if !ok {
		t.Fatal("carol has no send epoch")
	}
	rcpt := craft(t, rc, []crdt.OpID{mid}, sent.Add(-time.Hour).UnixMilli(), 0,
		&payload{Kind: kindReceipt, Level: Delivered, Targets: [][]byte{mid[:]}}, ep)
	deliver(t, [][]byte{rcpt}, ra, rb)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		if m := msgOf(t, r, mid); m.Deadline().Before(sent.Add(10 * time.Minute)) {
			t.Errorf("%s: a plain member's backdated receipt moved the deadline from %v to %v (now %v)",
				name, sent.Add(10*time.Minute).Format(time.TimeOnly), m.Deadline().Format(time.TimeOnly), w.now.Format(time.TimeOnly))
		}
	}
	if _, err := rb.Escalate(mid, 1, []peer.ID{dan.ID}, "consultant"); err == nil {
		t.Errorf("escalated 1 minute into a 10-minute acknowledgement window")
	}
}
