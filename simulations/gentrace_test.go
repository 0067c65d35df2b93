package simulations

import (
	"bytes"
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

func TestGeneratedTraceHeavyTail(t *testing.T) {
	gaps := interContactTimes(t, "testdata/hospital-trace.csv")
	cv, r, hill := tailStats(gaps)
	t.Logf("%d inter-contact times: median %.0f s, p90 %.0f s, p99 %.0f s, max %.0f s; CV %.2f, p90/p50 %.1f, Hill α %.2f",
		len(gaps), pct(gaps, .5), pct(gaps, .9), pct(gaps, .99), gaps[len(gaps)-1], cv, r, hill)
}

func TestScratchCCDF(t *testing.T) {
	gaps := interContactTimes(t, "testdata/hospital-trace.csv")
	for _, x := range []float64{60, 180, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 48 * 3600} {
		i, _ := slices.BinarySearch(gaps, x)
		t.Logf("CCDF(%6.0f) = %.3f", x, 1-float64(i)/float64(len(gaps)))
	}
}
