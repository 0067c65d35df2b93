package chat

// Red-team round 6: patients and the audit summary.

import (
	"testing"
)

// TestRedteam6PatientConcurrentEpochNewMemberDiverges
//
// Attack (or plain concurrency): admins alice and bob act at the same
// time. Alice adds dave (a welcome to alice, bob, carol, dave; dave gets
// the control keys of the epochs before as history). Bob, not having
// seen it, removes carol (a new epoch sealed to alice and bob only) and
// then corrects the patient: the correction is a control op sealed in
// bob's new epoch. Everyone then gets everything.
//
// Impact: dave is a member and holds every op, but nothing gives him the
// control key of bob's concurrent epoch, so he cannot read the
// correction: alice and bob show the corrected patient, dave keeps
// showing the old one. Dave's own ops cannot heal it (his rekey cannot
// give him a key he never had); only the next op by alice or bob (a
// rekey that carries history) does. Until someone else speaks, the
// replicas, holding the same ops, disagree on who the conversation is
// about: a wrong-patient hazard for the newest member ("a member added
// later reads it through history"; "replicas converge"). Transient, but
// with no bound.
func TestRedteam6PatientConcurrentEpochNewMemberDiverges(t *testing.T) {
	// A member added concurrently with another admin's rekey holds no key
	// of that epoch; once every op is everywhere, exactly one device heals
	// (Heal: the lowest peer ID holding every latest epoch) and its
	// welcome gives the new member the missing control key as history.
	w := newWorld(t)
	alice, bob, carol, dave := w.device("alice"), w.device("bob"), w.device("carol"), w.device("dave")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	base := ok2(t)(ra.SetPatient(&jane))
	base = append(base, ok2(t)(ra.Promote(bob.ID))...)
	deliver(t, base, rb, rc)

	// Concurrently.
	add := ok2(t)(ra.Add(dave.ID))
	rem := ok2(t)(rb.Remove(carol.ID))
	fix := ok2(t)(rb.SetPatient(&john))
	b := append(rem, fix...)

	deliver(t, add, rb, rc)
	deliver(t, b, ra, rc)
	rd := w.join(dave, ra.Tag())
	deliver(t, history(ra), rd)
	deliver(t, history(rb), rd)
	// Every op is now everywhere; the conversation is quiet.
	isMember := false
	for _, m := range ra.State().Members {
		isMember = isMember || m == dave.ID
	}
	if !isMember {
		t.Fatal("setup: dave is not a member")
	}
	var healed [][]byte
	healers := 0
	for _, r := range []*Replica{ra, rb, rd} {
		o, err := r.Heal()
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Envelopes) > 0 {
			healers++
			healed = append(healed, o.Envelopes...)
		}
	}
	if healers != 1 {
		t.Fatalf("%d devices healed, want exactly one", healers)
	}
	deliver(t, healed, ra, rb, rd)
	for _, r := range []*Replica{ra, rb, rd} {
		if o, _ := r.Heal(); len(o.Envelopes) > 0 {
			t.Fatal("a device healed again after the heal")
		}
	}
	pa, pb, pd := patientOf(ra), patientOf(rb), patientOf(rd)
	if pa == nil || pb == nil || *pa != *pb {
		t.Fatalf("setup: alice %+v, bob %+v", pa, pb)
	}
	if pd == nil || *pd != *pa {
		t.Fatalf("dave, a member, shows patient %+v; alice and bob show %+v", pd, pa)
	}
}
