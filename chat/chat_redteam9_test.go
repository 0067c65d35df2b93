package chat

import (
	"crypto/ed25519"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
)

// TestRedteam9EscalationReaddsRemovedMember: an admin removes carol from
// the conversation; bob, a plain member whose urgent message nobody
// acknowledged, escalates it to carol — with the unmodified Escalate —
// and every replica takes her back in. A plain member undoes an admin's
// removal (the removal is in the escalation's past, so the add wins).
func TestRedteam9EscalationReaddsRemovedMember(t *testing.T) {
	x := escalationWorldOf(t, false) // bob sends, a plain member
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
	x := newEscalationWorld(t)
	revoked := func(p peer.ID) bool { return p == x.eve.ID }
	x.ra.SetRevoked(revoked)
	x.rb.SetRevoked(revoked)
	x.rc.SetRevoked(revoked)
	p := x.escalation(t, x.rb, 1, x.eve)
	raw := forgeControl(t, x.rb, &p)
	x.refused(t, raw, x.ra, "escalation to a revoked device")
}

// TestRedteam9EscalationToOutsiderSilencesConversation: bob, a plain
// member, runs a modified client; his own urgent message went
// unacknowledged for its 30 seconds, and he escalates it to a peer ID
// that is nobody's — no certificate, no prekey. Every replica takes the
// outsider in as a member, and from then on no member can send: every new
// epoch must be sealed to a device nobody has a key for. The
// conversation is silent until an admin notices and removes the outsider.
func TestRedteam9EscalationToOutsiderSilencesConversation(t *testing.T) {
	x := escalationWorldOf(t, false) // bob sends, a plain member
	seed := sha256.Sum256([]byte("nobody"))
	outsider, err := identity.PeerIDFromKey(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	p := x.escalation(t, x.rb, 1)
	p.To = [][]byte{[]byte(outsider)}
	raw := forgeControl(t, x.rb, &p)
	deliver(t, [][]byte{raw}, x.ra, x.rc)
	if _, err := x.rc.Send("bed 9 is stable now", SendOptions{}); err != nil {
		t.Fatalf("carol cannot send after bob's escalation to an outsider (members %d): %v", len(x.rc.State().Members), err)
	}
}

// TestRedteam9HealIgnoresEscalation: bob escalates his urgent message to
// dan (Escalate: the escalation op, then the welcome of the new epoch).
// The escalation op reaches alice and carol before its welcome — two
// envelopes, and gossip keeps no order between them. Heal's rekeyOwed
// looks at adds and removals only, not escalations, so it does not wait
// for bob's welcome: the designated healer rekeys at once, and the
// welcome bob sent makes it a second new epoch for one change.
func TestRedteam9HealIgnoresEscalation(t *testing.T) {
	x := newEscalationWorld(t)
	out := ok2(t)(x.rb.Escalate(x.mid, 1, []peer.ID{x.dan.ID}, "registrar"))
	var escOnly [][]byte
	for _, raw := range out {
		if idOf(raw) == escOpOf(t, x.rb) {
			escOnly = append(escOnly, raw)
		}
	}
	if len(escOnly) != 1 {
		t.Fatalf("escalation op not found among %d envelopes", len(out))
	}
	for name, r := range map[string]*Replica{"alice": x.ra, "carol": x.rc} {
		deliver(t, escOnly, r)
		h, err := r.Heal()
		if err != nil {
			t.Fatalf("%s: heal: %v", name, err)
		}
		if len(h.Envelopes) > 0 {
			t.Fatalf("%s rekeyed while bob's own welcome for his escalation is on its way", name)
		}
	}
}

func escOpOf(t *testing.T, r *Replica) crdt.OpID {
	t.Helper()
	for _, m := range r.State().Messages {
		if len(m.Escalations) > 0 {
			return m.Escalations[0].ID
		}
	}
	t.Fatal("no escalation")
	return crdt.OpID{}
}

// TestRedteam9EscalationClockAhead: bob's modified client stamps his
// escalation 61 s after his urgent message (AckWithin 60 s) although only
// 5 s have passed. The deadline is judged on the op's own time, which its
// author sets, and 56 s ahead of alice's clock is within the DAG's
// MaxSkew, so nothing marks it: a sender brings colleagues in (and
// alerts them) without waiting for the acknowledgement time at all.
func TestRedteam9EscalationClockAhead(t *testing.T) {
	x := newEscalationWorld(t)
	sent := msgOf(t, x.ra, x.mid).Time
	x.w.now = sent.Add(61 * time.Second)
	p := x.escalation(t, x.rb, 1, x.eve)
	raw := forgeControl(t, x.rb, &p)
	x.w.now = sent.Add(5 * time.Second) // alice's clock: the deadline is 55 s away
	x.refused(t, raw, x.ra, "escalation stamped past the deadline by a clock running ahead")
}
