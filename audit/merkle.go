package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// The log's Merkle tree (RFC 9162, section 2.1): its leaves are the
// entries' hashes, in order (leaf i is entry i+1); a leaf's hash is
// SHA-256(0x00 || entry hash) and a node's SHA-256(0x01 || left || right).
// A head signs the tree's root besides the last entry's hash, so a witness
// holding an older head can be shown, by an inclusion proof of O(log n)
// hashes, that the entry it holds is in the new head's tree — without
// seeing any entry.

// MaxProof is the most hashes an inclusion proof may hold: one per level
// of a tree of up to 2^64 leaves.
const MaxProof = 64

// ErrProof: an inclusion proof does not show the entry in the tree.
var ErrProof = errors.New("audit proof does not verify: the entry is not in the head's tree")

func leafHash(entry [32]byte) [32]byte {
	var b [33]byte
	copy(b[1:], entry[:])
	return sha256.Sum256(b[:])
}

func nodeHash(l, r [32]byte) [32]byte {
	var b [65]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// frontier is the compact form of a growing tree: the roots of its
// perfect subtrees, largest (leftmost) first — one per set bit of size.
type frontier struct {
	size  uint64
	nodes [][32]byte
}

// push adds the leaf of entry hash e.
func (f *frontier) push(e [32]byte) {
	h := leafHash(e)
	// Merge with the subtrees of equal size: one per trailing set bit.
	for s := f.size; s&1 == 1; s >>= 1 {
		h = nodeHash(f.nodes[len(f.nodes)-1], h)
		f.nodes = f.nodes[:len(f.nodes)-1]
	}
	f.nodes = append(f.nodes, h)
	f.size++
}

// root is the tree's root (the zero hash for an empty tree; RFC 9162 has
// SHA-256 of nothing, but an empty log has no head to sign it).
func (f *frontier) root() [32]byte {
	if len(f.nodes) == 0 {
		return [32]byte{}
	}
	r := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		r = nodeHash(f.nodes[i], r)
	}
	return r
}

func (f *frontier) clone() frontier {
	return frontier{size: f.size, nodes: append([][32]byte(nil), f.nodes...)}
}

// VerifyInclusion checks (RFC 9162, 2.1.3.2) that the entry with hash
// entry is entry seq (leaf seq-1) of the tree of size entries whose root
// is root.
func VerifyInclusion(entry [32]byte, seq, size uint64, root [32]byte, proof [][32]byte) error {
	if seq == 0 || seq > size || len(proof) > MaxProof {
		return fmt.Errorf("%w: entry %d of %d, %d hashes", ErrProof, seq, size, len(proof))
	}
	fn, sn := seq-1, size-1
	r := leafHash(entry)
	for _, p := range proof {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrProof)
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || r != root {
		return ErrProof
	}
	return nil
}

// prover computes subtree hashes over a log's entries, remembering those
// of perfect aligned subtrees of at least memoFrom leaves (they never
// change in an append-only log): about size/memoFrom hashes at most.
type prover struct {
	leaf func(ctx context.Context, i uint64) ([32]byte, error) // the hash of entry i+1

	mu   sync.Mutex
	memo map[[2]uint64][32]byte // {start, size} → subtree hash
}

const memoFrom = 64

// mth is the hash of the subtree over leaves [lo, lo+n), n > 0.
func (p *prover) mth(ctx context.Context, lo, n uint64) ([32]byte, error) {
	if n == 1 {
		e, err := p.leaf(ctx, lo)
		if err != nil {
			return [32]byte{}, err
		}
		return leafHash(e), nil
	}
	perfect := n&(n-1) == 0 && lo%n == 0
	if perfect && n >= memoFrom {
		p.mu.Lock()
		h, ok := p.memo[[2]uint64{lo, n}]
		p.mu.Unlock()
		if ok {
			return h, nil
		}
	}
	k := split(n)
	l, err := p.mth(ctx, lo, k)
	if err != nil {
		return [32]byte{}, err
	}
	r, err := p.mth(ctx, lo+k, n-k)
	if err != nil {
		return [32]byte{}, err
	}
	h := nodeHash(l, r)
	if perfect && n >= memoFrom {
		p.mu.Lock()
		if p.memo == nil {
			p.memo = map[[2]uint64][32]byte{}
		}
		p.memo[[2]uint64{lo, n}] = h
		p.mu.Unlock()
	}
	return h, nil
}

// split is the largest power of two below n (n > 1).
func split(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// inclusion is the inclusion proof (RFC 9162, 2.1.3.1) of leaf m in the
// tree over leaves [lo, lo+n).
func (p *prover) inclusion(ctx context.Context, m, lo, n uint64) ([][32]byte, error) {
	if n <= 1 {
		return nil, nil
	}
	k := split(n)
	if m < k {
		path, err := p.inclusion(ctx, m, lo, k)
		if err != nil {
			return nil, err
		}
		h, err := p.mth(ctx, lo+k, n-k)
		return append(path, h), err
	}
	path, err := p.inclusion(ctx, m-k, lo+k, n-k)
	if err != nil {
		return nil, err
	}
	h, err := p.mth(ctx, lo, k)
	return append(path, h), err
}
