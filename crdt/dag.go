package crdt

import (
	"bytes"
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Defaults for the buffer of ops waiting for missing dependencies.
const (
	DefaultMaxPending          = 10_000   // ops
	DefaultMaxPendingBytes     = 64 << 20 // bytes of op bodies, all authors
	DefaultMaxPendingPerAuthor = 8 << 20  // bytes of op bodies, one Op.Author
)

// Admission is what DAG.Admit decides for an op whose dependencies are all
// present.
type Admission uint8

const (
	// AdmitFull applies the op as it is.
	AdmitFull Admission = iota
	// AdmitStub applies the op's structure only: ID, deps, author and
	// time, no body. The DAG stays causally closed; the content is not kept.
	AdmitStub
	// Refuse neither applies nor stores the op. Ops waiting for it stay
	// buffered, and it is listed by Missing again while they do.
	Refuse
)

// String names the decision.
func (a Admission) String() string {
	switch a {
	case AdmitFull:
		return "admit"
	case AdmitStub:
		return "stub"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Admission(%d)", uint8(a))
}

// DAG holds a causally closed set of applied ops and a bounded buffer of
// ops waiting for dependencies. It is not safe for concurrent use: its owner
// (one conversation replica) serialises access.
type DAG struct {
	store   Store
	MaxSkew time.Duration

	// The buffer of ops waiting for dependencies holds at most MaxPending
	// ops and MaxPendingBytes bytes of bodies, of which at most
	// MaxPendingPerAuthor bytes from one Op.Author. An author over its
	// budget loses its own oldest buffered ops; otherwise the oldest
	// overall go. An op whose body alone exceeds a byte budget is not
	// buffered (ErrPendingFull): set the budgets above the largest body.
	MaxPending          int
	MaxPendingBytes     int64
	MaxPendingPerAuthor int64

	// Admit, if set, decides for every op at the moment all its
	// dependencies are present, just before it is applied: the op given
	// to Add and each buffered op an apply unblocks. wanted reports that
	// some buffered op waits for it. Nil admits every op in full. Any
	// value other than AdmitFull and AdmitStub refuses.
	Admit func(op Op, wanted bool) Admission
	// OnApply, if set, is told of each op right after it is applied
	// (a stub without its body), before the next op of the cascade is
	// admitted: so Admit can judge an op by the dependencies just applied.
	// Admit and OnApply may read the DAG; they must not Add or Delete.
	OnApply func(op Op)

	// nodes holds every applied (and gone) op's place in the graph: one
	// map, one small allocation per op (a map per field grew, rehashed
	// and faulted in pages for each of them on every op).
	nodes   map[OpID]*node
	stale   bool // sort keys need recomputing
	skewed  map[OpID]bool
	clamped map[OpID]bool
	heads   map[OpID]struct{}
	gone    map[OpID]bool // deleted by retention: present for causality only
	stub    map[OpID]bool // admitted without a body (AdmitStub)

	// The applied IDs, sorted (what sync reconciles), and those applied
	// since they were last merged in: sync asks for the set on every
	// meeting, and sorting it each time dominated an idle mesh's CPU.
	// sorted is never modified in place (SortedIDs shares it): a merge
	// replaces it.
	sorted, fresh []OpID

	pending      map[OpID]*waiting
	waiters      map[OpID][]OpID // missing dep → pending ops that need it
	fifo         []queued        // pending, oldest first (and stale entries)
	authors      map[string]*authorQueue
	pendingBytes int64
	seq          uint64 // numbers buffered ops, oldest lowest
}

// node is an applied op's place in the DAG.
type node struct {
	deps, children []OpID
	time           Timestamp
	key            Timestamp // sort key; recomputed when the DAG is stale
	author         string
	depth          uint32 // longest path to a root: every dep is shallower
	body           []byte // a DAG without a store (NewMemDAG) keeps it here
}

type waiting struct {
	op      Op
	missing int
	seq     uint64
}

// queued names one buffering of an op. Queues drop entries lazily: an entry
// is live while the op is pending under the same seq (an op evicted and
// buffered again gets a new seq, so its old entry does not count).
type queued struct {
	id  OpID
	seq uint64
}

// authorQueue is one author's share of the buffer.
type authorQueue struct {
	bytes int64
	n     int
	fifo  []queued
}

// NewDAG opens a DAG over store, indexing the ops it already holds (nil:
// no store, see NewMemDAG).
func NewDAG(store Store) (*DAG, error) {
	d := &DAG{
		store: store, MaxSkew: DefaultMaxSkew, MaxPending: DefaultMaxPending,
		MaxPendingBytes: DefaultMaxPendingBytes, MaxPendingPerAuthor: DefaultMaxPendingPerAuthor,
		nodes:  map[OpID]*node{},
		skewed: map[OpID]bool{}, heads: map[OpID]struct{}{}, gone: map[OpID]bool{}, stub: map[OpID]bool{},
		pending: map[OpID]*waiting{}, waiters: map[OpID][]OpID{}, authors: map[string]*authorQueue{},
	}
	if store == nil {
		return d, nil
	}
	var ops []Op
	if err := store.ForEach(func(op Op) error { ops = append(ops, op); return nil }); err != nil {
		return nil, err
	}
	// Index in causal order (Kahn), without writing back to the store.
	byID := make(map[OpID]Op, len(ops))
	for _, op := range ops {
		if err := op.check(); err != nil {
			return nil, fmt.Errorf("reindex op %s: %w", op.ID, err)
		}
		byID[op.ID] = op
	}
	indeg := make(map[OpID]int, len(ops))
	kids := make(map[OpID][]OpID, len(ops))
	var ready []OpID
	for id, op := range byID {
		for _, dep := range op.Deps {
			kids[dep] = append(kids[dep], id)
		}
		indeg[id] = len(op.Deps)
		if len(op.Deps) == 0 {
			ready = append(ready, id)
		}
	}
	for len(ready) > 0 {
		id := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		op := byID[id]
		d.index(op, time.Time{})
		if op.Body == nil && op.Author == "" {
			d.gone[id] = true // retention's stub: no author
		} else if isStub(op) {
			d.stub[id] = true // admitted as a stub: author kept
		}
		for _, k := range kids[id] {
			if indeg[k]--; indeg[k] == 0 {
				ready = append(ready, k)
			}
		}
	}
	if d.Len()+len(d.gone) < len(byID) {
		return nil, fmt.Errorf("%w: stored ops are not causally closed", ErrInvalid)
	}
	return d, nil
}

// NewMemDAG is an in-memory DAG that keeps each op's body in its own
// index instead of in a Store: the same DAG as NewDAG(NewMemStore())
// without a second map and a second copy of every op's header (about
// 170 bytes per op).
func NewMemDAG() *DAG {
	d, _ := NewDAG(nil)
	return d
}

// Has reports whether id is applied (or was, and retention deleted it).
func (d *DAG) Has(id OpID) bool {
	_, ok := d.nodes[id]
	return ok
}

// Pending reports whether id waits for dependencies.
func (d *DAG) Pending(id OpID) bool { return d.pending[id] != nil }

// Len is the number of applied ops still held.
func (d *DAG) Len() int { return len(d.nodes) - len(d.gone) }

// Add applies op if its dependencies are present, else buffers it. It
// returns every op applied as a result, in causal order (op itself and any
// buffered ops it unblocked; a stub as stored, without its body). now is the
// local time, used only to flag ops stamped in the future. A known op
// returns ErrDuplicate; an op too large to buffer returns ErrPendingFull.
// Ops Admit refuses are reported as ErrRefused (joined, one per op) beside
// the ops that were applied: a caller must use the applied ops whatever the
// error.
func (d *DAG) Add(op Op, now time.Time) ([]Op, error) {
	if err := op.check(); err != nil {
		return nil, err
	}
	if d.Has(op.ID) || d.pending[op.ID] != nil {
		return nil, ErrDuplicate
	}
	missing := 0
	for _, dep := range op.Deps {
		if !d.Has(dep) {
			missing++
		}
	}
	if missing > 0 {
		return nil, d.buffer(op, missing)
	}
	var applied []Op
	var errs []error
	queue := []Op{op}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		switch d.admit(next) {
		case AdmitFull:
		case AdmitStub:
			next = Op{ID: next.ID, Deps: next.Deps, Author: next.Author, Time: next.Time}
		default:
			// Not applied: whatever waits for it stays buffered.
			errs = append(errs, fmt.Errorf("admit op %s: %w", next.ID, ErrRefused))
			continue
		}
		if err := d.apply(next, now); err != nil {
			return applied, errors.Join(append(errs, err)...)
		}
		applied = append(applied, next)
		if d.OnApply != nil {
			d.OnApply(next)
		}
		for _, w := range d.waiters[next.ID] {
			p := d.pending[w]
			if p == nil {
				continue // evicted
			}
			if p.missing--; p.missing == 0 {
				d.unbuffer(p)
				queue = append(queue, p.op)
			}
		}
		delete(d.waiters, next.ID)
	}
	return applied, errors.Join(errs...)
}

func (d *DAG) admit(op Op) Admission {
	if d.Admit == nil {
		return AdmitFull
	}
	return d.Admit(op, len(d.waiters[op.ID]) > 0)
}

// isStub tells an op admitted without its body (AdmitStub) from a full one
// and from retention's stub, which has no author either.
func isStub(op Op) bool { return len(op.Body) == 0 && op.Author != "" }

// buffer holds op until its missing dependencies arrive, evicting within
// the author's budget first, then the oldest overall.
func (d *DAG) buffer(op Op, missing int) error {
	size := int64(len(op.Body))
	if size > d.MaxPendingPerAuthor || size > d.MaxPendingBytes {
		return fmt.Errorf("buffer op %s of %d bytes: %w", op.ID, size, ErrPendingFull)
	}
	if a := d.authors[op.Author]; a != nil {
		for a.bytes+size > d.MaxPendingPerAuthor && d.evictOldest(&a.fifo) {
		}
		// A count share too: tiny ops with made-up deps must not push
		// other authors' ops out through the count bound. Half the
		// buffer: a returning device fetches one author's thousands of
		// messages in batches cut without regard to causal order, and a
		// share smaller than a few batches evicts what the next batch
		// would have completed (catch-up crawled at a few ops a round).
		share := d.MaxPending
		if share >= 64 {
			share /= 2
		}
		for a.n+1 > share && d.evictOldest(&a.fifo) {
		}
	}
	for d.pendingBytes+size > d.MaxPendingBytes && d.evictOldest(&d.fifo) {
	}
	for len(d.pending) >= d.MaxPending && d.evictOldest(&d.fifo) {
	}
	d.seq++
	p := &waiting{op: op, missing: missing, seq: d.seq}
	d.pending[op.ID] = p
	for _, dep := range op.Deps {
		if !d.Has(dep) {
			d.waiters[dep] = append(d.waiters[dep], op.ID)
		}
	}
	a := d.authors[op.Author]
	if a == nil {
		a = &authorQueue{}
		d.authors[op.Author] = a
	}
	a.bytes += size
	a.n++
	d.pendingBytes += size
	e := queued{id: op.ID, seq: p.seq}
	d.fifo = d.compact(append(d.fifo, e), len(d.pending))
	a.fifo = d.compact(append(a.fifo, e), a.n)
	return nil
}

// live reports whether a queue entry still names a pending op.
func (d *DAG) live(e queued) bool {
	p := d.pending[e.id]
	return p != nil && p.seq == e.seq
}

// compact drops a queue's stale entries once they outnumber its n live
// ones, into a new array: amortised O(1) per buffered op.
func (d *DAG) compact(q []queued, n int) []queued {
	if len(q) <= 2*n+16 {
		return q
	}
	out := make([]queued, 0, 2*n)
	for _, e := range q {
		if d.live(e) {
			out = append(out, e)
		}
	}
	return out
}

// evictOldest evicts the oldest pending op in q, dropping stale entries
// before it. It reports false when q has no pending op left.
func (d *DAG) evictOldest(q *[]queued) bool {
	for len(*q) > 0 {
		e := (*q)[0]
		*q = (*q)[1:]
		if d.live(e) {
			d.evict(e.id)
			return true
		}
	}
	return false
}

// evict forgets a buffered op: sync can fetch it again.
func (d *DAG) evict(id OpID) {
	p := d.pending[id]
	if p == nil {
		return
	}
	d.unbuffer(p)
	for _, dep := range p.op.Deps {
		ws := slices.DeleteFunc(d.waiters[dep], func(w OpID) bool { return w == id })
		if len(ws) == 0 {
			delete(d.waiters, dep)
		} else {
			d.waiters[dep] = ws
		}
	}
}

// unbuffer takes p out of the buffer and its accounts; its queue entries
// go stale.
func (d *DAG) unbuffer(p *waiting) {
	delete(d.pending, p.op.ID)
	size := int64(len(p.op.Body))
	d.pendingBytes -= size
	if a := d.authors[p.op.Author]; a != nil {
		a.bytes -= size
		if a.n--; a.n == 0 {
			delete(d.authors, p.op.Author)
		}
	}
}

func (d *DAG) apply(op Op, now time.Time) error {
	if d.store != nil {
		if err := d.store.Put(op); err != nil {
			return fmt.Errorf("store op %s: %w", op.ID, err)
		}
	}
	n := d.index(op, now)
	if d.store == nil {
		n.body = op.Body
	}
	if isStub(op) {
		d.stub[op.ID] = true
	}
	return nil
}

// index records op as applied: deps, children, heads.
func (d *DAG) index(op Op, now time.Time) *node {
	n := &node{deps: op.Deps, time: op.Time, author: op.Author}
	d.fresh = append(d.fresh, op.ID)
	for _, dep := range op.Deps {
		if dn := d.nodes[dep]; dn != nil {
			n.depth = max(n.depth, dn.depth+1)
			dn.children = append(dn.children, op.ID)
		}
		delete(d.heads, dep)
	}
	d.nodes[op.ID] = n
	d.heads[op.ID] = struct{}{}
	if !now.IsZero() && op.Time.Wall > now.Add(d.MaxSkew).UnixMilli() {
		d.skewed[op.ID] = true
	}
	d.stale = true
	return n
}

// sortKeys computes every op's sort key. An op's key is its timestamp,
// except when a direct dependant by another author — who saw it, so it
// existed by then — carries a timestamp more than MaxSkew earlier: the
// op's clock was ahead, and its key is pulled down to the earliest such
// dependant's time. Then the key is raised to just above the greatest of
// its dependencies' keys if it is not above it already: an op stamped
// before what it depends on (backdated) sorts just after it — clamped, not
// refused — and is flagged, as a pulled-down op is. A key equal to the
// greatest dependency key is raised but not flagged: that tie is what the
// dependant that pulled a fast op down to its own time makes with it (and
// within one millisecond it moves nothing). Keys depend on the DAG only, so
// every replica computes the same ones; ops are visited in causal order,
// so dependencies' keys are final first.
func (d *DAG) sortKeys() {
	if !d.stale {
		return
	}
	d.stale = false
	d.clamped = map[OpID]bool{}
	indeg := make(map[OpID]int, len(d.nodes))
	var ready []OpID
	for id, n := range d.nodes {
		indeg[id] = len(n.deps)
		if len(n.deps) == 0 {
			ready = append(ready, id)
		}
	}
	skew := d.MaxSkew.Milliseconds()
	for len(ready) > 0 {
		id := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		m := d.nodes[id]
		key := m.time
		for _, c := range m.children {
			cm := d.nodes[c]
			if cm.author != m.author && m.time.Wall > cm.time.Wall+skew && cm.time.Compare(key) < 0 {
				key = cm.time
			}
		}
		if key != m.time {
			d.clamped[id] = true
		}
		if len(m.deps) > 0 {
			var top Timestamp
			for i, dep := range m.deps {
				if k := d.nodes[dep].key; i == 0 || k.Compare(top) > 0 {
					top = k
				}
			}
			if c := key.Compare(top); c <= 0 {
				key = after(top)
				d.clamped[id] = d.clamped[id] || c < 0
			}
		}
		m.key = key
		for _, c := range m.children {
			if indeg[c]--; indeg[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
}

// after is the least timestamp greater than t (t itself at the very end).
func after(t Timestamp) Timestamp {
	switch {
	case t.Logical < math.MaxUint32:
		return Timestamp{Wall: t.Wall, Logical: t.Logical + 1}
	case t.Wall < math.MaxInt64:
		return Timestamp{Wall: t.Wall + 1}
	}
	return t
}

// Missing lists dependencies that buffered ops wait for and nobody has
// delivered: what sync should fetch.
func (d *DAG) Missing() []OpID {
	var out []OpID
	for dep := range d.waiters {
		if !d.Has(dep) && d.pending[dep] == nil {
			out = append(out, dep)
		}
	}
	slices.SortFunc(out, OpID.Compare)
	return out
}

// PendingLen is the number of buffered ops.
func (d *DAG) PendingLen() int { return len(d.pending) }

// PendingBytes is the size of the buffered ops' bodies.
func (d *DAG) PendingBytes() int64 { return d.pendingBytes }

// Heads are the applied ops nothing depends on yet: the deps of the next op.
func (d *DAG) Heads() []OpID {
	out := d.AllHeads()
	if len(out) > MaxDeps {
		out = out[len(out)-MaxDeps:]
	}
	return out
}

// AllHeads is every head, sorted: what the state at the heads is computed
// from (Heads, the deps of a next op, is capped at MaxDeps — a caller
// judging the present must not let whoever makes many heads pick which
// are left out).
func (d *DAG) AllHeads() []OpID {
	out := make([]OpID, 0, len(d.heads))
	for id := range d.heads {
		out = append(out, id)
	}
	slices.SortFunc(out, OpID.Compare)
	return out
}

// Get returns an applied op (a deleted one as its stub: ID, deps and
// timestamp).
func (d *DAG) Get(id OpID) (Op, error) {
	if d.store != nil {
		return d.store.Get(id)
	}
	n := d.nodes[id]
	switch {
	case n == nil:
		return Op{}, ErrNotFound
	case d.gone[id]:
		return Op{ID: id, Deps: n.deps, Time: n.time}, nil
	}
	return Op{ID: id, Deps: n.deps, Author: n.author, Time: n.time, Body: n.body}, nil
}

// Deps returns the dependencies of an applied op.
func (d *DAG) Deps(id OpID) []OpID {
	if n := d.nodes[id]; n != nil {
		return n.deps
	}
	return nil
}

// Key is op id's sort key and whether its timestamp is distrusted: pulled
// down by a dependant or raised above a dependency it claims to precede
// (deterministic), or more than MaxSkew ahead of local time when it
// arrived here (advisory).
func (d *DAG) Key(id OpID) (Timestamp, bool) {
	d.sortKeys()
	var key Timestamp
	if n := d.nodes[id]; n != nil {
		key = n.key
	}
	return key, d.skewed[id] || d.clamped[id]
}

// Stamp is op id's own timestamp, as its author signed it: never pulled
// down by dependants nor raised above dependencies, unlike its sort key.
func (d *DAG) Stamp(id OpID) Timestamp {
	if n := d.nodes[id]; n != nil {
		return n.time
	}
	return Timestamp{}
}

// depth is op id's longest path to a root (0 for unknown IDs).
func (d *DAG) depth(id OpID) uint32 {
	if n := d.nodes[id]; n != nil {
		return n.depth
	}
	return 0
}

// SortCausal orders applied op IDs so that every op comes after its
// dependencies: by depth in the DAG (the longest path to a root), then ID.
// It costs O(n log n) in the IDs given, whatever the DAG's size — unlike
// sort keys, which are recomputed over the whole DAG after every apply.
// Unknown IDs sort first.
func (d *DAG) SortCausal(ids []OpID) {
	slices.SortFunc(ids, func(a, b OpID) int {
		if c := cmp.Compare(d.depth(a), d.depth(b)); c != 0 {
			return c
		}
		return bytes.Compare(a[:], b[:])
	})
}

// Delete destroys an applied op's content (retention). The store keeps a
// stub — ID, deps and timestamp, no author, no body — so the DAG stays
// causally closed across restarts and sync never fetches the op again.
func (d *DAG) Delete(id OpID) error {
	if !d.Has(id) {
		return ErrNotFound
	}
	if d.gone[id] {
		return nil
	}
	if d.store == nil {
		d.nodes[id].body = nil
		d.gone[id] = true
		delete(d.stub, id)
		return nil
	}
	op, err := d.store.Get(id)
	if err != nil {
		return err
	}
	if err := d.store.Put(Op{ID: id, Deps: op.Deps, Time: op.Time}); err != nil {
		return err
	}
	d.gone[id] = true
	delete(d.stub, id)
	return nil
}

// Gone reports whether retention deleted id.
func (d *DAG) Gone(id OpID) bool { return d.gone[id] }

// Stub reports whether id was applied as a stub (AdmitStub): in the DAG,
// with its author and time, without a body. Any applied op with an author
// and an empty body counts as one, which is how it survives a reindex.
// Retention's Delete turns a stub into a gone op.
func (d *DAG) Stub(id OpID) bool { return d.stub[id] }

// IDs lists every op ID the DAG knows as applied, including deleted ones:
// the set sync reconciles.
func (d *DAG) IDs() []OpID {
	if len(d.fresh) > 0 {
		d.sorted, d.fresh = MergeIDs(d.sorted, d.fresh), d.fresh[:0]
	}
	return slices.Clone(d.sorted)
}

// SortedIDs is IDs without the copy: the sorted set, shared. The slice is
// never modified once returned (a merge of newly applied IDs makes a new
// one), so it may be read after the DAG's lock is released, by any number
// of readers; callers must not modify it (its capacity is its length, so
// an append copies).
func (d *DAG) SortedIDs() []OpID {
	if len(d.fresh) > 0 {
		d.sorted, d.fresh = MergeIDs(d.sorted, d.fresh), d.fresh[:0]
	}
	return d.sorted[:len(d.sorted):len(d.sorted)]
}

// MergeIDs returns the sorted union of sorted and fresh (which it sorts in
// place; the two must not share IDs): linear in their sizes, not a sort of
// the whole set.
func MergeIDs(sorted, fresh []OpID) []OpID {
	slices.SortFunc(fresh, OpID.Compare)
	out := make([]OpID, 0, len(sorted)+len(fresh))
	i, j := 0, 0
	for i < len(sorted) && j < len(fresh) {
		if sorted[i].Compare(fresh[j]) < 0 {
			out, i = append(out, sorted[i]), i+1
		} else {
			out, j = append(out, fresh[j]), j+1
		}
	}
	return append(append(out, sorted[i:]...), fresh[j:]...)
}

// Order returns the applied ops (deleted ones included) as a deterministic
// linear extension of the DAG: every op after its dependencies, concurrent
// ops by (sort key, ID). It depends only on the set of ops.
func (d *DAG) Order() []OpID {
	d.sortKeys()
	indeg := make(map[OpID]int, len(d.nodes))
	h := &keyHeap{nodes: d.nodes}
	for id, n := range d.nodes {
		indeg[id] = len(n.deps)
		if len(n.deps) == 0 {
			h.ids = append(h.ids, id)
		}
	}
	heap.Init(h)
	out := make([]OpID, 0, len(d.nodes))
	for h.Len() > 0 {
		id := heap.Pop(h).(OpID)
		out = append(out, id)
		for _, c := range d.nodes[id].children {
			if indeg[c]--; indeg[c] == 0 {
				heap.Push(h, c)
			}
		}
	}
	return out
}

type keyHeap struct {
	ids   []OpID
	nodes map[OpID]*node
}

func (h *keyHeap) Len() int { return len(h.ids) }
func (h *keyHeap) Less(i, j int) bool {
	if c := h.nodes[h.ids[i]].key.Compare(h.nodes[h.ids[j]].key); c != 0 {
		return c < 0
	}
	return h.ids[i].Compare(h.ids[j]) < 0
}
func (h *keyHeap) Swap(i, j int) { h.ids[i], h.ids[j] = h.ids[j], h.ids[i] }
func (h *keyHeap) Push(x any)    { h.ids = append(h.ids, x.(OpID)) }
func (h *keyHeap) Pop() any {
	x := h.ids[len(h.ids)-1]
	h.ids = h.ids[:len(h.ids)-1]
	return x
}
