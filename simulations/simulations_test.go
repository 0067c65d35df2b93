package simulations

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
	s := Scenario{Name: "tiny", Hours: 1, Places: []string{"a", "b"}, Messages: 10, LinkMS: 5, LinkKBps: 1000, SyncSeconds: 30,
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
	s := Scenario{Name: "scale", Hours: 8, Messages: messages, LinkMS: 5, LinkKBps: 2000, SyncSeconds: 30, ConversationSize: 10}
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

// TestTraceByHand: a contact trace in which a-1 walks over to b's place at
// 600 s and back at 900 s. A message a-1 writes at 100 s reaches b-1 at
// 600 s (one hop) — which is also the oracle's earliest arrival; a message
// b-1 writes after 900 s has no path.
func TestTraceByHand(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "trace.csv"), []byte("seconds,device,place\n600,a-1,b\n900,a-1,a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "s.json"), []byte(`{"name":"trace","hours":0.5,"places":["a","b"],
		"devices":[{"name":"a","count":1,"home":"a"},{"name":"b","count":1,"home":"b"}],
		"messages":0,"link_ms":5,"link_kbps":1000,"sync_seconds":30,"trace":"trace.csv"}`), 0o644)
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
