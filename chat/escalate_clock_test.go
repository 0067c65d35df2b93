package chat

import (
	"slices"
	"testing"
	"time"
)

// TestEscalationAheadWaitsForClock: an escalation stamped past the
// deadline by a clock running ahead is not taken in while the receiving
// device's clock is before its time (less EscalationSkew); once the clock
// gets there it stands, as it does on a device whose clock was there
// when it arrived — the same state on both, whichever came first.
func TestEscalationAheadWaitsForClock(t *testing.T) {
	x := newEscalationWorld(t)
	sent := msgOf(t, x.ra, x.mid).Time
	x.w.now = sent.Add(61 * time.Second)
	p := x.escalation(t, x.rb, 1, x.eve)
	raw := forgeControl(t, x.rb, &p)
	x.w.now = sent.Add(5 * time.Second)
	x.refused(t, raw, x.ra, "escalation stamped ahead")
	x.w.now = sent.Add(61*time.Second - EscalationSkew - time.Second)
	if got := msgOf(t, x.ra, x.mid).Escalations; len(got) != 0 {
		t.Fatalf("standing %s before its time less the skew: %+v", EscalationSkew+time.Second, got)
	}
	x.w.now = sent.Add(61*time.Second - EscalationSkew)
	got := msgOf(t, x.ra, x.mid).Escalations
	if len(got) != 1 || !slices.Contains(x.ra.State().Members, x.eve.ID) {
		t.Fatalf("once alice's clock reached it: escalations %+v, members %v", got, x.ra.State().Members)
	}
	// Carol's clock was there when the op reached her: the same escalation.
	deliver(t, [][]byte{raw}, x.rc)
	if gc := msgOf(t, x.rc, x.mid).Escalations; len(gc) != 1 || gc[0].ID != got[0].ID {
		t.Fatalf("carol: %+v, alice: %+v", gc, got)
	}
}
