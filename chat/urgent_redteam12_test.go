package chat

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Red team 12: the envelope's signed urgency bit. Skipped so that the
// suite stays green; remove the Skip to see it fail.

// TestRedteam12PreUpgradeUrgentRefused: before 6b14cf1/47bc2fd, Send put
// Urgent in the payload only (seal did not set the header, which had no
// key 12), and Escalate does the same for kind 19 (a membership op). The
// envelope version did not change, so those ops are byte for byte what
// the new code calls "urgent payload, routine header" and refuses with
// ErrUrgencyMismatch. After the upgrade every urgent message and every
// escalation ever sent is refused: on every restart (Restore re-runs
// setPayload on the kept plaintexts and re-opens control ops), on every
// new or re-installed device fetching the history, on anchors' members —
// "a message already shown is then withdrawn". Withdrawn escalations take
// their targets out of the membership, so the colleagues an escalation
// brought in are no longer members (their ops then refused too), while
// devices not yet upgraded still count them: a rolling upgrade diverges.
// The refused direction (urgent payload, routine header) buys a sender
// nothing — the op only crawls — so nothing is gained by refusing it.
func TestRedteam12PreUpgradeUrgentRefused(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	// What the previous release's Send made of SendOptions{Urgent: true,
	// AckWithin: 5 * time.Minute}: the payload says urgent, the header
	// (seal never set it) does not.
	pt, err := detcbor.Marshal(&payload{Kind: kindText, Text: "code blue, bed 4", Urgent: true, AckWithin: 300})
	if err != nil {
		t.Fatal(err)
	}
	env := ra.newEnvelope()
	ep, _ := ra.current(ra.headView())
	if err := e2e.SealContent(env, ra.send[ep], pt); err != nil {
		t.Fatal(err)
	}
	raw, err := ra.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := e2e.Decode(raw); e.Urgent || raw[0] != 0xab {
		t.Fatal("setup: not the pre-sync/6 header (map of 11, no key 12)")
	}
	if err := rb.Receive(raw); err != nil {
		t.Errorf("a pre-upgrade urgent message is refused after the upgrade: %v", err)
	}
	st := rb.State()
	i := slices.IndexFunc(st.Messages, func(m Message) bool { return m.ID == crdt.OpID(e2e.ID(raw)) })
	if i < 0 || !st.Messages[i].Urgent {
		t.Fatalf("the pre-upgrade urgent message is not shown (urgent): %q", texts(st))
	}
}

// TestRedteam12EscalationWelcomeRoutine: an escalation is urgent in its
// header, but the colleague it brings in cannot read anything — not the
// quoted message, not the escalation — until the welcome sealed to it
// arrives, and a welcome is never urgent (e2e.Decode refuses one). It
// also goes under the target's inbox tag, so neither an anchor's
// urgent-tag first (the conversation's tag is noted) nor a fetch's
// ancestor promotion (another tag) moves it. Across a budgeted site link
// — the very case escalation to an on-call colleague at another site is
// for — the urgent escalation is rushed and then waits, unreadable, for a
// routine welcome queued behind the backlog.
func TestRedteam12EscalationWelcomeRoutine(t *testing.T) {
	x := newEscalationWorld(t)
	out, err := x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "consultant")
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, out.Envelopes, x.ra)
	var rushed, welcomes [][]byte
	for _, raw := range history(x.ra) {
		e, err := e2e.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Kind == e2e.KindWelcome:
			welcomes = append(welcomes, raw)
		default:
			rushed = append(rushed, raw) // everything else, generously
		}
	}
	// Dan gets everything but the welcomes: the escalated message is not
	// readable.
	rd := x.w.join(x.dan, x.ra.Tag())
	deliver(t, rushed, rd)
	if st := rd.State(); slices.ContainsFunc(st.Messages, func(m Message) bool { return m.ID == x.mid && m.Text != "" }) {
		t.Fatal("setup: dan reads the escalated message without a welcome")
	}
	// Only a welcome lets him in, and none of them is urgent.
	var urgentWelcome bool
	for _, raw := range welcomes {
		e, _ := e2e.Decode(raw)
		urgentWelcome = urgentWelcome || e.Urgent
	}
	if !urgentWelcome {
		t.Fatalf("none of the %d welcomes the escalation target needs is urgent: it crawls behind the backlog while the escalation waits unreadable", len(welcomes))
	}
	deliver(t, welcomes, rd)
	if m := msgOf(t, rd, x.mid); m.Text == "" {
		t.Fatal("dan cannot read the escalated message even with the welcomes")
	}
}

// TestRedteam12PreUpgradeEscalationRefused: the same for an escalation
// (kind 19, a membership op): the previous release's Escalate sealed it
// with Urgent in the payload and no header bit. After the upgrade every
// replica refuses it, so the colleague it brought in is no longer a
// member there, while replicas still on the previous release count it.
func TestRedteam12PreUpgradeEscalationRefused(t *testing.T) {
	for _, header := range []bool{true, false} {
		x := newEscalationWorld(t)
		p := x.escalation(t, x.rb, 1, x.dan)
		pt, err := detcbor.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		env := x.rb.newEnvelope()
		env.Urgent = header // false: as the previous release sealed it
		ep, ok := x.rb.controlEpoch(x.rb.headView())
		if !ok {
			t.Fatal("no control epoch")
		}
		if err := e2e.SealControl(env, ep, x.rb.control[ep], pt); err != nil {
			t.Fatal(err)
		}
		raw, err := x.rb.signed(env)
		if err != nil {
			t.Fatal(err)
		}
		err = x.ra.Receive(raw)
		if m := msgOf(t, x.ra, x.mid); len(m.Escalations) != 1 || !slices.Contains(x.ra.State().Members, x.dan.ID) {
			t.Fatalf("header bit %v: escalation not taken (%v); members %v", header, err, x.ra.State().Members)
		}
	}
}
