package chat

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestRedteam9EscalationReaddsRemovedMember: an admin removes carol from
// the conversation; bob, a plain member whose urgent message nobody
// acknowledged, escalates it to carol — with the unmodified Escalate —
// and every replica takes her back in. A plain member undoes an admin's
// removal (the removal is in the escalation's past, so the add wins).
func TestRedteam9EscalationReaddsRemovedMember(t *testing.T) {
	t.Skip("redteam9: a plain member re-adds a member an admin removed by escalating an urgent message to them")
	x := newEscalationWorld(t)
	rm := ok2(t)(x.ra.Remove(x.carol.ID))
	deliver(t, rm, x.rb)
	if slices.Contains(x.ra.State().Members, x.carol.ID) {
		t.Fatal("carol still a member after her removal")
	}
	esc, err := x.rb.Escalate(x.mid, 1, []peer.ID{x.carol.ID}, "registrar")
	if err != nil {
		return // refused at the source: holds
	}
	deliver(t, esc.Envelopes, x.ra)
	if slices.Contains(x.ra.State().Members, x.carol.ID) {
		t.Fatal("bob (no admin) brought carol back in after alice removed her")
	}
}

// TestRedteam9EscalationToRevokedDevice: bob, the sender of an urgent
// message, runs a modified client and escalates it to eve, whose device
// the trust has revoked. Escalate refuses (no current key), but the rule
// every replica applies never looks at the targets: alice, who knows eve
// is revoked, makes her a member, and every later epoch must be sealed to
// the revoked device (or the conversation cannot rekey).
func TestRedteam9EscalationToRevokedDevice(t *testing.T) {
	t.Skip("redteam9: the escalation rule never checks its targets: a forged escalation makes a revoked device a member")
	x := newEscalationWorld(t)
	revoked := func(p peer.ID) bool { return p == x.eve.ID }
	x.ra.SetRevoked(revoked)
	x.rb.SetRevoked(revoked)
	x.rc.SetRevoked(revoked)
	p := x.escalation(t, x.rb, 1, x.eve)
	raw := forgeControl(t, x.rb, &p)
	x.refused(t, raw, x.ra, "escalation to a revoked device")
}
