package node

import (
	"context"
	"runtime"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
)

// BenchmarkStartToAdmitted measures the time from node.New to the new node
// being admitted by a running peer on loopback TCP (both directions decided),
// beside the bare TCP+Noise+yamux connect of two plain libp2p hosts in the
// same run.
func BenchmarkStartToAdmitted(b *testing.B) {
	c := newCA(b, "General Hospital")
	now := time.Now()
	anchor := startBenchNode(b, c, c.enrol(b, "anchor", now), nil)
	defer anchor.Close()
	devs := make([]device, b.N)
	for i := range devs {
		devs[i] = c.enrol(b, "dev", now)
	}
	plainTarget, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		b.Fatal(err)
	}
	defer plainTarget.Close()
	var plain time.Duration
	b.ResetTimer()
	for i := range b.N {
		n := startBenchNode(b, c, devs[i], anchor)
		for !(anchor.isAdmitted(n.ID()) && n.isAdmitted(anchor.ID())) {
			time.Sleep(100 * time.Microsecond)
		}
		b.StopTimer()
		n.Close()
		start := time.Now()
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Connect(context.Background(), peer.AddrInfo{ID: plainTarget.ID(), Addrs: plainTarget.Addrs()}); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(start)
		h.Close()
		b.StartTimer()
	}
	admitted := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
	base := float64(plain.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(admitted, "ms/admitted")
	b.ReportMetric(base, "ms/plain_connect")
	b.ReportMetric(admitted/base, "ratio_vs_plain")
}

func startBenchNode(b *testing.B, c *testCA, d device, boot *Node) *Node {
	trust, _ := identity.NewTrust(c.roots)
	cfg := Config{Key: d.key, Chain: d.bundle, Trust: trust, Store: dssync.MutexWrap(ds.NewMapDatastore()),
		Listen: []string{"/ip4/127.0.0.1/tcp/0"}}
	if boot != nil {
		bootstrap(boot)(&cfg)
	}
	n, err := New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkIdleHeap reports the heap of one idle node with 10 admitted peers
// (target < 30 MB): eleven nodes in one process, heap divided by eleven.
func BenchmarkIdleHeap(b *testing.B) {
	c := newCA(b, "General Hospital")
	now := time.Now()
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		hub := startBenchNode(b, c, c.enrol(b, "hub", now), nil)
		nodes := []*Node{hub}
		for range 10 {
			nodes = append(nodes, startBenchNode(b, c, c.enrol(b, "dev", now), hub))
		}
		for admittedCount(hub) < 10 {
			time.Sleep(10 * time.Millisecond)
		}
		// Let peer exchange settle into a full mesh, then idle.
		deadline := time.Now().Add(20 * time.Second)
		for _, n := range nodes {
			for admittedCount(n) < 10 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		time.Sleep(2 * time.Second) // idle period being measured, not synchronisation
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perNode := float64(after.HeapAlloc-before.HeapAlloc) / float64(len(nodes))
		b.ReportMetric(perNode/(1<<20), "MiB_heap/node")
		b.ReportMetric(float64(runtime.NumGoroutine())/float64(len(nodes)), "goroutines/node")
		b.ReportMetric(float64(admittedCount(hub)), "hub_peers")
		for _, n := range nodes {
			n.Close()
		}
	}
}
