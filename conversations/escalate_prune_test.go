package conversations

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// TestEscalationMemoryPruned: round after round of urgent messages go
// past their deadline (re-alerted on both sides, escalated by the
// sender's loop), then are handled — acknowledged by the recipient, or
// deleted by the sender. What the loops remember follows the messages
// still open: it is back to nothing after every round, however many
// rounds there were. An escalated message keeps only its next step's
// entries.
func TestEscalationMemoryPruned(t *testing.T) {
	clock, na, nb, nd := escWorld(t)
	na.s.StartEscalations(staticEscalator{to: []peer.ID{nd.d.id}, label: "registrar"})
	id, err := na.s.Create("ward", []peer.ID{nb.d.id})
	if err != nil {
		t.Fatal(err)
	}
	const rounds, perRound = 4, 6
	for round := range rounds {
		var msgs []crdt.OpID
		for i := range perRound {
			m, err := na.s.Send(id, "urgent", chat.SendOptions{Urgent: true, AckWithin: 30 * time.Second})
			if err != nil {
				t.Fatalf("round %d message %d: %v", round, i, err)
			}
			msgs = append(msgs, m)
		}
		syncTo(t, na, nb)
		clock.Add(31 * time.Second)
		na.s.CheckEscalations()
		nb.s.CheckEscalations()
		if n := na.s.esc.size(); n < perRound {
			t.Fatalf("round %d: the sender's loop remembers %d entries for %d re-alerted messages", round, n, perRound)
		}
		clock.Add(EscalateAfter)
		na.s.CheckEscalations()
		for _, m := range msgs {
			testEventually(t, "escalated", func() bool { return len(escMessage(t, na, id, m).Escalations) == 1 })
		}
		na.s.CheckEscalations()
		// Escalated: the step-1 entries are gone, the step-2 ones not
		// made yet (its deadline is AckWithin away).
		if n := na.s.esc.size(); n != 0 {
			t.Fatalf("round %d: %d entries after escalating", round, n)
		}
		clock.Add(31 * time.Second) // step 2 due: re-alerted again
		na.s.CheckEscalations()
		nb.s.CheckEscalations()
		if n := na.s.esc.size(); n < perRound || n > 2*perRound {
			t.Fatalf("round %d: %d entries for %d messages due at step 2", round, n, perRound)
		}
		// Handled: half acknowledged by the recipient, half deleted.
		syncTo(t, na, nb)
		if err := nb.s.Receipt(id, chat.Acknowledged, msgs[:perRound/2]...); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[perRound/2:] {
			if err := na.s.Delete(id, m); err != nil {
				t.Fatal(err)
			}
		}
		syncTo(t, nb, na)
		syncTo(t, na, nb)
		na.s.CheckEscalations()
		nb.s.CheckEscalations()
		for name, n := range map[string]*escNode{"sender": na, "recipient": nb} {
			if got := n.s.esc.size(); got != 0 {
				t.Fatalf("round %d: the %s's loop still remembers %d entries of handled messages", round, name, got)
			}
		}
		// And nothing handled is alerted again.
		na.s.CheckEscalations()
		nb.s.CheckEscalations()
		for _, n := range []*escNode{na, nb} {
			countEvents(n, EventReAlert) // drain this round's
		}
		clock.Add(time.Hour)
		na.s.CheckEscalations()
		nb.s.CheckEscalations()
		for name, n := range map[string]*escNode{"sender": na, "recipient": nb} {
			if c := countEvents(n, EventReAlert); c != 0 {
				t.Fatalf("round %d: the %s re-alerted %d handled messages", round, name, c)
			}
		}
	}
}
