package simulations

import (
	"bytes"
	"io"
	"math"
	"os"
	"slices"
	"testing"
)

// interContactTimes: for every pair, the gaps between the end of one
// contact and the start of the next, sorted.
func interContactTimes(t *testing.T, path string) []float64 {
	t.Helper()
	tr, err := readTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	last := map[[2]string]float64{}
	var gaps []float64
	for _, c := range tr.Contacts { // ordered by up; a pair's never overlap
		k := [2]string{c.A, c.B}
		if d, ok := last[k]; ok {
			gaps = append(gaps, c.Up-d)
		}
		last[k] = c.Down
	}
	slices.Sort(gaps)
	return gaps
}

// tailStats: the coefficient of variation, the ratio of the 90th to the
// 50th percentile, and the Hill estimate of the power-law exponent of the
// CCDF over the top tenth.
func tailStats(gaps []float64) (cv, p90p50, hill float64) {
	mean, sq := 0.0, 0.0
	for _, g := range gaps {
		mean += g
	}
	mean /= float64(len(gaps))
	for _, g := range gaps {
		sq += (g - mean) * (g - mean)
	}
	cv = math.Sqrt(sq/float64(len(gaps))) / mean
	p90p50 = pct(gaps, .9) / pct(gaps, .5)
	k := len(gaps) / 10
	xk := gaps[len(gaps)-1-k]
	s := 0.0
	for _, g := range gaps[len(gaps)-k:] {
		s += math.Log(g / xk)
	}
	return cv, p90p50, float64(k) / s
}

// TestGeneratedTraceShipped: the shipped trace is what the generator
// makes, byte for byte (go generate in simulations rewrites it).
func TestGeneratedTraceShipped(t *testing.T) {
	var b bytes.Buffer
	if err := GenerateTrace(&b, DefaultTraceGen); err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile("testdata/hospital-trace.csv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), shipped) {
		t.Fatal("testdata/hospital-trace.csv is not what GenerateTrace(DefaultTraceGen) writes: run go generate in simulations")
	}
}

// TestGeneratedTraceHeavyTail: the shipped trace's inter-contact times
// (per pair, from one contact's end to the next one's start) are heavy
// tailed, as in real human contact traces — which an exponential
// (memoryless contacts, as in the complete-graph validation) cannot be:
// its coefficient of variation is 1 and P(X > 10 × median) = 2^−10; here
// the CV is above 1.5, more than 5% of the gaps exceed ten medians, and
// the CCDF between 10 minutes and 12 hours follows a power law
// P(X > x) ∝ x^−α (least squares on log–log, R² ≥ 0.9) with α in
// [0.2, 1] (Chaintreau et al. measured α < 1 on the iMote traces).
func TestGeneratedTraceHeavyTail(t *testing.T) {
	gaps := interContactTimes(t, "testdata/hospital-trace.csv")
	cv, r, hill := tailStats(gaps)
	med := pct(gaps, .5)
	i, _ := slices.BinarySearch(gaps, 10*med)
	beyond := 1 - float64(i)/float64(len(gaps))
	alpha, r2 := ccdfSlope(gaps, 600, 12*3600, 10)
	t.Logf("%d inter-contact times: median %.0f s, p90 %.0f s, p99 %.0f s, max %.0f s; CV %.2f, p90/p50 %.1f, P(X > 10 median) %.3f, Hill α (top tenth) %.2f; CCDF slope over 10 min–12 h %.2f (R² %.3f)",
		len(gaps), med, pct(gaps, .9), pct(gaps, .99), gaps[len(gaps)-1], cv, r, beyond, hill, alpha, r2)
	switch {
	case len(gaps) < 500:
		t.Fatalf("only %d inter-contact times", len(gaps))
	case cv < 1.5:
		t.Fatalf("coefficient of variation %.2f: not heavy tailed", cv)
	case beyond < 0.05:
		t.Fatalf("P(X > 10 median) = %.3f: not heavy tailed", beyond)
	case alpha < 0.2 || alpha > 1 || r2 < 0.9:
		t.Fatalf("CCDF over 10 min–12 h: slope %.2f, R² %.3f: not a power law with α in [0.2, 1]", alpha, r2)
	}
}

// TestHeavyTailDiscriminates: the checks above reject memoryless
// contacts — a trace where every pair meets as a Poisson process.
func TestHeavyTailDiscriminates(t *testing.T) {
	gaps := interContactTimes(t, contactTrace(t, 12, 0.5, 120, 0, 1, 4))
	cv, _, _ := tailStats(gaps)
	i, _ := slices.BinarySearch(gaps, 10*pct(gaps, .5))
	beyond := 1 - float64(i)/float64(len(gaps))
	t.Logf("Poisson contacts: %d gaps, CV %.2f, P(X > 10 median) %.4f", len(gaps), cv, beyond)
	if cv >= 1.5 || beyond >= 0.05 {
		t.Fatalf("memoryless contacts pass for heavy tailed: CV %.2f, P(X > 10 median) %.4f", cv, beyond)
	}
}

// ccdfSlope fits log P(X > x) = c − α log x by least squares at n
// log-spaced points in [lo, hi]; it returns α and R².
func ccdfSlope(sorted []float64, lo, hi float64, n int) (alpha, r2 float64) {
	var xs, ys []float64
	for j := range n {
		x := lo * math.Pow(hi/lo, float64(j)/float64(n-1))
		i, _ := slices.BinarySearch(sorted, x)
		xs = append(xs, math.Log(x))
		ys = append(ys, math.Log(1-float64(i)/float64(len(sorted))))
	}
	mx, my := 0.0, 0.0
	for j := range xs {
		mx, my = mx+xs[j]/float64(n), my+ys[j]/float64(n)
	}
	sxy, sxx, syy := 0.0, 0.0, 0.0
	for j := range xs {
		sxy += (xs[j] - mx) * (ys[j] - my)
		sxx += (xs[j] - mx) * (xs[j] - mx)
		syy += (ys[j] - my) * (ys[j] - my)
	}
	return -sxy / sxx, sxy * sxy / (sxx * syy)
}

// TestGenerateTraceSeeded: the generator is a function of its input: the
// same TraceGen gives the same bytes, another seed another trace.
func TestGenerateTraceSeeded(t *testing.T) {
	gen := func(g TraceGen) string {
		var b bytes.Buffer
		if err := GenerateTrace(&b, g); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	g := TraceGen{Devices: 12, Wards: 3, Days: 2, Seed: 9}
	a, b := gen(g), gen(g)
	g.Seed++
	if a != b || a == gen(g) {
		t.Fatal("the generator is not a function of its seed")
	}
	if err := GenerateTrace(io.Discard, TraceGen{Devices: 1, Wards: 1, Days: 1}); err == nil {
		t.Fatal("a trace of one device")
	}
}
