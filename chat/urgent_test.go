package chat

import (
	"errors"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// headerUrgent is the urgency bit of an op's signed header.
func headerUrgent(t *testing.T, raw []byte) bool {
	t.Helper()
	e, err := e2e.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return e.Urgent
}

// TestUrgentHeaderSet: urgent messages and acknowledgements of them carry
// the header's urgency bit; routine messages, acknowledgements of routine
// messages, receipts and welcomes do not.
func TestUrgentHeaderSet(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	ok := must[crdt.OpID](t)
	routine, rid := ok(split(ra.Send("routine", SendOptions{})))
	urgent, uid := ok(split(ra.Send("urgent", SendOptions{Urgent: true})))
	if headerUrgent(t, routine[len(routine)-1]) || !headerUrgent(t, urgent[len(urgent)-1]) {
		t.Fatal("the header's bit does not follow the message's priority")
	}
	for _, raw := range slices.Concat(routine, urgent) {
		if e, _ := e2e.Decode(raw); e.Kind == e2e.KindWelcome && e.Urgent {
			t.Fatal("an urgent welcome")
		}
	}
	deliver(t, slices.Concat(routine, urgent), rb)
	ackU, _ := ok(split(rb.Receipt(Acknowledged, uid)))
	ackR, _ := ok(split(rb.Receipt(Acknowledged, rid)))
	read, _ := ok(split(rb.Receipt(Read)))
	if !headerUrgent(t, ackU[len(ackU)-1]) || headerUrgent(t, ackR[len(ackR)-1]) || headerUrgent(t, read[len(read)-1]) {
		t.Fatal("acknowledgement of an urgent message not urgent, or another receipt urgent")
	}
	// What each member reads agrees with the header.
	deliver(t, slices.Concat(ackU, ackR, read), ra)
	for _, m := range ra.State().Messages {
		if m.Urgent != (m.ID == uid) {
			t.Fatalf("message %q shown urgent=%v", m.Text, m.Urgent)
		}
	}
}

// TestUrgencyMismatchRefused: an op whose header bit and payload priority
// disagree the way that jumps queues — an urgent header over a routine
// payload, content or control — is refused by members and never shown;
// the sender can sign anything, so only this check keeps a routine
// message from riding as urgent. The other way round (an urgent payload
// under a routine header) only crawls, and is how every urgent op was
// sealed before the header had the bit: it is taken, and shown urgent.
func TestUrgencyMismatchRefused(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	forge := func(p *payload, header bool, control bool) []byte {
		t.Helper()
		pt, err := detcbor.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		env := rb.newEnvelope()
		env.Urgent = header
		if control {
			ep, ok := rb.controlEpoch(rb.headView())
			if !ok {
				t.Fatal("no control epoch")
			}
			err = e2e.SealControl(env, ep, rb.control[ep], pt)
		} else {
			ep, _ := rb.current(rb.headView())
			err = e2e.SealContent(env, rb.send[ep], pt)
		}
		if err != nil {
			t.Fatal(err)
		}
		raw, err := rb.signed(env)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ok := must[crdt.OpID](t)
	m, mid := ok(split(ra.Send("hello", SendOptions{})))
	deliver(t, m, rb)
	cases := []struct {
		name    string
		raw     []byte
		message bool
	}{
		{"routine payload, urgent header", forge(&payload{Kind: kindText, Text: "jump the queue"}, true, false), true},
		{"routine receipt, urgent header", forge(&payload{Kind: kindReceipt, Level: Read, Targets: [][]byte{mid[:]}}, true, true), false},
	}
	for _, c := range cases {
		if err := ra.Receive(c.raw); !errors.Is(err, ErrUrgencyMismatch) {
			t.Errorf("%s: received with %v", c.name, err)
		}
		if info := ra.ops[idOf(c.raw)]; info == nil || info.valid || info.p != nil {
			t.Errorf("%s: taken in", c.name)
		}
	}
	st := ra.State()
	if got := texts(st); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("messages shown: %q", got)
	}
	if st.Messages[0].Receipts[bob.ID] >= Read {
		t.Fatal("a refused receipt counted")
	}
	// Honestly marked, and urgent under a routine header (the sealing of
	// urgent ops before the header had the bit), they are taken.
	if err := ra.Receive(forge(&payload{Kind: kindText, Text: "honest", Urgent: true, AckWithin: 300}, true, false)); err != nil {
		t.Fatal(err)
	}
	if err := ra.Receive(forge(&payload{Kind: kindText, Text: "crawl", Urgent: true, AckWithin: 300}, false, false)); err != nil {
		t.Fatal(err)
	}
	ack := forge(&payload{Kind: kindReceipt, Level: Acknowledged, Targets: [][]byte{mid[:]}, Urgent: true}, false, true)
	if err := ra.Receive(ack); err != nil {
		t.Fatal(err)
	}
	st = ra.State()
	if got := texts(st); !slices.Equal(got, []string{"hello", "honest", "crawl"}) {
		t.Fatalf("messages shown: %q", got)
	}
	for _, m := range st.Messages[1:] {
		if !m.Urgent {
			t.Fatalf("%q not shown urgent", m.Text)
		}
	}
	if st.Messages[0].Receipts[bob.ID] != Acknowledged {
		t.Fatal("an acknowledgement under a routine header did not count")
	}
}

// TestUrgentKinds: only a text message, an escalation and an
// acknowledgement may be urgent; a photo chunk, a reaction, a membership
// change or a read receipt marked urgent is an invalid payload (so an
// urgent op is small: at most MaxText of text).
func TestUrgentKinds(t *testing.T) {
	for _, p := range []payload{
		{Kind: kindChunk, Urgent: true, Data: []byte{1}},
		{Kind: kindPhoto, Urgent: true},
		{Kind: kindReact, Urgent: true, Text: "+"},
		{Kind: kindAdd, Urgent: true},
		{Kind: kindReceipt, Level: Read, Urgent: true},
	} {
		if err := p.check(); !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("urgent kind %d level %d: %v", p.Kind, p.Level, err)
		}
	}
	for _, p := range []payload{
		{Kind: kindText, Urgent: true, Text: "x", AckWithin: 300},
		{Kind: kindReceipt, Level: Acknowledged, Urgent: true, Targets: [][]byte{make([]byte, 32)}},
	} {
		if err := p.check(); err != nil {
			t.Errorf("urgent kind %d: %v", p.Kind, err)
		}
	}
}

// TestEscalationHeaderUrgent: an escalation op is urgent in its header,
// and so is the welcome that brings the new targets in (without it they
// cannot read the escalation); nothing else is.
func TestEscalationHeaderUrgent(t *testing.T) {
	x := newEscalationWorld(t)
	out, err := x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "consultant")
	if err != nil {
		t.Fatal(err)
	}
	urgent, welcomes := 0, 0
	for _, raw := range out.Envelopes {
		e, err := e2e.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Urgent {
			urgent++
			switch {
			case e.Kind == e2e.KindWelcome:
				welcomes++
			case crdt.OpID(e2e.ID(raw)) != out.ID:
				t.Fatalf("an op other than the escalation and its welcome is urgent (kind %d)", e.Kind)
			}
		}
	}
	if urgent != 2 || welcomes != 1 {
		t.Fatalf("%d urgent envelopes (%d welcomes), want the escalation and its welcome", urgent, welcomes)
	}
	// Members take it (the header agrees with the payload).
	deliver(t, out.Envelopes, x.ra, x.rc)
	if m := msgOf(t, x.ra, x.mid); len(m.Escalations) != 1 {
		t.Fatalf("escalation not taken: %+v", m.Escalations)
	}
}
