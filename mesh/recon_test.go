package mesh

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/crdt"
)

func randomIDs(rng *rand.Rand, n int) []crdt.OpID {
	out := make([]crdt.OpID, n)
	for i := range out {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rng.Uint64())
		out[i] = sha256.Sum256(b[:])
	}
	return out
}

// reconcile runs two sessions to the end and returns round trips (messages
// / 2, rounded up) and bytes.
func reconcile(t testing.TB, a, b []crdt.OpID) (sa, sb *Session, msgs, bytes int) {
	sa, sb = NewSession(a), NewSession(b)
	msg, err := sa.Initiate()
	if err != nil {
		t.Fatal(err)
	}
	cur, other := sb, sa
	for msg != nil {
		msgs++
		bytes += len(msg)
		if msg, err = cur.Reply(msg); err != nil {
			t.Fatal(err)
		}
		cur, other = other, cur
	}
	return sa, sb, msgs, bytes
}

func union(sets ...[]crdt.OpID) []crdt.OpID {
	var all []crdt.OpID
	for _, s := range sets {
		all = append(all, s...)
	}
	slices.SortFunc(all, crdt.OpID.Compare)
	return slices.Compact(all)
}

func TestReconcileProperty(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 5))
		for _, n := range []int{0, 1, 10, 100, 1000, 5000} {
			common := randomIDs(rng, n)
			cases := map[string][2][]crdt.OpID{
				"identical":    {common, common},
				"disjoint":     {randomIDs(rng, n), randomIDs(rng, n/2+1)},
				"one diff":     {append(slices.Clone(common), randomIDs(rng, 1)...), common},
				"half differs": {append(common[:n/2:n/2], randomIDs(rng, n/2)...), append(slices.Clone(common[n/2:]), randomIDs(rng, n/4)...)},
			}
			for name, c := range cases {
				sa, sb, _, _ := reconcile(t, c[0], c[1])
				want := union(c[0], c[1])
				if got := union(c[0], sa.Need()); !slices.Equal(got, want) {
					t.Fatalf("seed %d n %d %s: A ends with %d of %d", seed, n, name, len(got), len(want))
				}
				if got := union(c[1], sb.Need()); !slices.Equal(got, want) {
					t.Fatalf("seed %d n %d %s: B ends with %d of %d", seed, n, name, len(got), len(want))
				}
			}
		}
	}
}

func TestIdenticalIsOneRoundTrip(t *testing.T) {
	s := randomIDs(rand.New(rand.NewPCG(1, 1)), 100_000)
	_, _, msgs, bytes := reconcile(t, s, s)
	if msgs > 2 || bytes >= 200 {
		t.Fatalf("identical sets: %d messages, %d bytes", msgs, bytes)
	}
}

func TestRejectsGarbage(t *testing.T) {
	s := NewSession(randomIDs(rand.New(rand.NewPCG(1, 1)), 100))
	for _, m := range [][]byte{nil, []byte("junk"), {0xa1, 0x01, 0x80}} {
		if _, err := s.Reply(m); err == nil {
			t.Errorf("accepted %x", m)
		}
	}
	// Endless ranges: a peer that never converges is cut off.
	peer := NewSession(randomIDs(rand.New(rand.NewPCG(2, 2)), 100))
	msg, _ := peer.Initiate()
	for range MaxRounds + 1 {
		if _, err := s.Reply(msg); err != nil {
			return
		}
	}
	t.Fatal("no round limit")
}

func FuzzReply(f *testing.F) {
	a := randomIDs(rand.New(rand.NewPCG(1, 1)), 300)
	msg, _ := NewSession(a[:200]).Initiate()
	f.Add(msg)
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewSession(a[100:])
		out, err := s.Reply(data)
		if err == nil && len(out) > MaxMsgBytes {
			t.Fatal("oversized answer")
		}
	})
}

// BenchmarkReconcile reports round trips and bytes to reconcile replicas of
// n ops that differ by 10, beside the bytes of exchanging all IDs.
func BenchmarkReconcile(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 3))
			common := randomIDs(rng, n)
			x := append(slices.Clone(common), randomIDs(rng, 5)...)
			y := append(slices.Clone(common), randomIDs(rng, 5)...)
			var msgs, bytes int
			for b.Loop() {
				_, _, msgs, bytes = reconcile(b, x, y)
			}
			b.ReportMetric(float64((msgs+1)/2), "round_trips")
			b.ReportMetric(float64(bytes), "recon_bytes")
			b.ReportMetric(float64(n*32*2), "all_ids_bytes")
			_, _, m0, b0 := reconcile(b, common, common)
			b.ReportMetric(float64((m0+1)/2), "identical_round_trips")
			b.ReportMetric(float64(b0), "identical_bytes")
		})
	}
}

// TestNeedInCausalKeyOrder (sync/3): what a side needs comes ordered by
// the causal keys the other side listed, not by ID — a fetch of many
// batches brings dependencies first — and keys change nothing else: both
// sides still learn exactly the difference.
func TestNeedInCausalKeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	shared := randomIDs(rng, 3000)
	extra := randomIDs(rng, 2500) // b's, in the order b made them
	keys := make([]uint64, 0, len(shared)+len(extra))
	for i := range shared {
		keys = append(keys, uint64(i))
	}
	for i := range extra {
		keys = append(keys, uint64(len(shared)+i))
	}
	sa, sb := NewSession(shared), NewKeyedSession(append(slices.Clone(shared), extra...), keys)
	msg, err := sa.Initiate()
	if err != nil {
		t.Fatal(err)
	}
	cur, other := sb, sa
	for msg != nil {
		if msg, err = cur.Reply(msg); err != nil {
			t.Fatal(err)
		}
		cur, other = other, cur
	}
	if got := sa.Need(); !slices.Equal(got, extra) {
		t.Fatalf("a needs %d IDs, want b's %d in b's causal order", len(got), len(extra))
	}
	if len(sb.Need()) != 0 {
		t.Fatalf("b needs %d", len(sb.Need()))
	}
}

// TestListWithoutKeysRefused (sync/3): a list whose causal keys do not
// match its IDs one for one, or keys outside a list, is a protocol error.
func TestListWithoutKeysRefused(t *testing.T) {
	ids := randomIDs(rand.New(rand.NewPCG(4, 4)), 3)
	list := func(mode uint8, n int) []byte {
		r := rng{Mode: mode}
		for _, id := range ids {
			r.IDs = append(r.IDs, id[:])
		}
		r.Keys = make([]uint64, n)
		b, err := NewSession(nil).encode([]rng{r})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"list keyed", list(modeList, 3), true},
		{"final keyed", list(modeFinal, 3), true},
		{"list without keys", list(modeList, 0), false},
		{"list short of keys", list(modeList, 2), false},
		{"final without keys", list(modeFinal, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSession(nil).Reply(tc.msg)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
		})
	}
	skip, _ := NewSession(nil).encode([]rng{{Mode: modeSkip, Keys: []uint64{1}}})
	if _, err := NewSession(nil).Reply(skip); err == nil {
		t.Fatal("keys in a skip range accepted")
	}
}

// BenchmarkSessionExchange: the CPU of one reconciliation of a busy
// conversation's tag between two devices whose sessions are already built
// (as session() reuses them): 4,000 ops, each side holding 20 the other
// lacks (receipts and messages in flight) — every message of the exchange
// encoded, decoded, split and fingerprinted.
func BenchmarkSessionExchange(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 7))
	common := randomIDs(rng, 4000)
	x, y := NewSession(append(slices.Clone(common), randomIDs(rng, 20)...)), NewSession(append(slices.Clone(common), randomIDs(rng, 20)...))
	var msgs, bytes int
	for b.Loop() {
		sa, sb := x.fork(), y.fork()
		msg, err := sa.Initiate()
		if err != nil {
			b.Fatal(err)
		}
		msgs, bytes = 0, 0
		for cur, other := sb, sa; msg != nil; cur, other = other, cur {
			msgs++
			bytes += len(msg)
			if msg, err = cur.Reply(msg); err != nil {
				b.Fatal(err)
			}
		}
		if len(sa.Need()) != 20 || len(sb.Need()) != 20 {
			b.Fatalf("needs %d and %d, want 20 each", len(sa.Need()), len(sb.Need()))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/exchange")
	b.ReportMetric(float64(msgs), "messages")
	b.ReportMetric(float64(bytes), "recon_bytes")
}

// TestPrefixFingerprint: a range's fingerprint from the session's prefix
// sums is the fingerprint of its items, for ranges of every size, in
// sessions made, forked and extended.
func TestPrefixFingerprint(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	ids := randomIDs(rng, 3000)
	for i := range 40 { // carries across words: IDs of all ones
		for k := range ids[i] {
			ids[i][k] = 0xff
		}
	}
	s := NewSession(ids)
	more := append(slices.Clone(s.items), randomIDs(rng, 50)...)
	slices.SortFunc(more, crdt.OpID.Compare)
	ext := s.extend(more, func(x []crdt.OpID) []uint64 { return make([]uint64, len(x)) })
	for _, sess := range []*Session{s, s.fork(), ext} {
		for range 300 {
			lo := rng.IntN(len(sess.items) + 1)
			hi := lo + rng.IntN(len(sess.items)-lo+1)
			if got, want := sess.fingerprint(lo, hi), Fingerprint(sess.items[lo:hi]); !bytes.Equal(got, want) {
				t.Fatalf("[%d, %d): %x, want %x", lo, hi, got, want)
			}
		}
	}
}
