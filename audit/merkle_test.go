package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
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
			if err := VerifyInclusion(leaves[seq-1], seq, n, root, proof); err != nil {
				t.Fatalf("entry %d of %d: %v", seq, n, err)
			}
			if VerifyInclusion(leaves[(seq)%n], seq, n, root, proof) == nil && n > 1 {
				t.Fatalf("entry %d of %d: another entry's hash verifies", seq, n)
			}
			for i := range proof {
				bad := append([][32]byte(nil), proof...)
				bad[i][0] ^= 1
				if VerifyInclusion(leaves[seq-1], seq, n, root, bad) == nil {
					t.Fatalf("entry %d of %d: hash %d changed, still verifies", seq, n, i)
				}
			}
			if len(proof) > 0 && VerifyInclusion(leaves[seq-1], seq, n, root, proof[:len(proof)-1]) == nil {
				t.Fatalf("entry %d of %d: a shortened proof verifies", seq, n)
			}
			if VerifyInclusion(leaves[seq-1], seq, n, root, append(proof, root)) == nil {
				t.Fatalf("entry %d of %d: a lengthened proof verifies", seq, n)
			}
		}
	}
}

func TestInclusionBounds(t *testing.T) {
	leaf := sha256.Sum256([]byte("x"))
	for _, c := range []struct{ seq, size uint64 }{{0, 1}, {2, 1}, {1, 0}} {
		if err := VerifyInclusion(leaf, c.seq, c.size, leafHash(leaf), nil); !errors.Is(err, ErrProof) {
			t.Fatalf("entry %d of %d: %v", c.seq, c.size, err)
		}
	}
	if err := VerifyInclusion(leaf, 1, 1<<62, leafHash(leaf), make([][32]byte, MaxProof+1)); !errors.Is(err, ErrProof) {
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
	proof, err := l.Proof(ctx, old.Seq, h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyInclusion(old.Hash, old.Seq, h.Seq, [32]byte(h.Root), proof); err != nil {
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
