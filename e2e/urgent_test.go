package e2e

import (
	"bytes"
	"errors"
	"testing"
)

// TestUrgentBit: the urgency bit is in the signed header and the body's
// associated data, so no relay can flip it either way; a routine
// envelope's bytes have no trace of it; a welcome is never urgent; the
// sync key carries it above the clock.
func TestUrgentBit(t *testing.T) {
	w := newFuzzWorld(t)
	routine, urgent := w.content[0], w.urgent
	raw := encoded(t, routine)
	// Routine bytes are what a header without the field gives: map of 11.
	if raw[0] != 0xab {
		t.Fatalf("a routine content envelope is a map of %x, want 11 fields (0xab)", raw[0])
	}
	if ur := encoded(t, urgent); ur[0] != 0xac || !bytes.HasSuffix(ur, []byte{12, 0xf5}) {
		t.Fatalf("an urgent envelope does not end with key 12 true: % x", ur[len(ur)-4:])
	}
	for name, e := range map[string]*Envelope{"routine": routine, "urgent": urgent} {
		flipped := *e
		flipped.Urgent = !e.Urgent
		if err := flipped.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: urgency flipped, Verify says %v", name, err)
		}
		back, err := Decode(encoded(t, &flipped))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back.Urgent == e.Urgent {
			t.Fatalf("%s: the flipped bit did not survive encoding", name)
		}
		// Resigned by someone else is another sender; re-signing as the
		// sender is the sender's word. A relay cannot do either, and the
		// body does not open under the flipped header.
		chains := NewRecvChains()
		chains.Install(w.epoch, w.secret, ids(w.alice, w.bob))
		if _, err := OpenContent(back, chains, t0); err == nil {
			t.Errorf("%s: the body opened under a header with the bit flipped", name)
		}
	}
	if k := urgent.SyncKey(); k&UrgentKey == 0 || CausalKey(k) == k {
		t.Errorf("urgent sync key %x lacks the urgency bit", k)
	}
	if k := routine.SyncKey(); k&UrgentKey != 0 || CausalKey(k) != k {
		t.Errorf("routine sync key %x has the urgency bit", k)
	}
	for _, e := range []*Envelope{urgent, routine} {
		if got := KeyWall(e.SyncKey()); got != e.Wall {
			t.Errorf("KeyWall of a key stamped %d ms: %d", e.Wall, got)
		}
	}
	// A welcome may be urgent (the one an escalation's targets need), and
	// its bit is signed like any other op's.
	wel := *w.welcome
	wel.Urgent = true
	if back, err := Decode(encoded(t, &wel)); err != nil || !back.Urgent {
		t.Errorf("an urgent welcome: %v", err)
	} else if back.Verify() == nil {
		t.Error("a welcome's bit flipped after signing still verifies")
	}
	// A non-canonical encoding of false (key 12 present, false) is refused.
	b := encoded(t, routine)
	b[0]++
	b = append(b, 12, 0xf4)
	if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("an explicit urgent=false decoded: %v", err)
	}
}
