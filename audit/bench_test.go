package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

// BenchmarkAppend: the cost of one entry appended in batches of n over an
// in-memory datastore (the CPU: encode, hash, sign), reported as
// entry-vs-sign, the ratio to one Ed25519 signature measured in the same
// run (the floor: each entry is signed, and each batch signs its head).
func BenchmarkAppend(b *testing.B) {
	key := fixedKey(1)
	msg := sha256.Sum256([]byte("baseline"))
	start := time.Now()
	const signs = 2000
	for range signs {
		ed25519.Sign(key, msg[:])
	}
	perSign := float64(time.Since(start).Nanoseconds()) / signs
	ev := Event{Kind: Received, IDs: IDs{Conversation: "0123456789abcdef0123456789abcdef",
		Ops: []string{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, Peer: "12D3KooWLY7aVjZ4mM7eTMoz57QhQLWFMEh8VGqcemCVa4EBWoVg"}}
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			l, err := Open(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), key)
			if err != nil {
				b.Fatal(err)
			}
			evs := make([]Event, n)
			for i := range evs {
				evs[i] = ev
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := l.Append(context.Background(), evs...); err != nil {
					b.Fatal(err)
				}
			}
			perEntry := float64(b.Elapsed().Nanoseconds()) / float64(b.N*n)
			b.ReportMetric(perEntry, "ns/entry")
			b.ReportMetric(perEntry/perSign, "entry-vs-sign")
		})
	}
}

// BenchmarkProof: what a deposit costs the device when the witness holds
// an entry 10,000 entries back (log of 10,001 entries): the inclusion
// proof, cold (a fresh reader: every entry read and hashed once) and warm
// (subtrees of 64 entries or more remembered, as on a running device),
// reported as the ratio to one Ed25519 signature measured in the same run,
// with the proof's size in bytes.
func BenchmarkProof(b *testing.B) {
	key := fixedKey(1)
	msg := sha256.Sum256([]byte("baseline"))
	start := time.Now()
	const signs = 2000
	for range signs {
		ed25519.Sign(key, msg[:])
	}
	perSign := float64(time.Since(start).Nanoseconds()) / signs
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l, err := Open(ctx, d, key)
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]Event, 100)
	for i := range evs {
		evs[i] = Event{Kind: Read, IDs: IDs{Conversation: "0123456789abcdef0123456789abcdef"}}
	}
	for range 100 {
		if _, err := l.Append(ctx, evs...); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.Append(ctx, evs[0]); err != nil {
		b.Fatal(err)
	}
	h := l.Current()
	for _, warm := range []bool{false, true} {
		b.Run(fmt.Sprintf("gap=10000/warm=%v", warm), func(b *testing.B) {
			var proof [][32]byte
			for b.Loop() {
				r := l.Reader
				if !warm {
					r = NewReader(d, key.Public().(ed25519.PublicKey))
				}
				if proof, err = r.proof(ctx, 1, h.Seq); err != nil {
					b.Fatal(err)
				}
			}
			if err := verifyInclusion(func() [32]byte { e, _ := l.Entry(ctx, 1); return e.Hash }(), 1, h.Seq, [32]byte(h.Root), proof); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perSign, "proof-vs-sign")
			b.ReportMetric(float64(32*len(proof)), "proof-bytes")
		})
		// The consistency proof a witness holding entry 1 is sent.
		b.Run(fmt.Sprintf("consistency/gap=10000/warm=%v", warm), func(b *testing.B) {
			var proof [][32]byte
			for b.Loop() {
				r := l.Reader
				if !warm {
					r = NewReader(d, key.Public().(ed25519.PublicKey))
				}
				if proof, err = r.Consistency(ctx, 1, h.Seq); err != nil {
					b.Fatal(err)
				}
			}
			first, err := l.Reader.Root(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			if err := VerifyConsistency(1, h.Seq, first, [32]byte(h.Root), proof); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perSign, "proof-vs-sign")
			b.ReportMetric(float64(32*len(proof)), "proof-bytes")
		})
	}
}
