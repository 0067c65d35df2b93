package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

// soakConfig is one soak's shape. The short form (the default, run by CI
// under -race) fits in two minutes of wall time on two loaded cores; the
// long form (MEDMESH_SOAK=DURATION) runs the chaos phase for DURATION.
type soakConfig struct {
	nodes       int
	witnesses   int           // nodes 0..witnesses-1 are never stopped: their memory is measured across the whole run
	every       time.Duration // one message POSTed every this long, to a random live node
	warmup      time.Duration // load without restarts, before the baseline
	chaos       time.Duration // load with restarts
	chaosEvery  time.Duration // a restart decision this often
	maxDown     int           // never more nodes down at once
	maxDownFor  time.Duration // a stopped node stays down for a random time up to this
	settled     time.Duration // a restarted node counts for memory once up this long
	restart     time.Duration // deadline for a launched node to serve its API
	converge    time.Duration // deadline for every node to hold every acknowledged message
	sampleEvery time.Duration // log node 0's memory this often during the chaos
	growth      float64       // allowed final/baseline ratio of heap, RSS and goroutines
	// History every replica keeps in memory (the op DAG): allowed growth of
	// heap and RSS for each message acknowledged after the warm-up. Measured:
	// about 27 KiB of heap per message in a conversation of ten (a message
	// and nine receipts) in a 5-minute run; the allowance leaves room for
	// -race and GC timing, not for a leak that grows with churn.
	heapPerMessageKiB, rssPerMessageKiB int
}

func soakSettings(t *testing.T) soakConfig {
	c := soakConfig{nodes: 10, witnesses: 2, every: 200 * time.Millisecond,
		warmup: 15 * time.Second, chaos: 40 * time.Second, chaosEvery: 3 * time.Second,
		maxDown: 2, maxDownFor: 6 * time.Second, settled: 15 * time.Second,
		restart: 60 * time.Second, converge: 60 * time.Second, sampleEvery: 20 * time.Second, growth: 2,
		heapPerMessageKiB: 96, rssPerMessageKiB: 64}
	if raceEnabled {
		c.rssPerMessageKiB = 512 // shadow memory
	}
	if v := os.Getenv("MEDMESH_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("MEDMESH_SOAK=%q: want a duration such as 10m", v)
		}
		c.chaos, c.warmup, c.settled, c.restart, c.converge, c.sampleEvery = d, 30*time.Second, 30*time.Second, 3*time.Minute, 3*time.Minute, time.Minute
	}
	return c
}

// TestSoak runs ten real `medmesh run` processes on loopback in one
// conversation under a steady message load while nodes are stopped with
// SIGTERM or SIGKILL and restarted on the same directory, never more than
// two down at once. Afterwards every node must hold every message whose
// POST returned an id, and all the same messages; and the nodes' memory
// must stay within stated bounds (soakConfig: growth and the allowances
// per message):
// heap live after GC (the Go runtime's gctrace) and RSS (/proc) against
// each node's steady state after warm-up, goroutines (a SIGQUIT stack dump
// at the end) against a node restarted fresh after the chaos.
// MEDMESH_SOAK=10m runs the long form; MEDMESH_SOAK_SEED replays a run's
// choices of nodes, signals and downtimes (not its timing).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped in -short")
	}
	cfg := soakSettings(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MEDMESH_SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("MEDMESH_SOAK_SEED=%q: %v", v, err)
		}
	}
	t.Logf("soak: %d nodes, a message every %v, warm-up %v, chaos %v, seed %d", cfg.nodes, cfg.every, cfg.warmup, cfg.chaos, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	bin, err := exec.LookPath("medmesh") // the test binary, put in PATH by testscript.Main
	if err != nil {
		t.Fatalf("medmesh command from TestMain: %v", err)
	}
	began := time.Now()

	m := &soakMesh{bin: bin, cfg: cfg, nodes: enrolSoakNodes(t, cfg.nodes)}
	m.live = make([]*proc, cfg.nodes)
	for i, n := range m.nodes {
		var boot []string
		if i > 0 {
			boot = append(boot, m.nodes[i-1].addr())
		}
		if i > 1 {
			boot = append(boot, m.nodes[(i-1)/2].addr())
		}
		m.launch(t, n, boot)
		m.awaitUp(t, n)
	}
	t.Logf("soak: %d nodes up in %v", cfg.nodes, time.Since(began).Round(time.Millisecond))

	// One conversation of all ten, made by node 0 once its directory knows
	// everyone; then every member has it and can send in it.
	creator := m.nodes[0].p
	var members []string
	for _, n := range m.nodes[1:] {
		members = append(members, n.p.id)
	}
	var conv struct{ ID string }
	eventually(t, 60*time.Second, "node 0 creates a conversation with all nine colleagues", func() bool {
		return creator.call(t, "POST", "/api/v1/conversations", map[string]any{"title": "soak", "members": members}, &conv) == http.StatusCreated
	})
	msgs := "/api/v1/conversations/" + conv.ID + "/messages"
	load := &soakLoad{msgs: msgs, ids: map[string]soakAck{}, failures: map[string]int{}}
	for _, n := range m.nodes {
		text := fmt.Sprintf("hello from node %d", n.i)
		eventually(t, 60*time.Second, fmt.Sprintf("node %d joins the conversation and sends in it", n.i), func() bool {
			var res struct{ ID string }
			if n.p.call(t, "POST", msgs, map[string]any{"text": text}, &res) != http.StatusCreated {
				return false
			}
			load.ack(res.ID, text, n.i)
			return true
		})
	}
	t.Logf("soak: conversation of %d ready at %v", cfg.nodes, time.Since(began).Round(time.Millisecond))

	ctx, stopLoad := context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		load.run(ctx, m, cfg.every, rand.New(rand.NewPCG(seed, 1)))
	}()
	t.Cleanup(func() { stopLoad(); <-loadDone })

	// Warm-up: load, no restarts; then each node's steady state.
	warm := time.Now()
	<-time.After(cfg.warmup) // a measured period of load, not a wait for a condition
	base := make([]soakMem, cfg.nodes)
	baseMsgs := load.count()
	for _, n := range m.nodes {
		base[n.i] = m.measure(n, warm.Add(cfg.warmup/2))
		t.Logf("soak: node %d steady state after warm-up (%d messages): %v", n.i, baseMsgs, base[n.i])
	}

	// Chaos: every chaosEvery, stop one more node (SIGTERM or SIGKILL)
	// unless maxDown are down or on their way up; bring each back after a
	// random downtime. Starting and stopping nodes do not hold the loop up.
	signals := []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}
	rng.Shuffle(2, func(i, j int) { signals[i], signals[j] = signals[j], signals[i] })
	chaosEnd := time.Now().Add(cfg.chaos)
	nextStop, nextSample := time.Now(), time.Now().Add(cfg.sampleEvery)
	tick := time.NewTicker(100 * time.Millisecond) // how often the loop looks at its nodes
	defer tick.Stop()
	for now := time.Now(); now.Before(chaosEnd); now = <-tick.C {
		m.step(t, now, rng)
		if now.After(nextSample) {
			nextSample = now.Add(cfg.sampleEvery)
			t.Logf("soak: +%v, %d messages, slowest restart %v; node 0: %v", now.Sub(warm).Round(time.Second), load.count(),
				m.slowest.Round(time.Millisecond), m.measure(m.nodes[0], now.Add(-cfg.sampleEvery)))
		}
		if now.Before(nextStop) {
			continue
		}
		nextStop = now.Add(cfg.chaosEvery)
		var candidates []*soakNode
		down := 0
		for _, n := range m.nodes {
			switch {
			case n.state != nodeUp:
				down++
			case n.i >= cfg.witnesses:
				candidates = append(candidates, n)
			}
		}
		if down < cfg.maxDown && len(candidates) > 0 {
			n := candidates[rng.IntN(len(candidates))]
			sig := signals[(m.stops[syscall.SIGTERM]+m.stops[syscall.SIGKILL])%2] // both kinds, whatever the seed
			m.stop(t, n, sig, time.Duration(rng.Int64N(int64(cfg.maxDownFor))))
		}
	}

	if m.stops[syscall.SIGTERM] == 0 || m.stops[syscall.SIGKILL] == 0 {
		t.Fatalf("stops during the chaos: %v; the chaos phase is too short for chaosEvery", m.stops)
	}

	// The chaos is over: stop the load, bring every node back, and restart
	// one more with SIGTERM as the reference for goroutines.
	stopLoad()
	<-loadDone
	var ref *soakNode
	for _, n := range m.nodes[cfg.witnesses:] {
		if n.state == nodeUp {
			ref = n // there is one: at most maxDown are not
			break
		}
	}
	m.stop(t, ref, syscall.SIGTERM, 0)
	for end := time.Now().Add(cfg.restart); ; {
		m.step(t, time.Now(), nil)
		if m.allUp() {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("nodes not all back up within %v of the chaos", cfg.restart)
		}
		<-tick.C
	}
	acked := load.acked()
	t.Logf("soak: chaos over at %v: %d SIGTERM, %d SIGKILL, %d restarts (slowest %v); %d messages acknowledged; POSTs failed: %v; no node up: %d times",
		time.Since(began).Round(time.Millisecond), m.stops[syscall.SIGTERM], m.stops[syscall.SIGKILL], m.restarts,
		m.slowest.Round(time.Millisecond), len(acked), load.failures, load.noneUp)

	// Every node holds every acknowledged message, and all hold the same.
	took := m.converge(t, msgs, acked, cfg.converge)
	t.Logf("soak: all %d nodes hold all %d acknowledged messages %v after every node was back", cfg.nodes, len(acked), took.Round(time.Millisecond))

	// Memory: nodes up long enough against their own steady state, with an
	// allowance for the history every replica keeps.
	end := time.Now()
	added := len(acked) - baseMsgs
	for _, n := range m.nodes {
		up := end.Sub(n.since)
		if up < cfg.settled {
			t.Logf("soak: node %d up only %v: memory not measured", n.i, up.Round(time.Second))
			continue
		}
		fin := m.measure(n, end.Add(-cfg.settled))
		t.Logf("soak: node %d after the run (%d messages, up %v, %d restarts): %v", n.i, len(acked), up.Round(time.Second), n.restarts, fin)
		if over := fin.over(base[n.i], cfg.growth, added, cfg); over != "" {
			t.Errorf("node %d: %s beyond %.0f× its steady state after warm-up + (%d heap, %d RSS) KiB for each of %d messages since: %v, then %v",
				n.i, over, cfg.growth, cfg.heapPerMessageKiB, cfg.rssPerMessageKiB, added, base[n.i], fin)
		}
	}

	// Goroutines: a stack dump of every node (SIGQUIT) against the node
	// restarted fresh after the chaos. All are frozen (SIGSTOP) first, so
	// no node's count drops as the ones dumped before it disconnect.
	for _, n := range m.nodes {
		if err := syscall.Kill(n.p.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("node %d: SIGSTOP: %v", n.i, err)
		}
	}
	counts := make([]int, cfg.nodes)
	for _, n := range m.nodes {
		counts[n.i] = m.goroutines(t, n)
	}
	t.Logf("soak: goroutines after the run: %v (node %d restarted fresh after the chaos: %d)", counts, ref.i, counts[ref.i])
	for i, c := range counts {
		if float64(c) > cfg.growth*float64(counts[ref.i]) {
			t.Errorf("node %d: %d goroutines, beyond %.0f× the %d of node %d restarted fresh after the chaos", i, c, cfg.growth, counts[ref.i], ref.i)
		}
	}
	t.Logf("soak: done in %v", time.Since(began).Round(time.Millisecond))
}

type nodeState int

const (
	nodeUp       nodeState = iota
	nodeStopping           // signalled, not yet exited
	nodeDown               // exited, waiting out its downtime
	nodeStarting           // launched, not yet serving
)

// soakNode is one device directory and its current process.
type soakNode struct {
	i        int
	dir      string
	state    nodeState
	p        *proc // the current process (also while stopping or starting)
	sig      syscall.Signal
	stopped  time.Time // when the stop signal was sent
	downTill time.Time
	downFor  time.Duration
	since    time.Time // when p was launched
	procs    []*proc   // every process run on dir, for logs
	restarts int
}

func (n *soakNode) addr() string { return n.p.listen + "/p2p/" + n.p.id }

// soakMesh is the set of nodes. The test goroutine starts and stops them;
// the load goroutine reads the live ones (live) under mu.
type soakMesh struct {
	bin      string
	cfg      soakConfig
	nodes    []*soakNode
	stops    map[syscall.Signal]int
	restarts int
	slowest  time.Duration // the longest restart, launch to serving

	mu   sync.Mutex
	live []*proc // indexed like nodes; nil unless up
}

// enrolSoakNodes makes a CA and n enrolled device directories.
func enrolSoakNodes(t *testing.T, n int) []*soakNode {
	t.Helper()
	root := t.TempDir()
	var out bytes.Buffer
	e := testEnv(&out)
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	var nodes []*soakNode
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("dev%d", i))
		cli(t, e, "init", "--dir", dir, "--name", fmt.Sprintf("Dr %d", i), "--staff-id", fmt.Sprintf("S%d", i), "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"))
		// Make the store's key file with a cheap KDF: `run` then only opens it.
		st, err := store.Open(filepath.Join(dir, device.StoreDir), []byte("device-secret"),
			store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		nodes = append(nodes, &soakNode{i: i, dir: dir})
	}
	return nodes
}

// launch runs `medmesh run` on n's directory without waiting for it, in
// its own process group, with the Go runtime's GC trace on stderr, stacks
// of every goroutine on SIGQUIT and info-level logs.
func (m *soakMesh) launch(t *testing.T, n *soakNode, boot []string) {
	t.Helper()
	var args []string
	for _, b := range boot {
		args = append(args, "--bootstrap", b)
	}
	cmd := procCmd(m.bin, n.dir, args...)
	cmd.Env = append(cmd.Env, "MEDMESH_LOG=info", "GODEBUG=gctrace=1", "GOTRACEBACK=all")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.since = time.Now() // before the runtime starts: gctrace times count from here
	n.p = launchCmd(t, cmd, n.dir)
	n.state = nodeStarting
	n.procs = append(n.procs, n.p)
}

// awaitUp waits until n's process serves (initial start only).
func (m *soakMesh) awaitUp(t *testing.T, n *soakNode) {
	t.Helper()
	for end := time.Now().Add(m.cfg.restart); n.state != nodeUp; <-time.After(50 * time.Millisecond) {
		m.step(t, time.Now(), nil)
		if time.Now().After(end) {
			t.Fatalf("node %d not serving within %v:\n%s", n.i, m.cfg.restart, tail(n.p.logs.String(), 6000))
		}
	}
}

// stop signals n's process group; step sees it exit.
func (m *soakMesh) stop(t *testing.T, n *soakNode, sig syscall.Signal, downFor time.Duration) {
	t.Helper()
	m.mu.Lock()
	m.live[n.i] = nil
	m.mu.Unlock()
	if m.stops == nil {
		m.stops = map[syscall.Signal]int{}
	}
	m.stops[sig]++
	n.state, n.sig, n.stopped, n.downFor = nodeStopping, sig, time.Now(), downFor
	if err := syscall.Kill(-n.p.cmd.Process.Pid, sig); err != nil {
		t.Errorf("node %d: %v: %v", n.i, sig, err)
	}
}

// step moves every node on: a stopped process that exited goes down (a
// SIGTERM must end it cleanly within the shutdown grace, with slack for
// -race), a down node whose downtime is over is launched, bootstrapped to
// up to two live nodes (rng nil: all at once, to any), and a launched one
// that serves is up.
func (m *soakMesh) step(t *testing.T, now time.Time, rng *rand.Rand) {
	t.Helper()
	for _, n := range m.nodes {
		switch n.state {
		case nodeStopping:
			select {
			case <-n.p.exited:
				if code := n.p.cmd.ProcessState.ExitCode(); n.sig == syscall.SIGTERM && code != 0 {
					t.Errorf("node %d exited %d after SIGTERM:\n%s", n.i, code, crashReport(n.p.logs.String()))
				}
				n.state, n.downTill = nodeDown, now.Add(n.downFor)
			default:
				if n.sig == syscall.SIGTERM && now.Sub(n.stopped) > 3*shutdownGrace {
					t.Errorf("node %d still running %v after SIGTERM:\n%s", n.i, 3*shutdownGrace, tail(n.p.logs.String(), 4000))
					syscall.Kill(-n.p.cmd.Process.Pid, syscall.SIGKILL)
					n.sig = syscall.SIGKILL
				}
			}
		case nodeDown:
			if rng == nil || now.After(n.downTill) {
				m.launch(t, n, m.bootFor(n, rng))
				n.restarts++
				m.restarts++
			}
		case nodeStarting:
			select {
			case in := <-n.p.ready:
				n.p.up(t, in)
				n.state = nodeUp
				if n.restarts > 0 {
					m.slowest = max(m.slowest, now.Sub(n.since))
				}
				m.mu.Lock()
				m.live[n.i] = n.p
				m.mu.Unlock()
			case <-n.p.exited:
				t.Fatalf("node %d exited while starting:\n%s", n.i, tail(n.p.logs.String(), 6000))
			default:
				if now.Sub(n.since) > m.cfg.restart {
					t.Fatalf("node %d not serving %v after its start:\n%s", n.i, m.cfg.restart, tail(n.p.logs.String(), 6000))
				}
			}
		}
	}
}

func (m *soakMesh) allUp() bool {
	for _, n := range m.nodes {
		if n.state != nodeUp {
			return false
		}
	}
	return true
}

// bootFor picks up to two live nodes other than n for it to bootstrap to
// (their addresses change with every restart); rng nil: the first two.
func (m *soakMesh) bootFor(n *soakNode, rng *rand.Rand) []string {
	var up []string
	for _, o := range m.nodes {
		if o != n && o.state == nodeUp {
			up = append(up, o.addr())
		}
	}
	if rng != nil {
		rng.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
	}
	return up[:min(2, len(up))]
}

// pick returns a random live process and its node's index.
func (m *soakMesh) pick(rng *rand.Rand) (*proc, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var up []int
	for i, p := range m.live {
		if p != nil {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		return nil, -1
	}
	i := up[rng.IntN(len(up))]
	return m.live[i], i
}

// converge polls every node until each holds every acknowledged message
// with its text and all hold the same message ids; it fails naming what
// is missing where, with the logs of those nodes.
func (m *soakMesh) converge(t *testing.T, msgs string, acked map[string]soakAck, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var report []string
	var behind []*soakNode
	for {
		report, behind = report[:0], behind[:0]
		var first []string
		for _, n := range m.nodes {
			var got []struct{ ID, Text, Withdrawn string }
			if code := n.p.call(t, "GET", msgs, nil, &got); code != http.StatusOK {
				report = append(report, fmt.Sprintf("node %d: GET messages: status %d", n.i, code))
				behind = append(behind, n)
				continue
			}
			have := map[string]bool{}
			var ids []string
			for _, g := range got {
				ids = append(ids, g.ID)
				if a, ok := acked[g.ID]; ok && g.Text == a.text && g.Withdrawn == "" {
					have[g.ID] = true
				}
			}
			var missing []string
			for id, a := range acked {
				if !have[id] {
					missing = append(missing, fmt.Sprintf("%s (%q, POSTed to node %d, acknowledged %s)", id, a.text, a.node, a.at.Format("15:04:05.000")))
				}
			}
			sort.Strings(ids)
			switch {
			case len(missing) > 0:
				sort.Strings(missing)
				report = append(report, fmt.Sprintf("node %d lacks %d of %d acknowledged messages: %s", n.i, len(missing), len(acked), strings.Join(missing[:min(len(missing), 20)], ", ")))
				behind = append(behind, n)
			case first == nil:
				first = ids
			case !slices.Equal(first, ids):
				report = append(report, fmt.Sprintf("node %d holds %d messages, node 0 %d: not the same set", n.i, len(ids), len(first)))
				behind = append(behind, n)
			}
		}
		if len(report) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			break
		}
		time.Sleep(250 * time.Millisecond) // polling interval
	}
	for _, n := range behind {
		for k, p := range n.procs {
			t.Logf("node %d (%s), process %d of %d, log tail:\n%s", n.i, p.id, k+1, len(n.procs), tail(p.logs.String(), 6000))
		}
	}
	t.Fatalf("not converged %v after the chaos:\n%s", within, strings.Join(report, "\n"))
	return 0
}

// soakAck is a message whose POST returned an id.
type soakAck struct {
	text string
	node int
	at   time.Time
}

// soakLoad POSTs messages to random live nodes at a fixed rate and records
// every acknowledged id.
type soakLoad struct {
	msgs     string
	mu       sync.Mutex
	ids      map[string]soakAck
	failures map[string]int // why POSTs got no id: "no response", "status 409"…
	noneUp   int
}

func (l *soakLoad) ack(id, text string, node int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids[id] = soakAck{text: text, node: node, at: time.Now()}
}

func (l *soakLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

func (l *soakLoad) acked() map[string]soakAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.ids)
}

// run sends until ctx is done: one message per tick, at most four POSTs
// in flight (a POST to a node being killed may take a while to fail).
func (l *soakLoad) run(ctx context.Context, m *soakMesh, every time.Duration, rng *rand.Rand) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, 4)
	client := &http.Client{Timeout: 10 * time.Second}
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p, i := m.pick(rng)
		if p == nil {
			l.mu.Lock()
			l.noneUp++
			l.mu.Unlock()
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			text := fmt.Sprintf("soak %d via node %d", seq, i)
			id, err := postSoakMessage(ctx, client, p, l.msgs, text)
			if err != nil {
				l.mu.Lock()
				l.failures[err.Error()]++
				l.mu.Unlock()
				return
			}
			l.ack(id, text, i)
		}()
	}
}

// postSoakMessage sends one message; an id comes back only with 201. The
// error says why not, in a few stable words (a map key of soakLoad).
func postSoakMessage(ctx context.Context, client *http.Client, p *proc, msgs, text string) (string, error) {
	body, _ := json.Marshal(map[string]any{"text": text})
	req, err := http.NewRequestWithContext(ctx, "POST", p.api+msgs, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", errors.New("no response") // the node is going down
	}
	defer resp.Body.Close()
	var res struct{ ID, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return "", fmt.Errorf("status %d, body cut short", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusCreated || res.ID == "" {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, res.Error)
	}
	return res.ID, nil
}

// soakMem is one process's memory: heap live after its GCs (the least in
// a window, from GODEBUG=gctrace=1) and RSS and OS threads (from /proc).
type soakMem struct {
	heapMB  int
	gcs     int // GCs in the window
	rssKiB  int
	threads int
}

func (s soakMem) String() string {
	return fmt.Sprintf("heap %d MB live after GC (least of %d GCs), RSS %.1f MiB, %d threads", s.heapMB, s.gcs, float64(s.rssKiB)/1024, s.threads)
}

// over names what grew beyond factor× base plus an allowance for the
// messages added since, or is empty.
func (s soakMem) over(base soakMem, factor float64, messages int, cfg soakConfig) string {
	var what []string
	if float64(s.heapMB*1024) > factor*float64(base.heapMB*1024)+float64(messages*cfg.heapPerMessageKiB) {
		what = append(what, "heap")
	}
	if float64(s.rssKiB) > factor*float64(base.rssKiB)+float64(messages*cfg.rssPerMessageKiB) {
		what = append(what, "RSS")
	}
	return strings.Join(what, " and ")
}

// measure reads n's current process: the smallest heap live after a GC
// since from (or the last one before, if none since) — what the process
// keeps, without what a GC amid a burst of sync still counted as live —
// and RSS and threads now.
func (m *soakMesh) measure(n *soakNode, from time.Time) soakMem {
	var s soakMem
	last := 0
	for _, g := range gcTrace(n.p.logs.String()) {
		if n.since.Add(g.at).Before(from) {
			last = g.liveMB
			continue
		}
		if s.gcs == 0 || g.liveMB < s.heapMB {
			s.heapMB = g.liveMB
		}
		s.gcs++
	}
	if s.gcs == 0 {
		s.heapMB = last
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.p.cmd.Process.Pid))
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "VmRSS:":
			s.rssKiB, _ = strconv.Atoi(f[1])
		case len(f) >= 2 && f[0] == "Threads:":
			s.threads, _ = strconv.Atoi(f[1])
		}
	}
	return s
}

// gcLine is one line of the Go runtime's GC trace, e.g.
// "gc 7 @2.048s 3%: 0.1+2+0.02 ms clock, ..., 12->13->6 MB, 14 MB goal, 0 MB stacks, 0 MB globals, 2 P".
var gcLine = regexp.MustCompile(`(?m)^gc \d+ @([0-9.]+)s .* (\d+)->(\d+)->(\d+) MB, `)

type gcEvent struct {
	at     time.Duration // since the process started
	liveMB int
}

func gcTrace(log string) []gcEvent {
	var out []gcEvent
	for _, f := range gcLine.FindAllStringSubmatch(log, -1) {
		secs, _ := strconv.ParseFloat(f[1], 64)
		live, _ := strconv.Atoi(f[4])
		out = append(out, gcEvent{at: time.Duration(secs * float64(time.Second)), liveMB: live})
	}
	return out
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// goroutines ends n's (stopped) process with SIGQUIT and counts the goroutines in
// the Go runtime's stack dump (GOTRACEBACK=all).
func (m *soakMesh) goroutines(t *testing.T, n *soakNode) int {
	t.Helper()
	m.mu.Lock()
	m.live[n.i] = nil
	m.mu.Unlock()
	before := len(n.p.logs.String())
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGCONT} {
		if err := syscall.Kill(n.p.cmd.Process.Pid, sig); err != nil {
			t.Fatalf("node %d: %v: %v", n.i, sig, err)
		}
	}
	select {
	case <-n.p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("node %d still running 30 s after SIGQUIT", n.i)
	}
	n.state = nodeDown
	k := len(goroutineHeader.FindAllStringIndex(n.p.logs.String()[before:], -1))
	if k == 0 {
		t.Fatalf("node %d: no goroutines in its SIGQUIT dump:\n%s", n.i, tail(n.p.logs.String(), 2000))
	}
	return k
}

// goroutineHeader starts each goroutine of a stack dump: "goroutine 7 [select]:".
var goroutineHeader = regexp.MustCompile(`(?m)^goroutine \d+ [^\n]*\[[^\n]*\]:$`)

// crashReport is the Go runtime's report in a log, from its "panic:" or
// "fatal error:" line (the goroutine that failed comes first), or else the
// log's tail.
func crashReport(log string) string {
	for _, head := range []string{"\npanic: ", "\nfatal error: "} {
		if i := strings.LastIndex(log, head); i >= 0 {
			return tail(log[:min(len(log), i+8000)], 8000+len(head))
		}
	}
	return tail(log, 4000)
}
