package simulations

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func runTo(t *testing.T, s Scenario, seed uint64) string {
	t.Helper()
	r, err := RunDES(s, seed, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Write(dir, r, Summarise(r)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func same(t *testing.T, a, b string) bool {
	t.Helper()
	for _, f := range []string{"summary.csv", "messages.csv", "summary.json"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

func TestDeterminism(t *testing.T) {
	s := Builtins["basement"]
	s.Messages, s.Hours = 40, 3
	d1, d2, d3 := runTo(t, s, 7), runTo(t, s, 7), runTo(t, s, 8)
	if !same(t, d1, d2) {
		t.Fatal("same seed, different outputs")
	}
	if same(t, d1, d3) {
		t.Fatal("different seed, identical outputs")
	}
	for _, p := range []string{"latency_cdf.png", "delivery_over_time.png"} {
		b, _ := os.ReadFile(filepath.Join(d1, p))
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("%s is not a PNG", p)
		}
	}
}

func TestBuiltinsRunSmall(t *testing.T) {
	for _, n := range Names() {
		s := Builtins[n]
		s.Messages, s.Hours = 20, 1
		r, err := RunDES(s, 1, nil)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		sum := Summarise(r)
		if sum.Deliveries == 0 || sum.DeliveryRatio < 0 || sum.DeliveryRatio > 1 {
			t.Fatalf("%s: %+v", n, sum)
		}
		if sum.Missed > 0 && n == "basement" {
			t.Logf("%s: %d missed although a path existed", n, sum.Missed)
		}
	}
}

// TestTinyByHand: two wards that never meet and no mule — every message
// between them has no path; messages within a ward arrive at once, one hop.
func TestTinyByHand(t *testing.T) {
	s := Scenario{Name: "tiny", Hours: 1, Places: []string{"a", "b"}, Messages: 10, LinkMS: 5, LinkKBps: 8192, SyncSeconds: 30,
		Devices: []Group{{Name: "a", Count: 2, Home: "a"}, {Name: "b", Count: 1, Home: "b"}}}
	r, err := RunDES(s, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Messages {
		cross := strings.HasPrefix(m.From, "a") != strings.HasPrefix(m.To, "a")
		switch {
		case cross && (m.Delivered >= 0 || m.Oracle >= 0):
			t.Fatalf("message across wards delivered or given a path: %+v", m)
		case !cross && (m.Delivered < 0 || m.Hops != 1 || m.Oracle != m.Sent || m.Delivered-m.Sent > 0.1):
			t.Fatalf("message within a ward: %+v", m)
		}
	}
	sum := Summarise(r)
	if sum.Missed != 0 || sum.NoPath == 0 || sum.OverheadRatio != 0 {
		t.Fatalf("summary: %+v", sum)
	}
}

func TestScenarioFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{\n  \"name\": \"x\",\n  \"hours\": 2,\n  oops\n}"), 0o644)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Fatalf("syntax error: %v", err)
	}
	unknown := filepath.Join(dir, "unknown.json")
	os.WriteFile(unknown, []byte(`{"name":"x","hourz":2}`), 0o644)
	if _, err := Load(unknown); err == nil || !strings.Contains(err.Error(), "hourz") {
		t.Fatalf("unknown field: %v", err)
	}
	zero := filepath.Join(dir, "zero.json")
	os.WriteFile(zero, []byte(`{"name":"x","hours":0,"places":["a"],"sync_seconds":30}`), 0o644)
	if _, err := Load(zero); err == nil || !strings.Contains(err.Error(), "hours") {
		t.Fatalf("bad field: %v", err)
	}
	if _, err := Load("no-such-scenario"); err == nil || !strings.Contains(err.Error(), "basement") {
		t.Fatalf("unknown scenario: %v", err)
	}
}

// scaleScenario is a trust of nwards wards with 100 devices each (teams of
// 10 in one conversation each, visiting other wards) and an anchor per
// ten wards.
func scaleScenario(nwards, messages int) Scenario {
	s := Scenario{Name: "scale", Hours: 8, Messages: messages, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30, ConversationSize: 10}
	for i := range nwards {
		w := fmt.Sprintf("ward%03d", i)
		s.Places = append(s.Places, w)
		s.Devices = append(s.Devices, Group{Name: w, Count: 100, Home: w, Visits: 1, VisitMinutes: 5})
		if i%10 == 0 {
			s.Devices = append(s.Devices, Group{Name: w + "-anchor", Count: 1, Home: w, Anchor: true})
		}
	}
	return s
}

// BenchmarkDES: 10,000 devices and 100,000 messages (the scale
// target), wall time and events/s.
func BenchmarkDES(b *testing.B) {
	s := scaleScenario(100, 100_000)
	for b.Loop() {
		r, err := RunDES(s, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		sum := Summarise(r)
		b.ReportMetric(float64(r.Events)/r.Wall.Seconds(), "events/s")
		b.ReportMetric(r.Wall.Seconds(), "wall-s")
		b.ReportMetric(sum.DeliveryRatio, "delivery")
		b.ReportMetric(float64(len(r.World.Devices)), "devices")
	}
}

// TestTraceByHand: a contact trace in which a-1 and b-1 are at their
// places from the start, and a-1 walks over to b's place at 600 s and
// back at 900 s. A message a-1 writes at 100 s reaches b-1 at
// 600 s (one hop) — which is also the oracle's earliest arrival; a message
// b-1 writes after 900 s has no path.
func TestTraceByHand(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "trace.csv"), []byte("seconds,device,place\n0,a-1,a\n0,b-1,b\n600,a-1,b\n900,a-1,a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"name":"trace","hours":0.5,"places":["a","b"],
		"devices":[{"name":"a","count":1,"home":"a"},{"name":"b","count":1,"home":"b"}],
		"messages":0,"link_ms":5,"link_kbps":8192,"sync_seconds":30,"trace":"trace.csv"}`), 0o644)
	s, err := Load(filepath.Join(dir, "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.Messages = 40
	r, err := RunDES(s, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Messages {
		switch {
		case m.From == "a-1" && m.Sent < 600:
			if m.Oracle != 600 || m.Delivered < 600 || m.Delivered > 600.1 || m.Hops != 1 {
				t.Fatalf("a→b before the walk: %+v", m)
			}
		case m.From == "b-1" && m.Sent > 900:
			if m.Oracle != -1 || m.Delivered != -1 {
				t.Fatalf("b→a after the walk: %+v", m)
			}
		}
	}
	os.WriteFile(filepath.Join(dir, "trace.csv"), []byte("600,nobody,b\n"), 0o644)
	if _, err := RunDES(s, 5, nil); err == nil || !strings.Contains(err.Error(), "line 1: unknown device") {
		t.Fatalf("bad trace: %v", err)
	}
}

// TestOracleIsALowerBound: on every built-in, no delivery beats the
// oracle's earliest arrival, and every delivery had a path.
func TestOracleIsALowerBound(t *testing.T) {
	for _, n := range Names() {
		s := Builtins[n]
		s.Messages = 60
		r, err := RunDES(s, 2, nil)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		for _, m := range r.Messages {
			if m.Delivered >= 0 && (m.Oracle < 0 || m.Delivered < m.Oracle) {
				t.Fatalf("%s: delivered before the oracle allows: %+v", n, m)
			}
		}
	}
}

// TestRevocationPartition: the CRL reaches everyone, the cut-off ED only
// after the heal; the partition converges; the revoked phone's messages
// after its revocation are not counted as deliveries.
func TestRevocationPartition(t *testing.T) {
	s := Builtins["revocation-partition"]
	r, err := RunDES(s, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkRevocationPartition(t, r)
}

func checkRevocationPartition(t *testing.T, r *Result) {
	t.Helper()
	sum := Summarise(r)
	if sum.RevocationNotLearnt == nil || *sum.RevocationNotLearnt != 0 {
		t.Fatalf("CRL not learnt by everyone: %+v", sum)
	}
	heal, rev := r.World.Heal, r.World.Revokes[0].At
	if *sum.RevocationLearntMaxS < heal-rev {
		t.Fatalf("CRL crossed the cut: learnt within %.0f s, heal %.0f s after the revocation", *sum.RevocationLearntMaxS, heal-rev)
	}
	// Within an hour of the heal — plus, on the full engine, however late
	// the machine ran its events (compressed time does not compress the
	// CPU; a loaded machine runs behind and the engine reports by how much).
	if sum.ConvergenceS == nil || *sum.ConvergenceS < 0 || *sum.ConvergenceS > 3600+r.Lag {
		t.Fatalf("no convergence within an hour of the heal (-1: never): %v (lag %.0f s)", convergenceOf(sum), r.Lag)
	}
	revoked := r.World.Devices[r.World.Revokes[0].Dev].Name
	for _, m := range r.Messages {
		if m.From == revoked && m.Sent >= rev {
			t.Fatalf("a revoked device's message counted as a delivery: %+v", m)
		}
	}
	if *sum.RevokedSent == 0 {
		t.Fatal("the revoked phone sent nothing after its revocation: the scenario tests nothing")
	}
	// Standing comes from the product's rule (the replicas' views on the
	// full engine, chat.Endorsed on the DES's DAG): never more than the
	// phone wrote, and every replica agrees (a disagreement is a failure).
	wrote := 0
	for _, m := range r.World.Sends {
		if r.World.Devices[m.Dev].Name == revoked {
			wrote++
		}
	}
	if *sum.RevokedStanding > wrote {
		t.Fatalf("%d of the revoked phone's %d messages stand", *sum.RevokedStanding, wrote)
	}
	for _, f := range r.Failures {
		t.Errorf("failure: %s", f)
	}
}

// contactTrace writes a pairwise contact trace: every pair of the n
// devices of group "n" meets as a Poisson process of the given rate (per
// hour), for one second each time; within a team of size team the rate is
// multiplied by boost.
func contactTrace(t *testing.T, n int, perHour, hours float64, team int, boost float64, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var b strings.Builder
	b.WriteString("up_s,down_s,device_a,device_b\n")
	for i := 1; i <= n; i++ {
		for j := i + 1; j <= n; j++ {
			rate := perHour / 3600
			if team > 0 && (i-1)/team == (j-1)/team {
				rate *= boost
			}
			for at := rng.ExpFloat64() / rate; at < hours*3600; at += rng.ExpFloat64() / rate {
				fmt.Fprintf(&b, "%.3f,%.3f,n-%d,n-%d\n", at, at+1, i, j)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "trace.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidationEpidemicCompleteGraph: on a complete contact graph where
// every pair meets as a Poisson process of rate λ, epidemic spreading from
// one device reaches all n in expected time Σ_{k=1}^{n-1} 1/(λ k (n−k)) =
// 2 H_{n−1} / (λ n). The DES's mean time-to-everyone over many messages
// must match it within 10% (the standard error of the mean at 300
// messages is about 3%).
func TestValidationEpidemicCompleteGraph(t *testing.T) {
	const n, perHour = 20, 1.0
	s := Scenario{Name: "complete-graph", Hours: 30, Places: []string{"nowhere"}, Messages: 300, LinkMS: 5, LinkKBps: 16384,
		SyncSeconds: 3600, BurstMinutes: 20 * 60, Devices: []Group{{Name: "n", Count: n, Home: "nowhere"}},
		Trace: contactTrace(t, n, perHour, 30, 0, 1, 9)}
	r, err := RunDES(s, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := map[int]float64{}
	for _, m := range r.Messages {
		if m.Delivered < 0 {
			t.Fatalf("undelivered on a complete graph: %+v", m)
		}
		done[m.ID] = max(done[m.ID], m.Delivered-m.Sent)
	}
	mean := 0.0
	for _, d := range done {
		mean += d
	}
	mean /= float64(len(done))
	h := 0.0
	for k := 1; k < n; k++ {
		h += 1 / float64(k)
	}
	want := 2 * h / (perHour / 3600 * n)
	t.Logf("epidemic on a complete graph, n=%d, λ=%.0f/h per pair: mean time to all %.0f s, analytic %.0f s (ratio %.3f) over %d messages",
		n, perHour, mean, want, mean/want, len(done))
	if mean < 0.9*want || mean > 1.1*want {
		t.Fatalf("mean time to all %.0f s, analytic %.0f s", mean, want)
	}
}

// TestValidationRoutingOnTrace: our store-and-forward (members carry their
// conversation) against plain epidemic routing (everyone carries
// everything) and the oracle, on one contact trace with team structure.
// Epidemic routing may use other teams as relays: it delivers at least as
// much, as fast, at a higher overhead.
func TestValidationRoutingOnTrace(t *testing.T) {
	trace := contactTrace(t, 24, 0.2, 12, 6, 10, 11)
	run := func(routing string) Summary {
		s := Scenario{Name: "trace-" + routing, Hours: 12, Places: []string{"nowhere"}, Messages: 200, LinkMS: 5, LinkKBps: 16384,
			SyncSeconds: 3600, ConversationSize: 6, Routing: routing, Devices: []Group{{Name: "n", Count: 24, Home: "nowhere"}}, Trace: trace}
		r, err := RunDES(s, 5, nil)
		if err != nil {
			t.Fatal(err)
		}
		return Summarise(r)
	}
	ours, epi := run("medmesh"), run("epidemic")
	for _, s := range []Summary{ours, epi} {
		t.Logf("%-16s delivery %.3f  missed %d  latency÷oracle median %.2f  mean latency %.0f s  overhead %.2f  bytes/delivery %.0f",
			s.Scenario, s.DeliveryRatio, s.Missed, s.LatencyVsOracle, s.LatencyMean, s.OverheadRatio, s.BytesPerDelivery)
	}
	if epi.DeliveryRatio < ours.DeliveryRatio || epi.LatencyMean > ours.LatencyMean*1.001 || epi.OverheadRatio <= ours.OverheadRatio {
		t.Fatalf("epidemic %+v vs ours %+v", epi, ours)
	}
	if epi.Missed != 0 || epi.LatencyVsOracle > 1.01 {
		t.Fatalf("plain epidemic with instant contacts should match the oracle: %+v", epi)
	}
}

func convergenceOf(s Summary) float64 {
	if s.ConvergenceS == nil {
		return math.NaN()
	}
	return *s.ConvergenceS
}

// TestNamedConversations: groups naming the same conversation share it;
// anchors are in none; a group without a name beside named ones, or a
// conversation of one device, is an error naming the field.
func TestNamedConversations(t *testing.T) {
	s := Scenario{Name: "teams", Hours: 1, Places: []string{"a", "b"}, Messages: 10, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30,
		Devices: []Group{
			{Name: "doc-1", Count: 2, Home: "a", Conversation: "one"},
			{Name: "doc-2", Count: 2, Home: "a", Conversation: "two"},
			{Name: "ward-1", Count: 3, Home: "b", Conversation: "one"},
			{Name: "anchor", Count: 1, Home: "b", Anchor: true},
		}}
	w, err := Build(s, 1)
	if err != nil {
		t.Fatal(err)
	}
	names := func(c []int) (out []string) {
		for _, d := range c {
			out = append(out, w.Devices[d].Name)
		}
		return out
	}
	if len(w.Convs) != 2 || !slices.Equal(names(w.Convs[0]), []string{"doc-1-1", "doc-1-2", "ward-1-1", "ward-1-2", "ward-1-3"}) ||
		!slices.Equal(names(w.Convs[1]), []string{"doc-2-1", "doc-2-2"}) || w.ConvOf[len(w.Devices)-1] != -1 {
		t.Fatalf("conversations: %v", w.Convs)
	}
	for _, m := range w.Sends {
		if w.ConvOf[m.Dev] != m.Conv {
			t.Fatalf("message from %s, not in its conversation", w.Devices[m.Dev].Name)
		}
	}
	unnamed := s
	unnamed.Devices = slices.Clone(s.Devices)
	unnamed.Devices[1].Conversation = ""
	if err := unnamed.check(); err == nil || !strings.Contains(err.Error(), "devices[1]") || !strings.Contains(err.Error(), "conversation") {
		t.Fatalf("unnamed group beside named ones: %v", err)
	}
	alone := s
	alone.Devices = slices.Clone(s.Devices)
	alone.Devices[1].Count = 1
	if err := alone.check(); err == nil || !strings.Contains(err.Error(), `"two"`) {
		t.Fatalf("conversation of one: %v", err)
	}
}

// TestSummaryByFrame: the full engine's bytes by sync frame kind, and
// its lag by part of the run, are a row each in summary.csv.
func TestSummaryByFrame(t *testing.T) {
	r, err := RunDES(Builtins["basement"], 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.LagBy = make([]float64, LagParts)
	r.LagBy[0], r.LagBy[11] = 35, 2
	s := Summarise(r)
	s.BytesByFrame = map[string]int64{"offer": 123456789, "gossip": 7}
	dir := t.TempDir()
	if err := Write(dir, r, s); err != nil {
		t.Fatal(err)
	}
	csv, _ := os.ReadFile(filepath.Join(dir, "summary.csv"))
	for _, row := range []string{"\nbytes_by_frame.offer,123456789\n", "\nbytes_by_frame.gossip,7\n",
		"\nlag_by_twelfth_s.01,35\n", "\nlag_by_twelfth_s.02,0\n", "\nlag_by_twelfth_s.12,2\n"} {
		if !strings.Contains(string(csv), row) {
			t.Fatalf("summary.csv lacks %q:\n%s", row, csv)
		}
	}
}

// TestLagPart: a run's parts are equal and in order, the end in the last.
func TestLagPart(t *testing.T) {
	for _, c := range []struct {
		t, total float64
		want     int
	}{{0, 3600, 0}, {299, 3600, 0}, {300, 3600, 1}, {3599, 3600, 11}, {3600, 3600, 11}, {4000, 3600, 11}, {-5, 3600, 0}, {10, 0, 0}} {
		if got := lagPart(c.t, c.total); got != c.want {
			t.Errorf("lagPart(%v, %v) = %d, want %d", c.t, c.total, got, c.want)
		}
	}
}
