package simulations

import (
	"math"
	"testing"
)

// TestEnginesAgree runs one small world on both engines. They share the
// world (moves, messages), the crdt and the reconciliation code; they
// differ in the gossip model (the DES pushes to every co-located
// subscriber; the full engine runs gossipsub over at most Degree
// connections per arrival) and in time: the full engine's own processing
// is stretched by the compression (scale 400: 1 ms of CPU is 0.4 s of
// scenario). Latencies in this scenario are set by walking (minutes), so
// we require the same delivery ratio within 0.03 and mean latencies within
// 15% or one anti-entropy period, whichever is larger.
func TestEnginesAgree(t *testing.T) {
	s := Builtins["basement"]
	s.Hours, s.Messages = 1, 30
	w, err := Build(s, 5)
	if err != nil {
		t.Fatal(err)
	}
	des := Summarise(w.RunDES(nil))
	fr, err := w.RunFull(FullOptions{Scale: 400}, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := Summarise(fr)
	t.Logf("des:  delivery %.3f, latency mean %.0f s, median %.0f s, hops %.2f", des.DeliveryRatio, des.LatencyMean, des.LatencyMedian, des.HopsMean)
	t.Logf("full: delivery %.3f, latency mean %.0f s, median %.0f s, hops %.2f, lag %.0f s", full.DeliveryRatio, full.LatencyMean, full.LatencyMedian, full.HopsMean, fr.Lag)
	if math.Abs(des.DeliveryRatio-full.DeliveryRatio) > 0.03 {
		t.Fatalf("delivery ratios differ: des %.3f, full %.3f", des.DeliveryRatio, full.DeliveryRatio)
	}
	if d := math.Abs(des.LatencyMean - full.LatencyMean); d > max(0.15*des.LatencyMean, s.SyncSeconds) {
		t.Fatalf("mean latencies differ by %.0f s: des %.0f, full %.0f", d, des.LatencyMean, full.LatencyMean)
	}
	for _, m := range fr.Messages {
		if m.Delivered >= 0 && m.Delivered < m.Oracle {
			t.Fatalf("full engine delivered before the oracle allows: %+v", m)
		}
	}
}

// TestFullRevocationPartition: real CRLs over real gossip and admission;
// the same outcome checks as the DES.
func TestFullRevocationPartition(t *testing.T) {
	s := Builtins["revocation-partition"]
	s.Messages = 80
	r, err := RunFull(s, 4, FullOptions{Scale: 1200}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkRevocationPartition(t, r)
}
