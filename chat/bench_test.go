package chat

import (
	"fmt"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/baseline"
)

var kib = strings.Repeat("x", 1024)

// chunk is how many ops a ratio benchmark runs between two stretches of its
// baseline (baseline.Interleave): about 5 ms of work.
const chunk = 100

// BenchmarkIngest: decode + verify + decrypt + apply of 1 KiB messages, in
// order, by a member replica; ratio_vs_raw against baseline.Receive, run
// between chunks of the messages.
func BenchmarkIngest(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "bench", bob)
	rb := w.join(bob, ra.Tag())
	deliver(b, envs, rb)
	msgs := make([][]byte, 0, b.N)
	for range b.N {
		out, _, err := split(ra.Send(kib, SendOptions{}))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, out...)
	}
	b.ResetTimer()
	next := 0
	raw := baseline.Interleave(b, len(msgs), chunk, func(n int) {
		for _, m := range msgs[next : next+n] {
			if err := rb.Receive(m); err != nil {
				b.Fatal(err)
			}
		}
		next += n
	}, baseline.Receive)
	rate := float64(len(msgs)) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "ops/s")
	b.ReportMetric(raw, "raw_ops/s")
	b.ReportMetric(rate/raw, "ratio_vs_raw")
}

// BenchmarkCreate: creating (and applying) 1 KiB messages; ratio_vs_raw
// against baseline.Send, run between chunks of the sends.
func BenchmarkCreate(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, _ := w.create(alice, "bench", bob)
	b.ResetTimer()
	faults := baseline.PageFaults()
	raw := baseline.Interleave(b, b.N, chunk, func(n int) {
		for range n {
			if _, _, err := split(ra.Send(kib, SendOptions{})); err != nil {
				b.Fatal(err)
			}
		}
	}, baseline.Send)
	faults = baseline.PageFaults() - faults
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "ops/s")
	b.ReportMetric(raw, "raw_ops/s")
	b.ReportMetric(rate/raw, "ratio_vs_raw")
	// Page faults taken while creating, and what one costs this machine
	// (a virtual machine can pay microseconds for each first touch of a
	// page, and a replica that keeps every op grows its heap).
	b.ReportMetric(float64(faults)/float64(b.N), "faults/op")
	b.ReportMetric(baseline.FaultCost(), "fault_us")
}

// BenchmarkMaterialise100k: the full state of a 100,000-op conversation,
// from its op store (time and allocations per materialisation).
func BenchmarkMaterialise100k(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, _ := w.create(alice, "bench", bob)
	for i := range 100_000 {
		if _, _, err := split(ra.Send(fmt.Sprint("message ", i), SendOptions{})); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ra.cache = nil
		if n := len(ra.State().Messages); n != 100_000 {
			b.Fatalf("%d messages", n)
		}
	}
}

// BenchmarkWelcome500: starting a new epoch for a 500-member group (one
// HPKE seal per member), beside 500 raw HPKE seals in the same run.
func BenchmarkWelcome500(b *testing.B) {
	w := newWorld(b)
	alice := w.device("alice")
	var members []peer.ID
	for i := range 499 {
		d := w.device(fmt.Sprint("m", i))
		members = append(members, d.ID)
		d.Prekeys.Current(w.now)
	}
	ra, _ := w.create(alice, "big", w.devicesExcept(alice)...)
	_ = members
	b.ResetTimer()
	for b.Loop() {
		if _, err := ra.rekey(append(members, alice.ID), false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/rekey")
}

// BenchmarkAuthorise: the authorisation of one message op — membership of
// its causal past (cached per view), effective removals, equivocation —
// in a group of 64 and of 500 members; and a full refresh (every op judged
// again, as after a removal arrives) per op of a 2,000-op conversation.
func BenchmarkAuthorise(b *testing.B) {
	for _, n := range []int{64, 500} {
		w := newWorld(b)
		alice := w.device("alice")
		for i := range n - 1 {
			w.device(fmt.Sprint("m", i)).Prekeys.Current(w.now)
		}
		ra, _ := w.create(alice, "big", w.devicesExcept(alice)...)
		var msgs []crdt.OpID
		for i := range 2000 {
			_, id, err := split(ra.Send(fmt.Sprint("message ", i), SendOptions{}))
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, id)
		}
		b.Run(fmt.Sprintf("op/members=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				id := msgs[i%len(msgs)]
				ra.authorise(id, ra.ops[id])
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/op")
		})
		b.Run(fmt.Sprintf("refresh/members=%d", n), func(b *testing.B) {
			for b.Loop() {
				ra.rebuild = true
				ra.refresh()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(ra.ops)), "µs/op")
		})
	}
}
