package chat

import (
	"slices"
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

// TestRedteam10LateConcurrentEscalationTakesOverStep: Bob's urgent
// message went unacknowledged; Bob's device escalated step 1 to Dan (the
// on-call consultant) and Dan was alerted. Four minutes later Carol, an
// admin of the conversation, signs a step-1 escalation to Eve whose deps
// leave Bob's out — "concurrent" by her choice of deps, stamped now —
// trying op IDs until hers is lower than Bob's (one or two tries). Every
// replica now shows Carol's as the standing step 1: the escalation is
// rewritten after the fact to name Eve, and step 2 falls due an AckWithin
// after Carol's time, not Bob's — repeated, the next step never comes.
func TestRedteam10LateConcurrentEscalationTakesOverStep(t *testing.T) {

	x := newEscalationWorld(t)
	deliver(t, ok2(t)(x.ra.Promote(x.carol.ID)), x.rb, x.rc)
	oldHeads := x.rc.dag.Heads()
	ep, ok := x.rc.controlEpoch(x.rc.headView())
	if !ok {
		t.Fatal("carol: no control epoch")
	}
	esc := ok2(t)(x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "consultant"))
	deliver(t, esc, x.ra, x.rc)
	before := msgOf(t, x.ra, x.mid)
	if len(before.Escalations) != 1 || before.Escalations[0].To[0] != x.dan.ID {
		t.Fatalf("setup: %+v", before.Escalations)
	}
	x.w.now = x.w.now.Add(4 * time.Minute)
	p := x.escalation(t, x.rc, 1, x.eve)
	var forged []byte
	for i := uint32(0); i < 64; i++ {
		raw := craft(t, x.rc, oldHeads, x.w.now.UnixMilli(), i, &p, ep)
		if idOf(raw).Compare(before.Escalations[0].ID) < 0 {
			forged = raw
			break
		}
	}
	if forged == nil {
		t.Fatal("no lower op ID found")
	}
	deliver(t, [][]byte{forged}, x.ra, x.rb)
	for name, r := range map[string]*Replica{"alice": x.ra, "bob": x.rb} {
		m := msgOf(t, r, x.mid)
		if len(m.Escalations) != 1 || m.Escalations[0].ID != before.Escalations[0].ID {
			t.Errorf("%s: the standing step 1 changed, four minutes on, from bob's to dan to %+v", name, m.Escalations)
		}
		if !m.Due().Equal(before.Due()) {
			t.Errorf("%s: step 2 due moved from %v to %v", name, before.Due().Format(time.TimeOnly), m.Due().Format(time.TimeOnly))
		}
	}
}

// TestRedteam10BackdatedDependantVoidsEscalation: the escalation rule
// judges "at or after the deadline" on the escalation op's sort key, which
// any direct dependant by another author stamped more than MaxSkew earlier
// pulls down. Bob's urgent message (10 minutes to acknowledge, in a
// conversation quiet for hours) is escalated to Dan at 11 minutes; Carol,
// a plain member, answers the escalation with a receipt stamped ten
// minutes back. The escalation's key drops before the deadline, so every
// replica voids it: Dan is no longer a member nor alerted, and the
// message shows no escalation — while the sender's loop, which remembers
// having acted on step 1, does not escalate it again. (A replica judges
// an op once on arrival, so the escalation stands until it re-judges
// everything — on any promote, removal or restart: replicas disagree
// until then.)
func TestRedteam10BackdatedDependantVoidsEscalation(t *testing.T) {

	w := newWorld(t)
	alice, bob, carol, dan := w.device("alice"), w.device("bob"), w.device("carol"), w.device("dan")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	deliver(t, ok2(t)(ra.Promote(bob.ID)), rb, rc)
	w.now = w.now.Add(3 * time.Hour)
	sent := w.now
	envs, mid := urgent(t, rb, "sepsis bed 9", 10*time.Minute)
	deliver(t, envs, ra, rc)
	w.now = sent.Add(11 * time.Minute)
	out, err := rb.Escalate(mid, 1, []peer.ID{dan.ID}, "consultant")
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, out.Envelopes, ra, rc)
	if m := msgOf(t, ra, mid); len(m.Escalations) != 1 {
		t.Fatalf("setup: %+v", m.Escalations)
	}
	ep, ok := rc.current(rc.headView())
	if !ok {
		t.Fatal("carol has no send epoch")
	}
	rcpt := craft(t, rc, []crdt.OpID{out.ID}, sent.Add(time.Minute).UnixMilli(), 0,
		&payload{Kind: kindReceipt, Level: Delivered, Targets: [][]byte{mid[:]}}, ep)
	deliver(t, [][]byte{rcpt}, ra, rb)
	// Judged once on arrival, it stands — until anything makes a replica
	// judge everything again (a promote, a removal, a restart).
	if m := msgOf(t, ra, mid); len(m.Escalations) != 1 {
		t.Fatalf("on arrival: %+v", m.Escalations)
	}
	w.now = w.now.Add(time.Minute)
	deliver(t, ok2(t)(ra.Promote(carol.ID)), rb)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		if m := msgOf(t, r, mid); len(m.Escalations) != 1 {
			t.Errorf("%s: a plain member's backdated receipt voided the escalation: %+v", name, m.Escalations)
		}
		if !slices.Contains(r.State().Members, dan.ID) {
			t.Errorf("%s: dan, brought in by the escalation, is no longer a member", name)
		}
	}
}

// TestRedteam10BackdatedDependantDoesNotHurryNextStep: the next thing
// Carol tries after TestRedteam10BackdatedDependantVoidsEscalation — her
// backdated receipt depending on the escalation must not pull step 2's
// due time forward either (it counts from the escalation's own time).
func TestRedteam10BackdatedDependantDoesNotHurryNextStep(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol, dan := w.device("alice"), w.device("bob"), w.device("carol"), w.device("dan")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	deliver(t, ok2(t)(ra.Promote(bob.ID)), rb, rc)
	w.now = w.now.Add(3 * time.Hour)
	sent := w.now
	envs, mid := urgent(t, rb, "sepsis bed 9", 10*time.Minute)
	deliver(t, envs, ra, rc)
	w.now = sent.Add(11 * time.Minute)
	escAt := w.now
	out, err := rb.Escalate(mid, 1, []peer.ID{dan.ID}, "consultant")
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, out.Envelopes, ra, rc)
	ep, ok := rc.current(rc.headView())
	if !ok {
		t.Fatal("carol has no send epoch")
	}
	w.now = escAt.Add(time.Minute)
	rcpt := craft(t, rc, []crdt.OpID{out.ID}, sent.UnixMilli(), 0,
		&payload{Kind: kindReceipt, Level: Delivered, Targets: [][]byte{mid[:]}}, ep)
	deliver(t, [][]byte{rcpt}, ra, rb)
	deliver(t, ok2(t)(ra.Promote(carol.ID)), rb) // every replica re-judges
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		m := msgOf(t, r, mid)
		if len(m.Escalations) != 1 {
			t.Fatalf("%s: escalations %+v", name, m.Escalations)
		}
		if want := escAt.Add(10 * time.Minute); m.Due().Before(want) {
			t.Errorf("%s: step 2 due %v, want %v: a backdated receipt hurried the next step",
				name, m.Due().Format(time.TimeOnly), want.Format(time.TimeOnly))
		}
	}
	if _, err := rb.Escalate(mid, 2, []peer.ID{alice.ID}, "director"); err == nil {
		t.Errorf("escalated step 2 one minute after step 1")
	}
}
