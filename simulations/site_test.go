package simulations

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestFullTwoSitesOnSiteLinks: the full engine's bridges run the product's
// site links (node and mesh sites.go). The engine only makes the WAN's
// mocknet link and silences it for the cut; the link is up from the
// start, the bridges' probes take it down during the cut, and they redial
// it by themselves after the heal (before and after, a probe on a busy
// machine may take it down for a moment: site.go's floors). Bytes cross it in paced sync,
// conversation gossip never does; messages cross between the sites,
// none arrives at the other site before the oracle allows (the cut
// holds; within a site the oracle's contacts are the engine's business,
// TestEnginesAgree's), every member
// converges after the heal, and delivery agrees with the DES (as in
// TestEnginesAgree, over the messages of the first three quarters of the
// run, within 0.03). The clock is elastic: the outcome, not the machine's
// speed, is under test.
func TestFullTwoSitesOnSiteLinks(t *testing.T) {
	s, err := Load("testdata/two-sites-cut.json") // two-sites, its WAN cut from 2 h to 3 h
	if err != nil {
		t.Fatal(err)
	}
	s.Messages = 80
	w, err := Build(s, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Cuts) != 1 {
		t.Fatalf("two-sites has %d WAN cuts, want 1", len(w.Cuts))
	}
	cut := w.Cuts[0]
	r, err := w.RunFull(FullOptions{Scale: 480, Elastic: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Failures) > 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	for _, c := range r.SiteLinks {
		t.Logf("site link of %s: up %v at %.0f s", c.Bridge, c.Up, c.At)
	}

	for _, d := range w.Devices {
		if !d.Bridge {
			continue
		}
		var changes []SiteLinkChange
		for _, c := range r.SiteLinks {
			if c.Bridge == d.Name {
				changes = append(changes, c)
			}
		}
		if !slices.ContainsFunc(changes, func(c SiteLinkChange) bool { return c.Up && c.At < cut.From }) {
			t.Errorf("%s: the site link was not up before the cut: %+v", d.Name, changes)
		}
		if !slices.ContainsFunc(changes, func(c SiteLinkChange) bool { return !c.Up && c.At >= cut.From && c.At < cut.To }) {
			t.Errorf("%s: the site link never showed down during the cut (%.0f–%.0f s): %+v", d.Name, cut.From, cut.To, changes)
		}
		if last := changes[len(changes)-1]; !last.Up || last.At < cut.To {
			t.Errorf("%s: the site link was not redialled after the heal at %.0f s: %+v", d.Name, cut.To, changes)
		}
		if r.SiteBytes[d.Name] == 0 {
			t.Errorf("%s sent nothing on its site link", d.Name)
		}
	}
	if r.WANGossip != 0 {
		t.Errorf("%d conversation gossip messages crossed the site link", r.WANGossip)
	}

	site := map[string]string{}
	for _, d := range w.Devices {
		site[d.Name], _, _ = strings.Cut(s.Places[d.Start], "-")
	}
	crossed := 0
	for _, m := range r.Messages {
		if m.Delivered < 0 || site[m.From] == site[m.To] {
			continue
		}
		if m.Delivered < m.Oracle {
			t.Fatalf("delivered across the sites before the oracle allows (across the cut?): %+v", m)
		}
		crossed++
	}
	if crossed == 0 {
		t.Error("no message crossed between the sites")
	}
	for i, c := range r.Convergence {
		if c < 0 {
			t.Errorf("member %d never converged after the heal", i)
		}
	}

	early := func(r *Result) Summary {
		r.Messages = slices.DeleteFunc(slices.Clone(r.Messages), func(m Message) bool { return m.Sent > 0.75*s.Hours*3600 })
		return Summarise(r)
	}
	des, full := early(w.RunDES(nil)), early(r)
	t.Logf("des:  delivery %.3f, median %.0f s, p95 %.0f s, median/oracle %.2f", des.DeliveryRatio, des.LatencyMedian, des.LatencyP95, des.LatencyVsOracle)
	t.Logf("full: delivery %.3f, median %.0f s, p95 %.0f s, median/oracle %.2f, lag %.0f s, %d crossed, site bytes %v",
		full.DeliveryRatio, full.LatencyMedian, full.LatencyP95, full.LatencyVsOracle, r.Lag, crossed, r.SiteBytes)
	if math.Abs(des.DeliveryRatio-full.DeliveryRatio) > 0.03 {
		t.Errorf("delivery ratios differ: des %.3f, full %.3f", des.DeliveryRatio, full.DeliveryRatio)
	}
}
