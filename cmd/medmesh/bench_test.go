package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite the bench command's golden files in testdata/bench")

func readCanned(t *testing.T) benchFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bench", "ratio.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return parseBench(bytes.NewReader(b))
}

func TestParseBench(t *testing.T) {
	f := readCanned(t)
	if got := f.Config["cpu"]; got != "AMD EPYC" {
		t.Errorf("cpu = %q", got)
	}
	if got := f.Config["pkg"]; got != "github.com/medmesh/medmesh/simulations" {
		t.Errorf("last pkg = %q", got)
	}
	if len(f.Results) != 12 {
		t.Fatalf("%d results, want 12: %+v", len(f.Results), f.Results)
	}
	r := f.Results[0]
	if r.Name != "BenchmarkAdmit" || r.Procs != 2 || r.Iters != 6000 || r.Pkg != "github.com/medmesh/medmesh/identity" {
		t.Errorf("first result %+v", r)
	}
	want := []benchValue{{168154, "ns/op"}, {5947, "admits/s"}, {6820, "2verify/s"}, {0.872, "ratio_vs_2verify"}}
	if !slices.Equal(r.Values, want) {
		t.Errorf("values %v, want %v", r.Values, want)
	}
	if r := f.Results[7]; r.Name != "BenchmarkPurge/store=20000/deletes=1" || r.Pkg != "github.com/medmesh/medmesh/store" {
		t.Errorf("sub-benchmark %+v", r)
	}
}

func TestParseResultRejects(t *testing.T) {
	for _, line := range []string{
		"",
		"PASS",
		"--- BENCH: BenchmarkPersistedIngest-2",
		"BenchmarkAdmit-2 \t 6000",           // no values
		"BenchmarkAdmit-2 \t 6000 \t 168154", // value without unit
		"BenchmarkAdmit-2 \t many \t 168154 ns/op",         // iterations not a number
		"BenchmarkAdmit-2 \t 0 \t 168154 ns/op",            // no iterations
		"BenchmarkAdmit-2 \t 6000 \t fast ns/op",           // value not a number
		"BenchmarkAdmit-2 \t 6000 \t NaN ns/op",            // not a figure
		"Benchmarking the store \t 6000 \t 1 ns/op",        // a log line
		"    bench_test.go:52: BenchmarkAdmit 1 2 ns/op x", // indented log
	} {
		if r, ok := parseResult(line); ok {
			t.Errorf("%q parsed as %+v", line, r)
		}
	}
	r, ok := parseResult("BenchmarkX/name-with-dash-2 3 4 ns/op")
	if !ok || r.Name != "BenchmarkX/name-with-dash" || r.Procs != 2 {
		t.Errorf("procs suffix: %+v %v", r, ok)
	}
	r, ok = parseResult("BenchmarkX 3 4 ns/op") // GOMAXPROCS=1: no suffix
	if !ok || r.Name != "BenchmarkX" || r.Procs != 1 {
		t.Errorf("no suffix: %+v %v", r, ok)
	}
}

func TestBenchMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"^BenchmarkAdmit$", "BenchmarkAdmit", true},
		{"^BenchmarkAdmit$", "BenchmarkAdmitMany", false},
		{"Ingest", "BenchmarkPersistedIngest", true},
		{"^BenchmarkIngest$", "BenchmarkPersistedIngest", false},
		{"^BenchmarkPurge$", "BenchmarkPurge/store=20000/deletes=1", true},
		{"^BenchmarkFullBasement$/^devices=(9|18|36)$", "BenchmarkFullBasement/devices=18", true},
		{"^BenchmarkFullBasement$/^devices=(9|18|36)$", "BenchmarkFullBasement/devices=72", false},
		{"^BenchmarkFullBasement$/^devices=(9|18|36)$", "BenchmarkFullBasement64/devices=72", false},
		{"^BenchmarkFullTeams500$", "BenchmarkFullTeams500/devices=504", true},
	} {
		if got := benchMatch(c.pattern, c.name); got != c.want {
			t.Errorf("benchMatch(%q, %q) = %v", c.pattern, c.name, got)
		}
	}
}

// TestRenderBench renders canned output against the golden tables: every
// run, median/min/max, a benchmark that is missing and one that failed.
func TestRenderBench(t *testing.T) {
	f := readCanned(t)
	var outs []benchOutput
	for _, s := range benchSpecs {
		switch s.Regexp {
		case "^BenchmarkAdmit$", "^BenchmarkPersistedIngest$", "^BenchmarkDeliveryLatency10$", "^BenchmarkPurge$",
			"^BenchmarkStartToAdmitted$", "^BenchmarkReceiptBurst$", "^BenchmarkFullTeams500$":
			outs = append(outs, benchOutput{Spec: s, Results: f.matching(s)})
		case "^BenchmarkGet$":
			outs = append(outs, benchOutput{Spec: s, Err: "exit status 1: --- FAIL: BenchmarkGet | store closed"})
		}
	}
	h := benchHeader{Date: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), GoVersion: "go1.26.8 linux/amd64", CPUs: 2, CPU: f.Config["cpu"], Count: 3}
	var buf bytes.Buffer
	renderBench(&buf, h, outs, 3)
	golden := filepath.Join("testdata", "bench", "ratio.golden.md")
	if *updateGolden {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != string(want) {
		t.Errorf("tables differ from %s (go test -run TestRenderBench -update to accept):\n%s", golden, got)
	}
	// The figures a reader looks for, whatever the golden file says.
	for _, s := range []string{
		"| BenchmarkAdmit: ./identity admission", "| ratio_vs_2verify | 0.872 | 0.839 | 0.878 | 0.872, 0.839, 0.878 |",
		"| p50_ms | 8.10 | 8.10 | 8.10 | 8.10 |",
		"| BenchmarkPurge/store=100000/deletes=1: 〃 | ms/purge | 128 | 126 | 130 | 126, 130 |",
		"no benchmark matches ^BenchmarkReceiptBurst$ in this tree", "no benchmark matches ^BenchmarkStartToAdmitted$", "failed: exit status 1: --- FAIL: BenchmarkGet \\| store closed",
		"| on-time | 1 | 1 | 1 | 1 |",
		"go test -run '^$' -bench '^BenchmarkPersistedIngest$' -benchtime 5000x -count 3 ./mesh",
		"go test -run '^$' -bench '^BenchmarkFullTeams500$' -benchtime 1x -timeout 2h -count 1 ./simulations",
		"2026-03-02, go1.26.8 linux/amd64, 2 CPUs, AMD EPYC",
	} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("tables lack %q", s)
		}
	}
}

func TestFormatMetric(t *testing.T) {
	for v, want := range map[float64]string{
		5947: "5,947", 1234567.8: "1,234,568", 126: "126", 42: "42", 0: "0", 24.04: "24.0",
		8.1: "8.10", 0.66066: "0.661", 0.0001234: "0.000123", -3000: "-3,000",
	} {
		if got := formatMetric(v); got != want {
			t.Errorf("formatMetric(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSelectSpecs(t *testing.T) {
	count := func(o benchOptions) map[string]int {
		specs, err := selectSpecs(o)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, s := range specs {
			n[s.Set]++
		}
		return n
	}
	if n := count(benchOptions{}); n[benchMore] != 0 || n[benchFull] != 0 || n[benchRatio] < 10 {
		t.Errorf("default selects %v", n)
	}
	if n := count(benchOptions{full: true}); n[benchFull] < 4 || n[benchMore] != 0 {
		t.Errorf("--full selects %v", n)
	}
	if n := count(benchOptions{all: true}); n[benchMore] < 6 || n[benchFull] != 0 {
		t.Errorf("--all selects %v", n)
	}
	specs, err := selectSpecs(benchOptions{only: `FullBasement64|^\./identity`, time: "1x"})
	if err != nil || len(specs) != 2 || specs[0].Pkg != "./identity" || specs[1].Benchtime != "1x" {
		t.Errorf("--only selects %+v, %v", specs, err)
	}
	if _, err := selectSpecs(benchOptions{only: "nothing-like-this"}); err == nil {
		t.Error("--only matching nothing: no error")
	}
	for _, s := range benchSpecs { // every spec names a package of this module
		if _, err := os.Stat(filepath.Join("..", "..", s.Pkg)); err != nil {
			t.Errorf("%s: %v", s.Pkg, err)
		}
	}
}

func TestBenchOutsideSourceTree(t *testing.T) {
	var out, errOut bytes.Buffer
	t.Chdir(t.TempDir())
	t.Setenv("GOFLAGS", "")
	t.Setenv("GO111MODULE", "on")
	err := run(context.Background(), []string{"bench", "--only", "Admit", "--count", "1"}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "medmesh source tree") {
		t.Fatalf("outside the tree: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	err = run(context.Background(), []string{"bench", "--only", "Admit", "--count", "1"}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no go command") {
		t.Fatalf("no toolchain: %v", err)
	}
}

// TestBenchSmoke runs one cheap benchmark for real, once.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test")
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"bench", "--only", `^\./identity`, "--count", "1", "--benchtime", "1x"}, nil, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, s := range []string{"### Ratio benchmarks", "| BenchmarkAdmit: ./identity", "| admits/s |", "| ratio_vs_2verify |", "-benchtime 1x -count 1 ./identity"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
		}
	}
}

// FuzzParseBench: any input parses without a panic into results that
// print back as the same result lines.
func FuzzParseBench(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "bench", "ratio.txt"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("BenchmarkX-2 1 2 ns/op\n")
	f.Add("pkg: x\nBenchmarkX/a=1-8 \t 10 \t 1e3 ns/op \t -0.5 u\n")
	f.Fuzz(func(t *testing.T, in string) {
		pf := parseBench(strings.NewReader(in))
		for _, r := range pf.Results {
			if r.Iters <= 0 || len(r.Values) == 0 || r.Procs < 1 || !strings.HasPrefix(r.Name, "Benchmark") {
				t.Fatalf("bad result %+v", r)
			}
			var line strings.Builder
			line.WriteString(r.Name)
			if r.Procs > 1 || strings.LastIndexByte(r.Name, '-') > 0 {
				line.WriteString("-" + strconv.Itoa(r.Procs))
			}
			line.WriteString(" " + strconv.FormatInt(r.Iters, 10))
			for _, v := range r.Values {
				line.WriteString(" " + strconv.FormatFloat(v.Value, 'g', -1, 64) + " " + v.Unit)
			}
			again, ok := parseResult(line.String())
			if !ok || again.Name != r.Name || again.Iters != r.Iters || !slices.Equal(again.Values, r.Values) {
				t.Fatalf("%q: parsed %+v, printed %q, parsed again %+v", in, r, line.String(), again)
			}
		}
	})
}
