package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// benchSpec is one benchmark the bench command runs: the ordinary
// `go test -bench` benchmark in Pkg whose name matches Regexp, run with
// Benchtime, and the metrics (units given to b.ReportMetric) to show, in
// order. A benchmark is added to the README's tables by one line in
// benchSpecs.
type benchSpec struct {
	Set       string   // benchRatio, benchMore or benchFull
	Pkg       string   // package directory relative to the module root, e.g. "./mesh"
	Regexp    string   // -bench pattern
	Benchtime string   // -benchtime ("" = go test's default)
	Metrics   []string // units to show; nil = every metric the benchmark reports but ns/op
	What      string   // what it measures, for the table
}

// The sets of benchmarks: the ratio benchmarks (run by default, --count
// times), the README's other figures (--all) and the full-stack simulation
// runs (--full; once each, they take minutes).
const (
	benchRatio = "ratio"
	benchMore  = "more"
	benchFull  = "full"
)

var benchSpecs = []benchSpec{
	{benchRatio, "./identity", "^BenchmarkAdmit$", "", []string{"admits/s", "2verify/s", "ratio_vs_2verify"}, "admission of a device → site → root chain against a 10,000-entry CRL, vs 2 × raw Ed25519 verify"},
	{benchRatio, "./store", "^BenchmarkBatchedPut$", "", []string{"puts/s", "raw_puts/s", "ratio_vs_raw"}, "encrypted store, batched Put of 1 KiB (100 per batch, one fsync per batch), vs raw pebble"},
	{benchRatio, "./store", "^BenchmarkGet$", "", []string{"gets/s", "raw_gets/s", "ratio_vs_raw"}, "encrypted store, random Get of 1 KiB among 20,000, vs raw pebble"},
	{benchRatio, "./store", "^BenchmarkPurge$", "", []string{"ms/purge"}, "purge after deletes: the deleted values' files compacted away and overwritten"},
	{benchRatio, "./node", "^BenchmarkStartToAdmitted$", "20x", []string{"ms/admitted", "ms/plain_connect", "ratio_vs_plain"}, "node.New to admitted-with-peer on loopback TCP, vs plain libp2p start + connect"},
	{benchRatio, "./node", "^BenchmarkIdleHeap$", "20x", []string{"MiB_heap/node", "goroutines/node", "hub_peers"}, "idle node with 10 admitted peers"},
	{benchRatio, "./chat", "^BenchmarkIngest$", "5000x", []string{"ops/s", "raw_ops/s", "ratio_vs_raw"}, "ingest of 1 KiB messages (decode + verify + authorise + decrypt + apply), vs SHA-256 + Ed25519 verify + XChaCha open run between every 100 messages"},
	{benchRatio, "./chat", "^BenchmarkCreate$", "5000x", []string{"ops/s", "raw_ops/s", "ratio_vs_raw", "faults/op", "fault_us"}, "creating 1 KiB messages (seal + sign + apply), vs XChaCha seal + SHA-256 + Ed25519 sign run between every 100 messages"},
	{benchRatio, "./mesh", "^BenchmarkPersistedIngest$", "5000x", []string{"ops/s", "raw_ops/s", "ratio_vs_raw", "cpu_us/op", "faults/op", "fault_us"}, "persisted ingest: a returning device fetches 5,000 1 KiB messages into its encrypted pebble store, vs the raw receive limit"},
	{benchRatio, "./mesh", "^BenchmarkDeliveryLatency10$", "50x", []string{"p50_ms", "p99_ms", "plain_p50_ms", "plain_p99_ms", "first_p50_ms", "first_max_ms"}, "send → on every recipient's device, 10 nodes on loopback, after one untimed message from each (first_*: those, each opening its sender's epoch), vs plain gossipsub in the same topology"},
	{benchRatio, "./chat", "^BenchmarkReceiptBurst$", "1x", []string{"ops_before", "ops_after", "verifies/device_before", "verifies/device_after", "KiB/device_before", "KiB/device_after"}, "receipts of a burst of 100 messages in a 64- and a 500-member group: receipt ops, Ed25519 verifications and bytes per device"},

	{benchMore, "./chat", "^BenchmarkAuthorise$", "", []string{"µs/op"}, "authorising one message op; judging every op again after a removal"},
	{benchMore, "./chat", "^BenchmarkMaterialise100k$", "3x", nil, "materialising a 100,000-message conversation"},
	{benchMore, "./chat", "^BenchmarkWelcome500$", "10x", []string{"ms/rekey"}, "new key epoch for a 500-member group (500 HPKE seals)"},
	{benchMore, "./mesh", "^BenchmarkSendPersisted$", "200x", []string{"sends/s", "mem_sends/s", "ratio_vs_mem"}, "sending through the mesh into the encrypted pebble store, durable before published, vs an in-memory store"},
	{benchMore, "./mesh", "^BenchmarkReconcile$", "1x", nil, "range-based reconciliation of two replicas differing by 10, vs exchanging all IDs"},
	{benchMore, "./mesh", "^BenchmarkSessionExchange$", "", []string{"µs/exchange", "messages", "recon_bytes"}, "one reconciliation of a busy conversation's tag (4,000 ops, 20 missing on each side, the newest) between built sessions: order=key as sync/8 orders ranges (by the ops' clocks), order=id as sync/7 did"},
	{benchMore, "./simulations", "^BenchmarkDES$", "1x", nil, "discrete event: 10,000 devices, 100,000 messages, 8 h"},

	{benchFull, "./simulations", "^BenchmarkFullBasement$/^devices=(9|18|36)$", "1x", fullMetrics, "full stack, basement with its groups multiplied (one conversation), 1 h at scale 60, vs the DES on the same world"},
	{benchFull, "./simulations", "^BenchmarkFullBasement64$", "1x", fullMetrics, "full stack, the basement × 8: 72 devices, a 64-member group, scale 60 (target: on time)"},
	{benchFull, "./simulations", "^BenchmarkFullTeams$", "1x", fullMetrics, "full stack, teams: k basements side by side, each team its own conversation, scale 60"},
	{benchFull, "./simulations", "^BenchmarkFullTeams500$", "1x", fullMetrics, "full stack, 62 teams (504 devices) at scale 15 (target: on time)"},
	{benchFull, "./simulations", "^BenchmarkFullIdleHeap$", "1x", []string{"beyond-libp2p-MiB/node", "medmesh-MiB/node", "libp2p-MiB/node", "directory-entries/node"}, "full stack, idle nodes on a mocknet: heap per node beyond a bare libp2p host"},
}

var fullMetrics = []string{"devices", "delivery", "des-delivery", "missed-vs-des", "lag-s", "lag-periods", "on-time", "latency-mean-s", "des-latency-mean-s", "wall-s", "cpu-us/op-delivery", "sync-sessions", "recon-MB"}

// benchOptions are the bench command's flags.
type benchOptions struct {
	count int
	full  bool
	all   bool
	only  string // regexp over "pkg Benchmark" selecting specs
	from  string // parse saved `go test -bench` output instead of running
	dry   bool
	time  string // -benchtime for every benchmark, overriding each one's
}

func newBenchCmd(e *env) *cobra.Command {
	var o benchOptions
	c := &cobra.Command{
		Use:   "bench [--count N] [--full] [--all] [--only REGEXP]",
		Short: "Run the project's benchmarks and print the README's tables",
		Long: strings.TrimSpace(`
Runs the ratio benchmarks (each beside the baseline it measures in the same
run) with go test from the medmesh source tree, --count times each, and
prints Markdown tables: every run, and the median, minimum and maximum of
each metric, with the date, go version and CPU count. --full adds the
full-stack simulation runs (once each; each takes minutes, the 504-device
run more than half an hour on a busy 2-core machine), --all the README's
other figures. A benchmark that fails or is missing is shown as such and
makes the command fail at the end; the other tables are still printed.

Needs a Go toolchain and a clone of the medmesh source: run it from the
module's directory (go run ./cmd/medmesh bench).`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), e, o)
		},
	}
	f := c.Flags()
	f.IntVar(&o.count, "count", 5, "runs of each ratio benchmark")
	f.BoolVar(&o.full, "full", false, "add the full-stack simulation runs (minutes each)")
	f.BoolVar(&o.all, "all", false, "add the README's other benchmark figures")
	f.StringVar(&o.only, "only", "", "run only the benchmarks (of any set) whose \"pkg pattern\" (e.g. \"./mesh ^BenchmarkPersistedIngest$\") matches this regexp")
	f.StringVar(&o.from, "from", "", "render the tables from saved go test -bench output (a file) instead of running")
	f.BoolVar(&o.dry, "dry-run", false, "print the go test commands instead of running them")
	f.StringVar(&o.time, "benchtime", "", "-benchtime for every benchmark (default: each one's own; 1x for a quick check that they run)")
	return c
}

// selectSpecs returns the specs the options ask for.
func selectSpecs(o benchOptions) ([]benchSpec, error) {
	var re *regexp.Regexp
	if o.only != "" {
		var err error
		if re, err = regexp.Compile(o.only); err != nil {
			return nil, fmt.Errorf("--only: %w", err)
		}
	}
	var out []benchSpec
	for _, s := range benchSpecs {
		if re != nil {
			if re.MatchString(s.Pkg + " " + s.Regexp) {
				out = append(out, s)
			}
			continue
		}
		if s.Set == benchRatio || s.Set == benchMore && o.all || s.Set == benchFull && o.full {
			out = append(out, s)
		}
	}
	if o.time != "" {
		for i := range out {
			out[i].Benchtime = o.time
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no benchmark selected")
	}
	return out, nil
}

// args is the go test command line of s, run count times.
func (s benchSpec) args(count int) []string {
	a := []string{"test", "-run", "^$", "-bench", s.Regexp}
	if s.Benchtime != "" {
		a = append(a, "-benchtime", s.Benchtime)
	}
	if s.Set == benchFull {
		count = 1
		a = append(a, "-timeout", "2h")
	}
	return append(a, "-count", strconv.Itoa(count), s.Pkg)
}

// command is s's command line as a reader types it.
func (s benchSpec) command(count int) string {
	var b strings.Builder
	b.WriteString("go")
	for _, a := range s.args(count) {
		if strings.ContainsAny(a, "^$|()*?[] ") {
			a = "'" + a + "'"
		}
		b.WriteString(" " + a)
	}
	return b.String()
}

// moduleRoot finds the medmesh source tree with the go toolchain.
func moduleRoot(ctx context.Context) (goBin, root string, err error) {
	goBin, err = exec.LookPath("go")
	if err != nil {
		return "", "", errors.New("bench needs a Go toolchain: no go command in PATH")
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", "", errors.New("bench must run inside the medmesh source tree (no go.mod here); run it from a clone of github.com/medmesh/medmesh")
	}
	mod, err := os.ReadFile(gomod)
	if err != nil {
		return "", "", fmt.Errorf("bench: %w", err)
	}
	if !bytes.HasPrefix(mod, []byte("module github.com/medmesh/medmesh\n")) {
		return "", "", fmt.Errorf("bench must run inside the medmesh source tree: %s is another module's", gomod)
	}
	return goBin, filepath.Dir(gomod), nil
}

func runBench(ctx context.Context, e *env, o benchOptions) error {
	if o.count < 1 {
		return fmt.Errorf("--count %d: want at least 1", o.count)
	}
	specs, err := selectSpecs(o)
	if err != nil {
		return err
	}
	if o.dry {
		for _, s := range specs {
			fmt.Fprintln(e.stdout, s.command(o.count))
		}
		return nil
	}
	h := benchHeader{Date: e.time(), CPUs: runtime.NumCPU(), Count: o.count}
	var outs []benchOutput
	var failed []string
	if o.from != "" {
		b, err := os.ReadFile(o.from)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		all := parseBench(bytes.NewReader(b))
		h.GoVersion, h.CPU = all.Config["go"], all.Config["cpu"]
		for _, s := range specs {
			outs = append(outs, benchOutput{Spec: s, Results: all.matching(s)})
		}
	} else {
		goBin, root, err := moduleRoot(ctx)
		if err != nil {
			return err
		}
		v, err := exec.CommandContext(ctx, goBin, "version").Output()
		if err != nil {
			return fmt.Errorf("bench: go version: %w", err)
		}
		h.GoVersion = strings.TrimPrefix(strings.TrimSpace(string(v)), "go version ")
		for _, s := range specs {
			fmt.Fprintf(e.stderr, "bench: %s\n", s.command(o.count))
			cmd := exec.CommandContext(ctx, goBin, s.args(o.count)...)
			cmd.Dir = root
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, &buf
			err := cmd.Run()
			res := parseBench(bytes.NewReader(buf.Bytes()))
			if h.CPU == "" {
				h.CPU = res.Config["cpu"]
			}
			out := benchOutput{Spec: s, Results: res.Results}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				out.Err = fmt.Sprintf("%v: %s", err, lastLines(buf.String(), 5))
				failed = append(failed, s.Pkg+" "+s.Regexp)
			}
			outs = append(outs, out)
		}
	}
	renderBench(e.stdout, h, outs, o.count)
	if len(failed) > 0 {
		return fmt.Errorf("bench: %d failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], " / ")
}

// benchResult is one line of go test -bench output.
type benchResult struct {
	Pkg    string // from the "pkg:" line before it, "" if none
	Name   string // without the -GOMAXPROCS suffix, e.g. "BenchmarkFullTeams/devices=65"
	Procs  int
	Iters  int64
	Values []benchValue
}

type benchValue struct {
	Value float64
	Unit  string
}

// benchFile is parsed go test -bench output: the results in order and the
// last value of each configuration line ("goos", "cpu", "pkg", …).
type benchFile struct {
	Config  map[string]string
	Results []benchResult
}

var configKey = regexp.MustCompile(`^[a-z][^\s:A-Z]*$`)

// parseBench reads the standard benchmark format (golang.org/design/14313):
// configuration lines "key: value" and result lines
// "BenchmarkName[-P] N value unit [value unit]...". Other lines (PASS, ok,
// test logs) are skipped, as are malformed result lines.
func parseBench(r io.Reader) benchFile {
	f := benchFile{Config: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	pkg := ""
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ":"); ok && configKey.MatchString(k) && (v == "" || v[0] == ' ') {
			f.Config[k] = strings.TrimSpace(v)
			if k == "pkg" {
				pkg = f.Config[k]
			}
			continue
		}
		if r, ok := parseResult(line); ok {
			r.Pkg = pkg
			f.Results = append(f.Results, r)
		}
	}
	return f
}

func parseResult(line string) (benchResult, bool) {
	fs := strings.Fields(line)
	if len(fs) < 4 || len(fs)%2 != 0 || !strings.HasPrefix(fs[0], "Benchmark") {
		return benchResult{}, false
	}
	if n := fs[0][len("Benchmark"):]; n != "" && !strings.HasPrefix(n, "/") {
		if r := []rune(n)[0]; r >= 'a' && r <= 'z' {
			return benchResult{}, false // "Benchmarking…" is not a benchmark
		}
	}
	iters, err := strconv.ParseInt(fs[1], 10, 64)
	if err != nil || iters <= 0 {
		return benchResult{}, false
	}
	r := benchResult{Name: fs[0], Procs: 1, Iters: iters}
	if i := strings.LastIndexByte(r.Name, '-'); i > 0 {
		if p, err := strconv.Atoi(r.Name[i+1:]); err == nil && p > 0 {
			r.Name, r.Procs = r.Name[:i], p
		}
	}
	for i := 2; i < len(fs); i += 2 {
		v, err := strconv.ParseFloat(fs[i], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return benchResult{}, false
		}
		r.Values = append(r.Values, benchValue{v, fs[i+1]})
	}
	return r, true
}

// matching returns the results of s: those whose package is s's (when the
// output names packages) and whose name matches s's pattern as go test
// matches it, level by level.
func (f benchFile) matching(s benchSpec) []benchResult {
	var out []benchResult
	for _, r := range f.Results {
		if r.Pkg != "" && !strings.HasSuffix(r.Pkg, strings.TrimPrefix(s.Pkg, ".")) {
			continue
		}
		if benchMatch(s.Regexp, r.Name) {
			out = append(out, r)
		}
	}
	return out
}

// benchMatch reports whether go test -bench pattern selects name: each
// slash-separated part of the pattern must match the name's part at the
// same level (parts the pattern lacks match anything).
func benchMatch(pattern, name string) bool {
	ps, ns := splitBenchPattern(pattern), strings.Split(name, "/")
	for i, p := range ps {
		if i >= len(ns) {
			return true
		}
		re, err := regexp.Compile(p)
		if err != nil || !re.MatchString(ns[i]) {
			return false
		}
	}
	return true
}

// splitBenchPattern splits at slashes outside brackets and parentheses,
// as go test does.
func splitBenchPattern(p string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[', '(':
			depth++
		case ']', ')':
			depth--
		case '\\':
			i++
		case '/':
			if depth == 0 {
				out = append(out, p[start:i])
				start = i + 1
			}
		}
	}
	return append(out, p[start:])
}

// benchOutput is what one spec's run produced.
type benchOutput struct {
	Spec    benchSpec
	Results []benchResult
	Err     string
}

type benchHeader struct {
	Date      time.Time
	GoVersion string
	CPUs      int
	CPU       string
	Count     int
}

// renderBench prints one Markdown table per set: a row per benchmark and
// metric with the median, minimum and maximum over the runs and every run,
// and below it the commands that reproduce it.
func renderBench(w io.Writer, h benchHeader, outs []benchOutput, count int) {
	titles := map[string]string{
		benchRatio: "Ratio benchmarks (each beside its baseline in the same run)",
		benchMore:  "Other benchmark figures",
		benchFull:  "Full-stack simulations (once each)",
	}
	if h.GoVersion == "" {
		h.GoVersion = "go version unknown"
	}
	cpu := ""
	if h.CPU != "" {
		cpu = ", " + h.CPU
	}
	for _, set := range []string{benchRatio, benchMore, benchFull} {
		var rows []benchOutput
		for _, o := range outs {
			if o.Spec.Set == set {
				rows = append(rows, o)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "### %s\n\n%s, %s, %d CPUs%s\n\n", titles[set], h.Date.Format("2006-01-02"), h.GoVersion, h.CPUs, cpu)
		fmt.Fprintln(w, "| benchmark | metric | median | min | max | runs |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, o := range rows {
			label := fmt.Sprintf("%s %s", o.Spec.Pkg, o.Spec.What)
			switch {
			case o.Err != "":
				fmt.Fprintf(w, "| %s | failed: %s | | | | |\n", label, mdEscape(o.Err))
				continue
			case len(o.Results) == 0:
				fmt.Fprintf(w, "| %s | no benchmark matches %s in this tree | | | | |\n", label, mdEscape(o.Spec.Regexp))
				continue
			}
			for _, name := range resultNames(o.Results) {
				for _, unit := range shownUnits(o.Spec, o.Results, name) {
					vals := valuesOf(o.Results, name, unit)
					if len(vals) == 0 {
						fmt.Fprintf(w, "| %s: %s | %s | not reported | | | |\n", mdEscape(name), label, mdEscape(unit))
						continue
					}
					sorted := slices.Sorted(slices.Values(vals))
					runs := make([]string, len(vals))
					for i, v := range vals {
						runs[i] = formatMetric(v)
					}
					fmt.Fprintf(w, "| %s: %s | %s | %s | %s | %s | %s |\n", mdEscape(name), label, mdEscape(unit),
						formatMetric(median(sorted)), formatMetric(sorted[0]), formatMetric(sorted[len(sorted)-1]), strings.Join(runs, ", "))
					label = "〃" // the description once per benchmark
				}
			}
		}
		fmt.Fprintln(w, "\nReproduce with (from the module root):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "```sh")
		for _, o := range rows {
			fmt.Fprintln(w, o.Spec.command(count))
		}
		fmt.Fprintln(w, "```")
		fmt.Fprintln(w)
	}
}

// resultNames are the distinct benchmark names, in first-seen order.
func resultNames(rs []benchResult) []string {
	var names []string
	for _, r := range rs {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	return names
}

// shownUnits are the spec's metrics, or every unit name reported but
// ns/op, in first-seen order.
func shownUnits(s benchSpec, rs []benchResult, name string) []string {
	if s.Metrics != nil {
		return s.Metrics
	}
	var units []string
	for _, r := range rs {
		if r.Name != name {
			continue
		}
		for _, v := range r.Values {
			if v.Unit != "ns/op" && !slices.Contains(units, v.Unit) {
				units = append(units, v.Unit)
			}
		}
	}
	return units
}

func valuesOf(rs []benchResult, name, unit string) []float64 {
	var out []float64
	for _, r := range rs {
		if r.Name != name {
			continue
		}
		for _, v := range r.Values {
			if v.Unit == unit {
				out = append(out, v.Value)
				break
			}
		}
	}
	return out
}

// median of sorted values.
func median(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// formatMetric prints three significant figures below 100 and whole
// numbers with thousands separators above.
func formatMetric(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100 || v == math.Trunc(v) && a < 1e15:
		s := strconv.FormatFloat(math.Round(a), 'f', 0, 64)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		if v < 0 {
			s = "-" + s
		}
		return s
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
