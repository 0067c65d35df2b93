package simulations

import (
	"math"
	"os"
	"slices"
	"testing"
	"time"
)

func TestScratchCarry(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	base, err := Load("testdata/hospital-trace.json")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("BW") == "inf" {
		base.LinkKBps = 1e12
	}
	ttl := 128 * 3600.0
	for _, seed := range []uint64{1, 2} {
		for _, v := range []struct {
			r string
			c Carry
		}{{"medmesh", Carry{}}, {"epidemic", Carry{}}, {"medmesh-carry", Carry{Copies: 12, TTLSeconds: ttl}}, {"medmesh-carry", Carry{Policy: "spray-focus", Copies: 4, TTLSeconds: ttl}}, {"medmesh-carry", Carry{Policy: "spray-focus", Copies: 8, TTLSeconds: ttl}}, {"medmesh-carry", Carry{Copies: 8, TTLSeconds: ttl}}, {"medmesh-carry", Carry{Copies: 16, TTLSeconds: ttl}}, {"medmesh-carry", Carry{Policy: "prophet", TTLSeconds: ttl}}} {
			s := base
			s.Routing, s.Carry = v.r, v.c
			st := time.Now()
			r, err := RunDES(s, seed, nil)
			if err != nil {
				t.Fatal(err)
			}
			m := Summarise(r)
			var lat, orc []float64
			for _, msg := range r.Messages {
				l, o := math.Inf(1), math.Inf(1)
				if msg.Delivered >= 0 {
					l = msg.Delivered - msg.Sent
				}
				if msg.Oracle >= 0 {
					o = msg.Oracle - msg.Sent
				} else {
					continue
				}
				lat, orc = append(lat, l), append(orc, o)
			}
			slices.Sort(lat)
			slices.Sort(orc)
			t.Logf("seed %d %-14s %-8s L%-2d ttl %6.0f del %.3f missed %3d nopath %3d med %6.0f (oracle %6.0f) ratio %.2f env %9d bytes %9d carriers/h %v %v  %v", seed, v.r, v.c.Policy, v.c.Copies, v.c.TTLSeconds, m.DeliveryRatio, m.Missed, m.NoPath, pct(lat, .5), pct(orc, .5), m.LatencyVsOracle, m.EnvelopeBytes, r.Bytes, ptr(m.CarrierBytesPerHourMean), ptr(m.CarrierPeakBytes), time.Since(st).Round(time.Millisecond))
		}
	}
}

func ptr[T any](p *T) any {
	if p == nil {
		return "-"
	}
	return *p
}
