package simulations

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/medmesh/medmesh/crdt"
)

// TestEnginesAgree runs one small world on both engines. They share the
// world (moves, messages), the crdt and the reconciliation code; they
// differ in the gossip model (the DES pushes to every co-located
// subscriber; the full engine runs gossipsub over at most Degree
// connections per arrival) and in time: the full engine's own processing
// is stretched by the compression (scale 60: 1 ms of CPU is 0.06 s of
// scenario), and a busy machine — CI runs every package at once under the
// race detector — may miss a gossip push, leaving a hop to the next
// anti-entropy round. The clock is elastic: a machine too busy to apply
// an event on time stretches the wall time, not the scenario.
// Latencies in this scenario are set by walking (minutes), so we require,
// over messages sent in the first three quarters of the run (the rest may
// still be in flight at the end), the same delivery ratio within 0.03, and
// mean latencies within 15% or two anti-entropy periods, whichever is
// larger, plus the lag.
func TestEnginesAgree(t *testing.T) {
	s := Builtins["basement"]
	s.Hours, s.Messages = 1, 30
	w, err := Build(s, 5)
	if err != nil {
		t.Fatal(err)
	}
	early := func(r *Result) Summary {
		r.Messages = slices.DeleteFunc(r.Messages, func(m Message) bool { return m.Sent > 0.75*s.Hours*3600 })
		return Summarise(r)
	}
	des := early(w.RunDES(nil))
	fr, err := w.RunFull(FullOptions{Scale: 60, Elastic: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := early(fr)
	if len(fr.LagBy) != LagParts || slices.Max(fr.LagBy) != fr.Lag {
		t.Fatalf("lag %v s, by part of the run %v", fr.Lag, fr.LagBy)
	}
	t.Logf("des:  delivery %.3f, latency mean %.0f s, median %.0f s, hops %.2f", des.DeliveryRatio, des.LatencyMean, des.LatencyMedian, des.HopsMean)
	t.Logf("full: delivery %.3f, latency mean %.0f s, median %.0f s, hops %.2f, lag %.0f s", full.DeliveryRatio, full.LatencyMean, full.LatencyMedian, full.HopsMean, fr.Lag)
	if math.Abs(des.DeliveryRatio-full.DeliveryRatio) > 0.03 {
		t.Fatalf("delivery ratios differ: des %.3f, full %.3f", des.DeliveryRatio, full.DeliveryRatio)
	}
	if d := math.Abs(des.LatencyMean - full.LatencyMean); d > max(0.15*des.LatencyMean, 2*s.SyncSeconds)+fr.Lag {
		t.Fatalf("mean latencies differ by %.0f s: des %.0f, full %.0f", d, des.LatencyMean, full.LatencyMean)
	}
	for _, m := range fr.Messages {
		if m.Delivered >= 0 && m.Delivered < m.Oracle {
			t.Fatalf("full engine delivered before the oracle allows: %+v", m)
		}
	}
}

// TestFullRevocationPartition: real CRLs over real gossip and admission;
// the same outcome checks as the DES, on the elastic clock (the outcome,
// not the machine's speed, is under test).
func TestFullRevocationPartition(t *testing.T) {
	s := Builtins["revocation-partition"]
	s.Messages = 80
	r, err := RunFull(s, 4, FullOptions{Scale: 600, Elastic: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkRevocationPartition(t, r)
}

// BenchmarkFullBasement runs the basement scenario on the full stack with
// its device groups multiplied: one hour of scenario time in one minute of
// wall time (scale 60), messages in the first 45 minutes. The discrete-event
// engine runs the same world as the reference: "missed-vs-des" counts
// deliveries the DES made and the full stack did not (0: every message
// that the protocol delivers in virtual time arrived); lag is how late the
// machine ran its events.
func BenchmarkFullBasement(b *testing.B) {
	for _, k := range []int{1, 2, 4, 8} {
		s := basementTimes(k)
		b.Run(fmt.Sprintf("devices=%d", 9*k), func(b *testing.B) { fullVsDES(b, s, 60) })
	}
}

// BenchmarkFullBasement64 is the at-scale target for one group: the
// basement multiplied by 8 (72 devices, one conversation of 64 members
// and 8 anchors) at scale 60. On time means lag-periods ≤ 1 (the machine
// ran at most one anti-entropy period late), delivery equal to the DES's
// and missed-vs-des 0; "on-time" reports all three as 1 or 0.
func BenchmarkFullBasement64(b *testing.B) {
	b.Run("devices=72", func(b *testing.B) { fullVsDES(b, basementTimes(8), 60) })
}

// basementTimes is the basement with its device groups multiplied by k,
// one hour, messages in the first 45 minutes.
func basementTimes(k int) Scenario {
	s := Builtins["basement"]
	s.Hours, s.Messages, s.BurstMinutes = 1, 60, 45
	s.Devices = slices.Clone(s.Devices)
	for i := range s.Devices {
		s.Devices[i].Count *= k
	}
	return s
}

// fullVsDES runs s (seed 1) on the full stack at the given scale (or
// MEDMESH_SCALE) and the DES on the same world, and reports delivery, what
// the full stack missed that the DES delivered, and how late the machine
// ran — in scenario seconds and in anti-entropy periods, over the run and
// after its first twelfth. MEDMESH_RECEIPT_WINDOW (a Go duration of
// scenario time) replaces the devices' receipt window, to measure what
// receipts cost.
func fullVsDES(b *testing.B, s Scenario, scale float64) {
	if v, err := strconv.ParseFloat(os.Getenv("MEDMESH_SCALE"), 64); err == nil && v > 0 {
		scale = v
	}
	if p := os.Getenv("MEDMESH_FULL_CPUPROFILE"); p != "" {
		// The DES and world building are not in this profile: only the
		// full engine's run.
		defer func() { fullCPUProfile = "" }()
		fullCPUProfile = p
	}
	var rw time.Duration // MEDMESH_RECEIPT_WINDOW=600s: receipts coalesced over 10 scenario minutes
	if v, err := time.ParseDuration(os.Getenv("MEDMESH_RECEIPT_WINDOW")); err == nil && v > 0 {
		rw = v
	}
	for b.Loop() {
		w, err := Build(s, 1)
		if err != nil {
			b.Fatal(err)
		}
		ref := w.RunDES(nil)
		r, err := runFullProfiled(w, FullOptions{Scale: scale, ReceiptWindow: rw})
		if err != nil {
			b.Fatal(err)
		}
		missed := 0
		for i, m := range ref.Messages {
			if m.Delivered >= 0 && r.Messages[i].Delivered < 0 {
				missed++
			}
		}
		sum := Summarise(r)
		b.ReportMetric(sum.DeliveryRatio, "delivery")
		b.ReportMetric(Summarise(ref).DeliveryRatio, "des-delivery")
		b.ReportMetric(float64(missed), "missed-vs-des")
		b.ReportMetric(r.Lag, "lag-s")
		b.ReportMetric(r.Lag/s.SyncSeconds, "lag-periods")
		// After the first twelfth of the run: whether the machine fell
		// behind only while the devices first met, or all along.
		b.ReportMetric(slices.Max(r.LagBy[1:]), "lag-after-1st-12th-s")
		onTime := 0.0
		if r.Lag <= s.SyncSeconds && missed == 0 && math.Abs(sum.DeliveryRatio-Summarise(ref).DeliveryRatio) < 1e-9 {
			onTime = 1
		}
		b.ReportMetric(onTime, "on-time")
		b.ReportMetric(float64(devices(s)), "devices")
		b.ReportMetric(r.Wall.Seconds(), "wall-s")
		b.ReportMetric(sum.LatencyMean, "latency-mean-s")
		b.ReportMetric(Summarise(ref).LatencyMean, "des-latency-mean-s")
		// The machine's cost of the protocol: CPU time of the process
		// while the events ran, per (op, device) pair taken in — every
		// op, receipts included, once per device that took it in.
		b.ReportMetric(float64(r.delivered), "op-deliveries")
		b.ReportMetric(float64(r.sessions), "sync-sessions")
		b.ReportMetric(float64(r.SyncByFrame["recon"])/1e6, "recon-MB") // reconciliation frames, both ways
		if r.delivered > 0 {
			b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.delivered), "cpu-us/op-delivery")
		}
	}
}

// BenchmarkFullTeams runs k basements side by side on the full stack: in
// each, two doctors and six ward staff with a conversation of their own
// (the team's), all sharing the same basement, ward and corridor, and one
// site anchor per eight teams — so the mesh is k times larger and every
// device meets other teams' devices. One hour at scale 60, 60 messages per team; the DES on the same
// world is the reference, as in BenchmarkFullBasement.
// MEDMESH_TEAMS=K runs only k = K.
func BenchmarkFullTeams(b *testing.B) {
	ks := []int{8, 16, 32}
	if k, err := strconv.Atoi(os.Getenv("MEDMESH_TEAMS")); err == nil && k > 0 {
		ks = []int{k}
	}
	for _, k := range ks {
		s := teams(k)
		b.Run(fmt.Sprintf("devices=%d", devices(s)), func(b *testing.B) { fullVsDES(b, s, 60) })
	}
}

// BenchmarkFullTeams500 is the at-scale target for a large mesh: 62 teams
// (496 team devices and 8 anchors, 504 in all) at scale 15 (4 minutes of
// wall time for the hour, plus setup and the DES). On time as in
// BenchmarkFullBasement64.
func BenchmarkFullTeams500(b *testing.B) {
	s := teams(62)
	b.Run(fmt.Sprintf("devices=%d", devices(s)), func(b *testing.B) { fullVsDES(b, s, 15) })
}

// teams is k basements side by side, each team its own conversation, one
// site anchor per eight teams; one hour, 60 messages per team in the first
// 45 minutes.
func teams(k int) Scenario {
	s := Builtins["basement"]
	s.Hours, s.Messages, s.BurstMinutes = 1, 60*k, 45
	s.Devices = nil
	for j := range k {
		for _, g := range Builtins["basement"].Devices {
			g.Name = fmt.Sprintf("%s-%d", g.Name, j+1)
			switch {
			case !g.Anchor:
				g.Conversation = fmt.Sprintf("team-%d", j+1)
			case j%8 != 0:
				continue // one site anchor per eight teams
			}
			s.Devices = append(s.Devices, g)
		}
	}
	return s
}

// fullCPUProfile, when set (MEDMESH_FULL_CPUPROFILE=FILE), is where
// runFullProfiled writes a CPU profile of the full engine's run alone.
var fullCPUProfile string

func runFullProfiled(w *World, opt FullOptions) (*Result, error) {
	if fullCPUProfile != "" {
		fh, err := os.Create(fullCPUProfile)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		if err := pprof.StartCPUProfile(fh); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	return w.RunFull(opt, nil)
}

func devices(s Scenario) int {
	n := 0
	for _, g := range s.Devices {
		n += g.Count
	}
	return n
}

// BenchmarkFullIdleHeap starts n idle nodes (node, gossipsub, mesh
// service; stores in one on-disk pebble) on a mocknet, each connected to about 8
// others, waits until the staff directory has spread, and reports heap per
// node beyond what n bare libp2p mocknet hosts with the same connections
// take. Every device holds a directory entry per colleague, so the heap
// per node is a fixed part plus a part per colleague; two sizes separate
// them. MEDMESH_HEAP_PROFILE=FILE writes a heap profile at the peak;
// MEDMESH_IDLE_NODES=N adds a run of N nodes (1000 takes minutes and GBs).
func BenchmarkFullIdleHeap(b *testing.B) {
	sizes := []int{100, 200}
	if n, err := strconv.Atoi(os.Getenv("MEDMESH_IDLE_NODES")); err == nil && n > 1 {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { idleHeap(b, n) })
	}
}

func idleHeap(b *testing.B, n int) {
	heap := func() float64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc)
	}
	wire := func(mn mocknet.Mocknet, ids []peer.ID) {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range ids {
			for range 4 { // 4 dialled + about 4 accepted
				j := rng.IntN(len(ids))
				if j != i {
					mn.LinkPeers(ids[i], ids[j])
					mn.ConnectPeers(ids[i], ids[j])
				}
			}
		}
	}
	for b.Loop() {
		base := heap()
		mn := mocknet.New()
		var ids []peer.ID
		for range n {
			h, err := mn.GenPeer()
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, h.ID())
		}
		wire(mn, ids)
		bare := heap() - base
		mn.Close()

		s := Scenario{Name: "idle", Hours: 1, Places: []string{"ward"}, LinkMS: 1, LinkKBps: 8192, SyncSeconds: 30,
			Devices: []Group{{Name: "d", Count: n, Home: "ward"}}}
		w, err := Build(s, 1)
		if err != nil {
			b.Fatal(err)
		}
		base = heap()
		f := &full{w: w, opt: FullOptions{Scale: 1, Degree: 8}, res: newResult(w, "full"), mn: mocknet.New(), byID: map[peer.ID]int{},
			conns: map[[2]int]mocknet.Link{}, dups: map[crdt.OpID]int{}}
		f.clock.start(1)
		if err := f.startNodes(); err != nil {
			b.Fatal(err)
		}
		ids = ids[:0]
		for _, d := range f.devs {
			ids = append(ids, d.n.ID())
		}
		wire(f.mn, ids)
		// Wait until the directory stops growing (entries spread at
		// admission, one hop, and on the trust topic) and then for
		// gossipsub's message history and IDONTWANT windows to pass: an
		// idle node holds no recent messages.
		p := pubsub.DefaultGossipSubParams()
		quiet := time.Duration(p.HistoryLength+1) * p.HeartbeatInterval
		entries := func() int {
			t := 0
			for _, d := range f.devs {
				t += d.n.DirectorySize()
			}
			return t
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		last, since := -1, time.Now()
		err = waitFor(ctx, func() bool {
			if e := entries(); e != last {
				last, since = e, time.Now()
			}
			return time.Since(since) > quiet
		})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		full := heap() - base
		if p := os.Getenv("MEDMESH_HEAP_PROFILE"); p != "" {
			fh, _ := os.Create(p)
			pprof.WriteHeapProfile(fh)
			fh.Close()
		}
		f.close()
		b.ReportMetric(bare/float64(n)/(1<<20), "libp2p-MiB/node")
		b.ReportMetric(full/float64(n)/(1<<20), "medmesh-MiB/node")
		b.ReportMetric((full-bare)/float64(n)/(1<<20), "beyond-libp2p-MiB/node")
		b.ReportMetric(float64(last)/float64(n), "directory-entries/node")
	}
}
