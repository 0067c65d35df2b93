package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Store keys.
var (
	headKey   = ds.NewKey("/audit/head")
	treeKey   = ds.NewKey("/audit/tree") // the Merkle tree's frontier as of the head (merkle.go)
	entryRoot = ds.NewKey("/audit/entry")
)

func entryKey(seq uint64) ds.Key { return entryRoot.ChildString(strconv.FormatUint(seq, 10)) }

// Reader reads and verifies the log of the device with public key key
// held in a datastore; it never writes.
type Reader struct {
	d   ds.Read
	key ed25519.PublicKey
	pr  prover
}

// NewReader reads the log in d of the device with public key key.
func NewReader(d ds.Read, key ed25519.PublicKey) *Reader {
	r := &Reader{d: d, key: key}
	r.pr.leaf = func(ctx context.Context, i uint64) ([32]byte, error) {
		e, err := r.Entry(ctx, i+1)
		return e.Hash, err
	}
	return r
}

// Root is the root of the Merkle tree over entries 1..size (computed from
// the stored entries; subtrees already computed are remembered).
func (r *Reader) Root(ctx context.Context, size uint64) ([32]byte, error) {
	if size == 0 {
		return [32]byte{}, nil
	}
	return r.pr.mth(ctx, 0, size)
}

// proof is the inclusion proof of entry seq in the Merkle tree over
// entries 1..size (at most MaxProof hashes, ceil(log2 size)). Witnesses
// take consistency proofs (Consistency); this one is kept for the tests
// that show an inclusion proof alone is not enough.
func (r *Reader) proof(ctx context.Context, seq, size uint64) ([][32]byte, error) {
	if seq == 0 || seq > size {
		return nil, fmt.Errorf("audit proof: entry %d of %d", seq, size)
	}
	return r.pr.inclusion(ctx, seq-1, 0, size)
}

// Consistency is the consistency proof (RFC 9162, 2.1.4) from the Merkle
// tree over entries 1..m to the one over entries 1..n (0 < m < n; at most
// MaxConsistency hashes, about log2 n): what shows a witness holding the
// head of entry m that the head of entry n extends it (VerifyConsistency).
func (r *Reader) Consistency(ctx context.Context, m, n uint64) ([][32]byte, error) {
	if m == 0 || m >= n {
		return nil, fmt.Errorf("audit consistency proof: from %d to %d entries", m, n)
	}
	return r.pr.consistency(ctx, m, 0, n, true)
}

// Head returns the stored head (ok false: the log is empty), checked
// against the device's key.
func (r *Reader) Head(ctx context.Context) (Head, bool, error) {
	raw, err := r.d.Get(ctx, headKey)
	if errors.Is(err, ds.ErrNotFound) {
		return Head{}, false, nil
	}
	if err != nil {
		return Head{}, false, fmt.Errorf("read audit head: %w", err)
	}
	h, err := decodeHead(raw, r.key)
	if err != nil {
		return Head{}, false, err
	}
	return h, true, nil
}

// raw reads one entry's record (ErrMissing wrapped when absent).
func (r *Reader) raw(ctx context.Context, seq uint64) ([]byte, error) {
	raw, err := r.d.Get(ctx, entryKey(seq))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, broken(seq, ErrMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("read audit entry %d: %w", seq, err)
	}
	return raw, nil
}

// Entry reads and decodes entry seq (no signature check).
func (r *Reader) Entry(ctx context.Context, seq uint64) (Entry, error) {
	raw, err := r.raw(ctx, seq)
	if err != nil {
		return Entry{}, err
	}
	e, err := Decode(raw)
	if err != nil {
		return Entry{}, broken(seq, err)
	}
	return e, nil
}

// Summary is what a verification saw.
type Summary struct {
	Entries uint64    // entries checked (the stored head's seq)
	Hash    [32]byte  // the last entry's hash
	First   time.Time // time of entry 1
	Last    time.Time // time of the last entry
}

// Verify checks the whole log: every entry from 1 to the stored head (see
// Chain), the head's signature and that it vouches for the last entry;
// and, given ext (a head kept elsewhere), that the log still holds the
// entry ext vouches for, unchanged. The error names the first broken or
// missing entry (*BrokenError) or the head (ErrBadHead).
func (r *Reader) Verify(ctx context.Context, ext *Head) (Summary, error) {
	h, ok, err := r.Head(ctx)
	if err != nil {
		return Summary{}, err
	}
	lo, hi, n, err := r.stored(ctx)
	if err != nil {
		return Summary{}, err
	}
	if !ok && n > 0 {
		// No head, yet entries are stored: the head was deleted, with
		// entries 1..lo-1 if lo > 1.
		if lo > 1 {
			return Summary{}, broken(1, fmt.Errorf("%w: no head, and entries 1 to %d are gone while %d later ones (up to %d) remain",
				ErrMissing, lo-1, n, hi))
		}
		return Summary{}, fmt.Errorf("%w: %d entries stored (up to %d) but no head", ErrBadHead, n, hi)
	}
	var s Summary
	c := NewChain(r.key)
	var tree frontier
	var extHash *[32]byte
	var extRoot [32]byte
	for seq := uint64(1); seq <= h.Seq; seq++ {
		if err := ctx.Err(); err != nil {
			return s, err
		}
		raw, err := r.raw(ctx, seq)
		if err != nil {
			return s, err
		}
		e, err := c.Add(raw)
		if err != nil {
			return s, err
		}
		if seq == 1 {
			s.First = e.Time
		}
		tree.push(e.Hash)
		if ext != nil && seq == ext.Seq {
			extHash, extRoot = &e.Hash, tree.root()
		}
		s.Entries, s.Hash, s.Last = seq, e.Hash, e.Time
	}
	if hi > h.Seq {
		return s, broken(h.Seq+1, fmt.Errorf("%w: entries stored beyond the head (up to %d)", ErrSequence, hi))
	}
	if ok && (s.Hash != h.Hash || (h.Root != nil && [32]byte(h.Root) != tree.root())) {
		return s, broken(h.Seq, ErrHeadMismatch)
	}
	if ext != nil {
		switch {
		case !ext.Key.Equal(r.key):
			return s, fmt.Errorf("%w: the given head is another device's", ErrBadHead)
		case ext.Seq > h.Seq:
			return s, broken(h.Seq+1, fmt.Errorf("%w: the given head vouches for %d entries, the log holds %d",
				ErrTruncated, ext.Seq, h.Seq))
		case ext.Seq > 0 && (extHash == nil || *extHash != ext.Hash):
			return s, broken(ext.Seq, ErrHeadMismatch)
		case ext.Seq > 0 && ext.Root != nil && [32]byte(ext.Root) != extRoot:
			return s, broken(ext.Seq, fmt.Errorf("%w: the log's tree up to it differs from the head's", ErrHeadMismatch))
		}
	}
	return s, nil
}

// stored lists the log's key space: the lowest and highest seq of the
// entries stored and how many there are (a key that is not an entry's
// counts too, as seq 0: something was written there).
func (r *Reader) stored(ctx context.Context) (lo, hi, n uint64, err error) {
	res, err := r.d.Query(ctx, query.Query{Prefix: entryRoot.String(), KeysOnly: true})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("list audit entries: %w", err)
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			return 0, 0, 0, fmt.Errorf("list audit entries: %w", e.Error)
		}
		seq, _ := strconv.ParseUint(ds.RawKey(e.Key).BaseNamespace(), 10, 64)
		if n == 0 || seq < lo {
			lo = seq
		}
		hi = max(hi, seq)
		n++
	}
	return lo, hi, n, nil
}

// Since returns up to limit entries whose time is after since, oldest
// first (times strictly increase along the log, so the last entry's time
// is the next page's since).
func (r *Reader) Since(ctx context.Context, since time.Time, limit int) ([]Entry, error) {
	h, ok, err := r.Head(ctx)
	if err != nil || !ok || limit <= 0 {
		return nil, err
	}
	// Binary search for the first entry after since.
	lo, hi := uint64(1), h.Seq+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := r.Entry(ctx, mid)
		if err != nil {
			return nil, err
		}
		if e.Time.After(since) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	var out []Entry
	for seq := lo; seq <= h.Seq && len(out) < limit; seq++ {
		e, err := r.Entry(ctx, seq)
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Line is an entry as exported, one JSON object per line: enough for an
// auditor to verify it elsewhere (hash = SHA-256(EntryDomain || cbor),
// signature = Ed25519 over SigDomain || hash under key; the key is the
// peer ID's).
type Line struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      Kind      `json:"kind"`
	IDs       IDs       `json:"ids"`
	Hash      string    `json:"hash"`
	Prev      string    `json:"prev"`
	Signature string    `json:"signature"`
	Key       string    `json:"key"`
	PeerID    string    `json:"peer_id,omitempty"`
	CBOR      string    `json:"cbor"`
}

// Line renders e for export; peerID names the device.
func (e Entry) Line(peerID string) Line {
	return Line{Seq: e.Seq, Time: e.Time, Kind: e.Kind, IDs: e.IDs, Hash: hex.EncodeToString(e.Hash[:]),
		Prev: hex.EncodeToString(e.Prev[:]), Signature: hex.EncodeToString(e.Sig), Key: hex.EncodeToString(e.Key),
		PeerID: peerID, CBOR: base64.StdEncoding.EncodeToString(e.Body)}
}

// Log is a device's audit log, appended to with its identity key.
type Log struct {
	*Reader
	d   ds.Batching
	sk  ed25519.PrivateKey
	now func() time.Time

	mu   sync.Mutex // serialises appends; guards head and tree
	head Head
	tree frontier // the Merkle tree of entries 1..head.Seq
}

// Option configures Open.
type Option func(*Log) error

// WithClock sets the clock entries are stamped with (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(l *Log) error { l.now = now; return nil }
}

// Open opens (or starts) the log held in d, appended to and signed with
// key. A stored head that does not verify under key is an error.
func Open(ctx context.Context, d ds.Batching, key ed25519.PrivateKey, opts ...Option) (*Log, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("open audit log: not an Ed25519 private key")
	}
	l := &Log{Reader: NewReader(d, key.Public().(ed25519.PublicKey)), d: d, sk: key, now: time.Now}
	for _, o := range opts {
		if err := o(l); err != nil {
			return nil, err
		}
	}
	h, _, err := l.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l.head = h
	if l.tree, err = l.loadTree(ctx, h); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return l, nil
}

// treeRecord is the stored frontier of the log's Merkle tree.
type treeRecord struct {
	Size  uint64   `cbor:"1,keyasint"`
	Nodes [][]byte `cbor:"2,keyasint"`
}

// loadTree reads the tree's frontier stored with head h; one missing (a
// log written before heads signed a tree) or not matching h is rebuilt
// from the entries, read once.
func (l *Log) loadTree(ctx context.Context, h Head) (frontier, error) {
	if raw, err := l.d.Get(ctx, treeKey); err == nil {
		var tr treeRecord
		if detcbor.Unmarshal(raw, &tr, maxRecord) == nil && tr.Size == h.Seq && len(tr.Nodes) == bits.OnesCount64(tr.Size) {
			f := frontier{size: tr.Size}
			for _, n := range tr.Nodes {
				if len(n) != 32 {
					break
				}
				f.nodes = append(f.nodes, [32]byte(n))
			}
			if len(f.nodes) == len(tr.Nodes) && (h.Root == nil || [32]byte(h.Root) == f.root()) {
				return f, nil
			}
		}
	} else if !errors.Is(err, ds.ErrNotFound) {
		return frontier{}, err
	}
	var f frontier
	for seq := uint64(1); seq <= h.Seq; seq++ {
		e, err := l.Entry(ctx, seq)
		if err != nil {
			return frontier{}, err
		}
		f.push(e.Hash)
	}
	return f, nil
}

func (f *frontier) record() ([]byte, error) {
	tr := treeRecord{Size: f.size, Nodes: make([][]byte, len(f.nodes))}
	for i := range f.nodes {
		tr.Nodes[i] = f.nodes[i][:]
	}
	return detcbor.Marshal(tr)
}

// Append adds events, in order: their entries and the new head go to the
// store in one batch (one commit, synced by the store), so a crash leaves
// all of them or none. An invalid event fails the whole call (ErrInvalid):
// callers that batch events from many sources check each (Event.Valid)
// first, so that one bad event never costs the others.
//
// An entry's time is the clock's, or — if the clock is not after the
// previous entry's time, or outside [MinTime, MaxTime] — the previous
// entry's time + 1 ns (MinTime for the first entry).
func (l *Log) Append(ctx context.Context, evs ...Event) ([]Entry, error) {
	for _, ev := range evs {
		if !ev.Valid() {
			return nil, ErrInvalid
		}
	}
	if len(evs) == 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := l.d.Batch(ctx)
	if err != nil {
		return nil, fmt.Errorf("append audit entries: %w", err)
	}
	now := l.now().UTC()
	seq, prev, last := l.head.Seq, l.head.Hash, l.head.Time
	tree := l.tree.clone()
	out := make([]Entry, 0, len(evs))
	for _, ev := range evs {
		t := now
		switch {
		case seq > 0 && (!t.After(last) || !inRange(t)):
			t = last.Add(time.Nanosecond) // times strictly increase along the chain
		case seq == 0 && !inRange(t):
			t = MinTime
		}
		if !inRange(t) {
			return nil, fmt.Errorf("append audit entries: %w: the log has reached its last time", ErrInvalid)
		}
		seq++
		e, rec, err := seal(l.sk, seq, t, ev, prev)
		if err != nil {
			return nil, err
		}
		if err := b.Put(ctx, entryKey(seq), rec); err != nil {
			return nil, fmt.Errorf("append audit entries: %w", err)
		}
		prev, last = e.Hash, e.Time
		tree.push(e.Hash)
		out = append(out, e)
	}
	h, hrec, err := signHead(l.sk, seq, prev, tree.root(), last)
	if err != nil {
		return nil, err
	}
	trec, err := tree.record()
	if err != nil {
		return nil, err
	}
	if err := b.Put(ctx, headKey, hrec); err != nil {
		return nil, fmt.Errorf("append audit entries: %w", err)
	}
	if err := b.Put(ctx, treeKey, trec); err != nil {
		return nil, fmt.Errorf("append audit entries: %w", err)
	}
	if err := b.Commit(ctx); err != nil {
		return nil, fmt.Errorf("append audit entries: %w", err)
	}
	l.head, l.tree = h, tree
	return out, nil
}

// Current is the head as of the last append (Seq 0: empty log).
func (l *Log) Current() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Stats says how a device's recording of its trail is doing (shown in
// its status).
type Stats struct {
	Entries   uint64    `json:"entries"`              // in the log
	Dropped   uint64    `json:"dropped"`              // events lost to a full queue
	Failed    uint64    `json:"failed"`               // events whose append failed (or not recorded: Broken)
	Refused   uint64    `json:"refused"`              // invalid events refused one by one (a caller's bug)
	Broken    bool      `json:"broken,omitempty"`     // the log could not be opened: nothing is recorded (LastError says why)
	LastError string    `json:"last_error,omitempty"` // the last append error (no event data)
	LastErrAt time.Time `json:"last_error_at,omitzero"`
	// Witnessed: the newest head a witness (an anchor or archive member,
	// package witness) holds of this log, and whether the log still
	// vouches for it; nil before any witness answered.
	Witnessed *Witnessed `json:"witnessed,omitempty"`
}

// Witnessed is the newest head a witness answered with: who, which entry,
// when; Error is set when the log no longer vouches for it (truncated,
// rewritten or restored from an older copy), and stays set.
type Witnessed struct {
	Peer  string    `json:"peer,omitempty"`
	Seq   uint64    `json:"seq"`
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error,omitempty"`
}

// Vouched checks, cheaply, that the log still holds the entry ext (a head
// kept elsewhere: a witness's, an exported one) vouches for, unchanged:
// ext must not be past the stored head, and the entry at ext.Seq must have
// ext's hash. Verify checks the whole chain besides.
func (r *Reader) Vouched(ctx context.Context, ext Head) error {
	if !ext.Key.Equal(r.key) {
		return fmt.Errorf("%w: the given head is another device's", ErrBadHead)
	}
	h, _, err := r.Head(ctx)
	if err != nil {
		return err
	}
	if ext.Seq > h.Seq {
		return broken(h.Seq+1, fmt.Errorf("%w: the given head vouches for %d entries, the log holds %d",
			ErrTruncated, ext.Seq, h.Seq))
	}
	if ext.Seq == 0 {
		return nil
	}
	e, err := r.Entry(ctx, ext.Seq)
	if err != nil {
		return err
	}
	if e.Hash != ext.Hash {
		return broken(ext.Seq, ErrHeadMismatch)
	}
	if ext.Root != nil {
		root, err := r.Root(ctx, ext.Seq)
		if err != nil {
			return err
		}
		if root != [32]byte(ext.Root) {
			return broken(ext.Seq, fmt.Errorf("%w: the log's tree up to it differs from the head's", ErrHeadMismatch))
		}
	}
	return nil
}
