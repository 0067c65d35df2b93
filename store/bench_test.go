package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// BenchmarkBatchedPut writes 1 KiB values in batches of 100 (one fsync per
// batch) through the encrypting store and, in the same run, straight into
// pebble. ratio_vs_raw = encrypted puts/s ÷ raw puts/s (target ≥ 0.6).
func BenchmarkBatchedPut(b *testing.B) {
	ctx := context.Background()
	raw, err := pebbleds.NewDatastore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	enc, err := Open(b.TempDir(), pass, fastKDF)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	val := make([]byte, 1024)
	rand.Read(val) // incompressible, like real message payloads after e2e
	write := func(d ds.Batching, round int) {
		bt, err := d.Batch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 100 {
			if err := bt.Put(ctx, ds.NewKey(fmt.Sprintf("/conv/c1/op/%d-%d", round, i)), val); err != nil {
				b.Fatal(err)
			}
		}
		if err := bt.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		if d == ds.Batching(raw) {
			raw.Sync(ctx, ds.NewKey("/")) // the same one fsync per batch
		}
	}
	// Batches alternate between the two stores, so both take the same
	// number of batches and share the machine's background compactions.
	var rawTime, encTime time.Duration
	for r := range b.N {
		start := time.Now()
		write(raw, r)
		mid := time.Now()
		write(enc, r)
		rawTime += mid.Sub(start)
		encTime += time.Since(mid)
	}
	rawRate := float64(b.N*100) / rawTime.Seconds()
	rate := float64(b.N*100) / encTime.Seconds()
	b.ReportMetric(rate, "puts/s")
	b.ReportMetric(rawRate, "raw_puts/s")
	b.ReportMetric(rate/rawRate, "ratio_vs_raw")
}

// BenchmarkGet reads random 1 KiB values of 20,000 through the encrypting
// store, beside raw pebble in the same run.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	raw, _ := pebbleds.NewDatastore(b.TempDir())
	defer raw.Close()
	enc, err := Open(b.TempDir(), pass, fastKDF)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	const n = 20_000
	val := make([]byte, 1024)
	rand.Read(val)
	keys := make([]ds.Key, n)
	for _, d := range []ds.Batching{raw, enc} {
		bt, _ := d.Batch(ctx)
		for i := range n {
			keys[i] = ds.NewKey(fmt.Sprintf("/conv/c1/op/%d", i))
			bt.Put(ctx, keys[i], val)
		}
		if err := bt.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	const rawReads = 20_000
	for i := range rawReads {
		if _, err := raw.Get(ctx, keys[(i*7919)%n]); err != nil {
			b.Fatal(err)
		}
	}
	rawRate := rawReads / time.Since(start).Seconds()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := enc.Get(ctx, keys[(i*7919)%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	rate := float64(i) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "gets/s")
	b.ReportMetric(rawRate, "raw_gets/s")
	b.ReportMetric(rate/rawRate, "ratio_vs_raw")
}

// BenchmarkPurge measures the purge step after deleting d values spread
// over a store of n 1 KiB values (one conversation's ops and a thousand
// others'): ms/purge is the cost of making the deletes unrecoverable.
func BenchmarkPurge(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{20_000, 100_000} {
		for _, d := range []int{1, 100} {
			b.Run(fmt.Sprintf("store=%d/deletes=%d", n, d), func(b *testing.B) {
				s, err := Open(b.TempDir(), pass, fastKDF, WithPurgeDelay(time.Hour))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				val := make([]byte, 1024)
				rand.Read(val)
				key := func(i int) ds.Key { return ds.NewKey(fmt.Sprintf("/conv/c%d/op/%d", i%1000, i)) }
				for i := 0; i < n; i += 1000 {
					bt, _ := s.Batch(ctx)
					for j := i; j < i+1000; j++ {
						bt.Put(ctx, key(j), val)
					}
					if err := bt.Commit(ctx); err != nil {
						b.Fatal(err)
					}
				}
				s.db.Flush()
				s.db.Compact(ctx, []byte{0}, []byte{0xff}, false)
				next := 0
				var total time.Duration
				for b.Loop() {
					for range d {
						s.Delete(ctx, key(next*7919%n))
						next++
					}
					start := time.Now()
					if err := s.Purge(ctx); err != nil {
						b.Fatal(err)
					}
					total += time.Since(start)
				}
				b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/purge")
			})
		}
	}
}
