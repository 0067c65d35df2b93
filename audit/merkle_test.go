package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
	"testing"
)

// refRoot is RFC 9162's MTH, written from the definition.
func refRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return [32]byte{}
	case 1:
		return leafHash(leaves[0])
	}
	k := split(uint64(len(leaves)))
	return nodeHash(refRoot(leaves[:k]), refRoot(leaves[k:]))
}

func testLeaves(n int) [][32]byte {
	out := make([][32]byte, n)
	for i := range out {
		out[i] = sha256.Sum256(fmt.Appendf(nil, "entry %d", i+1))
	}
	return out
}

// Every inclusion proof of every entry in every tree up to 70 entries
// verifies; the same proof for another entry, another root or with one hash changed, dropped or added does not.
func TestInclusionProofs(t *testing.T) {
	const max = 70
	leaves := testLeaves(max)
	p := prover{leaf: func(_ context.Context, i uint64) ([32]byte, error) { return leaves[i], nil }}
	var f frontier
	for n := uint64(1); n <= max; n++ {
		f.push(leaves[n-1])
		root := refRoot(leaves[:n])
		if f.root() != root {
			t.Fatalf("frontier root of %d differs from MTH", n)
		}
		if got, _ := p.mth(context.Background(), 0, n); got != root {
			t.Fatalf("prover root of %d differs from MTH", n)
		}
		for seq := uint64(1); seq <= n; seq++ {
			proof, err := p.inclusion(context.Background(), seq-1, 0, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := verifyInclusion(leaves[seq-1], seq, n, root, proof); err != nil {
				t.Fatalf("entry %d of %d: %v", seq, n, err)
			}
			if verifyInclusion(leaves[(seq)%n], seq, n, root, proof) == nil && n > 1 {
				t.Fatalf("entry %d of %d: another entry's hash verifies", seq, n)
			}
			for i := range proof {
				bad := append([][32]byte(nil), proof...)
				bad[i][0] ^= 1
				if verifyInclusion(leaves[seq-1], seq, n, root, bad) == nil {
					t.Fatalf("entry %d of %d: hash %d changed, still verifies", seq, n, i)
				}
			}
			if len(proof) > 0 && verifyInclusion(leaves[seq-1], seq, n, root, proof[:len(proof)-1]) == nil {
				t.Fatalf("entry %d of %d: a shortened proof verifies", seq, n)
			}
			if verifyInclusion(leaves[seq-1], seq, n, root, append(proof, root)) == nil {
				t.Fatalf("entry %d of %d: a lengthened proof verifies", seq, n)
			}
		}
	}
}

func TestInclusionBounds(t *testing.T) {
	leaf := sha256.Sum256([]byte("x"))
	for _, c := range []struct{ seq, size uint64 }{{0, 1}, {2, 1}, {1, 0}} {
		if err := verifyInclusion(leaf, c.seq, c.size, leafHash(leaf), nil); !errors.Is(err, ErrProof) {
			t.Fatalf("entry %d of %d: %v", c.seq, c.size, err)
		}
	}
	if err := verifyInclusion(leaf, 1, 1<<62, leafHash(leaf), make([][32]byte, MaxProof+1)); !errors.Is(err, ErrProof) {
		t.Fatalf("an oversized proof: %v", err)
	}
}

// A log's heads sign its tree's root; Proof shows an old head's entry in
// a newer head's tree, and a reopened log (its frontier read back, or
// rebuilt when missing) goes on with the same tree.
func TestLogTree(t *testing.T) {
	ctx := context.Background()
	l, d := newLog(t, fixedKey(1), 5)
	old := l.Current()
	if len(old.Root) != 32 {
		t.Fatalf("head root %x", old.Root)
	}
	appendN(t, l, 300)
	h := l.Current()
	proof, err := l.proof(ctx, old.Seq, h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyInclusion(old.Hash, old.Seq, h.Seq, [32]byte(h.Root), proof); err != nil {
		t.Fatal(err)
	}
	if len(proof) != 9 { // ceil(log2 305)
		t.Fatalf("proof of %d hashes for 305 entries", len(proof))
	}
	if err := l.Vouched(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(ctx, &old); err != nil {
		t.Fatal(err)
	}
	// Reopen with the frontier gone: rebuilt from the entries.
	if err := d.Delete(ctx, treeKey); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(ctx, d, fixedKey(1), WithClock(l.now))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l2, 1)
	if _, err := l2.Verify(ctx, &h); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// Every consistency proof between every two trees up to 70 entries
// verifies; the same proof against another older or newer root, between
// other sizes, or with one hash changed, dropped or added does not.
func TestConsistencyProofs(t *testing.T) {
	const max = 70
	ctx := context.Background()
	leaves := testLeaves(max)
	p := prover{leaf: func(_ context.Context, i uint64) ([32]byte, error) { return leaves[i], nil }}
	roots := make([][32]byte, max+1)
	for n := 1; n <= max; n++ {
		roots[n] = refRoot(leaves[:n])
	}
	// A rewritten history: the same sizes, leaf 1 changed.
	other := append([][32]byte(nil), leaves...)
	other[0][0] ^= 1
	for n := uint64(2); n <= max; n++ {
		for m := uint64(1); m < n; m++ {
			proof, err := p.consistency(ctx, m, 0, n, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(m, n, roots[m], roots[n], proof); err != nil {
				t.Fatalf("%d to %d: %v", m, n, err)
			}
			if bound := bits.Len64(n-1) + 1; len(proof) > bound {
				t.Fatalf("%d to %d: %d hashes, more than %d", m, n, len(proof), bound)
			}
			if VerifyConsistency(m, n, refRoot(other[:m]), roots[n], proof) == nil {
				t.Fatalf("%d to %d: another older root verifies", m, n)
			}
			if VerifyConsistency(m, n, roots[m], refRoot(other[:n]), proof) == nil {
				t.Fatalf("%d to %d: another newer root verifies", m, n)
			}
			if m > 1 && VerifyConsistency(m-1, n, roots[m-1], roots[n], proof) == nil {
				t.Fatalf("%d to %d: verifies from %d", m, n, m-1)
			}
			if n < max && VerifyConsistency(m, n+1, roots[m], roots[n+1], proof) == nil {
				t.Fatalf("%d to %d: verifies to %d", m, n, n+1)
			}
			for i := range proof {
				bad := append([][32]byte(nil), proof...)
				bad[i][0] ^= 1
				if VerifyConsistency(m, n, roots[m], roots[n], bad) == nil {
					t.Fatalf("%d to %d: hash %d changed, still verifies", m, n, i)
				}
			}
			if VerifyConsistency(m, n, roots[m], roots[n], proof[:len(proof)-1]) == nil {
				t.Fatalf("%d to %d: a shortened proof verifies", m, n)
			}
			if VerifyConsistency(m, n, roots[m], roots[n], append(proof, roots[n])) == nil {
				t.Fatalf("%d to %d: a lengthened proof verifies", m, n)
			}
			if len(proof) > 1 && VerifyConsistency(m, n, roots[m], roots[n], proof[1:]) == nil {
				t.Fatalf("%d to %d: a proof without its first hash verifies", m, n)
			}
		}
	}
}

// The attack of a fabricated root: a tree that holds the older tree's
// last leaf at its place (so an inclusion proof passes) but other leaves
// before it has no consistency proof from the older root.
func TestConsistencyRefusesFabricatedRoot(t *testing.T) {
	ctx := context.Background()
	genuine := testLeaves(6)
	rewritten := append(append([][32]byte(nil), genuine[:3]...), testLeaves(8)[3:]...)
	for i := 3; i < 8; i++ {
		rewritten[i][1] ^= 0xff
	}
	fake := append([][32]byte(nil), rewritten...)
	fake[5] = genuine[5]
	p := prover{leaf: func(_ context.Context, i uint64) ([32]byte, error) { return fake[i], nil }}
	incl, err := p.inclusion(ctx, 5, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyInclusion(genuine[5], 6, 8, refRoot(fake), incl); err != nil {
		t.Fatalf("the fabricated tree does hold the witnessed entry: %v", err)
	}
	proof, err := p.consistency(ctx, 6, 0, 8, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(6, 8, refRoot(genuine), refRoot(fake), proof); !errors.Is(err, ErrConsistency) {
		t.Fatalf("a fabricated root passes consistency: %v", err)
	}
}

func TestConsistencyBounds(t *testing.T) {
	r := sha256.Sum256([]byte("x"))
	for _, c := range []struct{ m, n uint64 }{{0, 1}, {1, 1}, {2, 1}, {0, 0}} {
		if err := VerifyConsistency(c.m, c.n, r, r, [][32]byte{r}); !errors.Is(err, ErrConsistency) {
			t.Fatalf("%d to %d: %v", c.m, c.n, err)
		}
	}
	if err := VerifyConsistency(3, 4, r, r, nil); !errors.Is(err, ErrConsistency) {
		t.Fatalf("an empty proof: %v", err)
	}
	if err := VerifyConsistency(3, 1<<62, r, r, make([][32]byte, MaxConsistency+1)); !errors.Is(err, ErrConsistency) {
		t.Fatalf("an oversized proof: %v", err)
	}
}

// A log's Consistency proves its older heads' roots into newer ones; for a
// gap of 10,000 entries the proof holds at most ceil(log2 n)+1 hashes.
func TestLogConsistency(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t, fixedKey(1), 5)
	old := l.Current()
	appendN(t, l, 10000)
	h := l.Current()
	proof, err := l.Consistency(ctx, old.Seq, h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(old.Seq, h.Seq, [32]byte(old.Root), [32]byte(h.Root), proof); err != nil {
		t.Fatal(err)
	}
	if len(proof) > bits.Len64(h.Seq-1)+1 {
		t.Fatalf("a proof of %d hashes for %d to %d entries", len(proof), old.Seq, h.Seq)
	}
	t.Logf("consistency proof from %d to %d entries: %d hashes, %d bytes", old.Seq, h.Seq, len(proof), 32*len(proof))
	for _, c := range []struct{ m, n uint64 }{{0, 5}, {5, 5}, {6, 5}} {
		if _, err := l.Consistency(ctx, c.m, c.n); err == nil {
			t.Fatalf("a proof from %d to %d", c.m, c.n)
		}
	}
}
