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
// holding an older head can be shown, by a consistency proof of O(log n)
// hashes (RFC 9162, 2.1.4), that the new head's tree extends the held
// head's tree — without seeing any entry. (An inclusion proof of the held
// entry alone is not enough: a key holder can sign a head over a made-up
// tree that holds that entry and nothing else of the genuine log.)

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

// verifyInclusion checks (RFC 9162, 2.1.3.2) that the entry with hash
// entry is entry seq (leaf seq-1) of the tree of size entries whose root
// is root.
func verifyInclusion(entry [32]byte, seq, size uint64, root [32]byte, proof [][32]byte) error {
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

// ErrConsistency: a consistency proof does not show that the newer tree
// extends the older one.
var ErrConsistency = errors.New("audit consistency proof does not verify: the newer head's tree does not extend the older head's")

// MaxConsistency is the most hashes a consistency proof may hold: one per
// level and one more, for trees of up to 2^63 entries.
const MaxConsistency = MaxProof

// VerifyConsistency checks (RFC 9162, 2.1.4.2) that the tree of size n
// with root second extends the tree of size m with root first
// (0 < m < n): the first m leaves of the newer tree are the older tree's.
// A witness holding the head of entry m keeps the head of entry n only
// when this holds, so a head whose signed root is made up cannot replace
// the held one, whatever entries its tree contains.
func VerifyConsistency(m, n uint64, first, second [32]byte, proof [][32]byte) error {
	if m == 0 || m >= n || len(proof) == 0 || len(proof) > MaxConsistency {
		return fmt.Errorf("%w: from %d to %d entries, %d hashes", ErrConsistency, m, n, len(proof))
	}
	path := proof
	if m&(m-1) == 0 { // an exact power of two: the older root is a node of the newer tree
		path = append([][32]byte{first}, proof...)
	}
	fn, sn := m-1, n-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrConsistency)
		}
		if fn&1 == 1 || fn == sn {
			fr = nodeHash(c, fr)
			sr = nodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = nodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || fr != first || sr != second {
		return ErrConsistency
	}
	return nil
}

// consistency is the consistency proof (RFC 9162, 2.1.4.1) from the tree
// of the first m leaves to the tree over leaves [lo, lo+n): SUBPROOF(m,
// D[lo:lo+n], b).
func (p *prover) consistency(ctx context.Context, m, lo, n uint64, b bool) ([][32]byte, error) {
	if m == n {
		if b {
			return nil, nil
		}
		h, err := p.mth(ctx, lo, n)
		return [][32]byte{h}, err
	}
	k := split(n)
	if m <= k {
		path, err := p.consistency(ctx, m, lo, k, b)
		if err != nil {
			return nil, err
		}
		h, err := p.mth(ctx, lo+k, n-k)
		return append(path, h), err
	}
	path, err := p.consistency(ctx, m-k, lo+k, n-k, false)
	if err != nil {
		return nil, err
	}
	h, err := p.mth(ctx, lo, k)
	return append(path, h), err
}
