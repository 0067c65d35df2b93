package crdt

import (
	"bytes"
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"time"
)

// DefaultMaxPending bounds the ops buffered for missing dependencies.
const DefaultMaxPending = 10_000

// DAG holds a causally closed set of applied ops and a bounded buffer of
// ops waiting for dependencies. It is not safe for concurrent use: its owner
// (one conversation replica) serialises access.
type DAG struct {
	store      Store
	MaxSkew    time.Duration
	MaxPending int

	children map[OpID][]OpID
	deps     map[OpID][]OpID // deps of applied (and gone) ops
	meta     map[OpID]meta
	keys     map[OpID]Timestamp // sort keys; recomputed when stale
	stale    bool
	skewed   map[OpID]bool
	clamped  map[OpID]bool
	heads    map[OpID]struct{}
	gone     map[OpID]bool // deleted by retention: present for causality only

	// The applied IDs, sorted (what sync reconciles), and those applied
	// since they were last merged in: sync asks for the set on every
	// meeting, and sorting it each time dominated an idle mesh's CPU.
	sorted, fresh []OpID

	pending map[OpID]*waiting
	waiters map[OpID][]OpID // missing dep → pending ops that need it
	fifo    []OpID          // pending, oldest first
}

type meta struct {
	time   Timestamp
	author string
	depth  uint32 // longest path to a root: every dep is shallower
}

type waiting struct {
	op      Op
	missing int
}

// NewDAG opens a DAG over store, indexing the ops it already holds.
func NewDAG(store Store) (*DAG, error) {
	d := &DAG{
		store: store, MaxSkew: DefaultMaxSkew, MaxPending: DefaultMaxPending,
		children: map[OpID][]OpID{}, deps: map[OpID][]OpID{}, keys: map[OpID]Timestamp{}, meta: map[OpID]meta{},
		skewed: map[OpID]bool{}, heads: map[OpID]struct{}{}, gone: map[OpID]bool{},
		pending: map[OpID]*waiting{}, waiters: map[OpID][]OpID{},
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
			d.gone[id] = true
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

// Has reports whether id is applied (or was, and retention deleted it).
func (d *DAG) Has(id OpID) bool {
	_, ok := d.deps[id]
	return ok
}

// Pending reports whether id waits for dependencies.
func (d *DAG) Pending(id OpID) bool { return d.pending[id] != nil }

// Len is the number of applied ops still held.
func (d *DAG) Len() int { return len(d.deps) - len(d.gone) }

// Add applies op if its dependencies are present, else buffers it. It
// returns every op applied as a result, in causal order (op itself and any
// buffered ops it unblocked). now is the local time, used only to flag ops
// stamped in the future. A known op returns ErrDuplicate.
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
		d.buffer(op, missing)
		return nil, nil
	}
	var applied []Op
	queue := []Op{op}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		if err := d.apply(next, now); err != nil {
			return applied, err
		}
		applied = append(applied, next)
		for _, w := range d.waiters[next.ID] {
			p := d.pending[w]
			if p == nil {
				continue // evicted
			}
			if p.missing--; p.missing == 0 {
				delete(d.pending, w)
				queue = append(queue, p.op)
			}
		}
		delete(d.waiters, next.ID)
	}
	return applied, nil
}

func (d *DAG) buffer(op Op, missing int) {
	for len(d.pending) >= d.MaxPending && len(d.fifo) > 0 {
		d.evict(d.fifo[0])
		d.fifo = d.fifo[1:]
	}
	d.pending[op.ID] = &waiting{op: op, missing: missing}
	d.fifo = append(d.fifo, op.ID)
	for _, dep := range op.Deps {
		if !d.Has(dep) {
			d.waiters[dep] = append(d.waiters[dep], op.ID)
		}
	}
	if len(d.fifo) > 2*d.MaxPending { // drop IDs of ops no longer pending
		d.fifo = slices.DeleteFunc(d.fifo, func(id OpID) bool { return d.pending[id] == nil })
	}
}

func (d *DAG) evict(id OpID) {
	p := d.pending[id]
	if p == nil {
		return
	}
	delete(d.pending, id)
	for _, dep := range p.op.Deps {
		ws := slices.DeleteFunc(d.waiters[dep], func(w OpID) bool { return w == id })
		if len(ws) == 0 {
			delete(d.waiters, dep)
		} else {
			d.waiters[dep] = ws
		}
	}
}

func (d *DAG) apply(op Op, now time.Time) error {
	if err := d.store.Put(op); err != nil {
		return fmt.Errorf("store op %s: %w", op.ID, err)
	}
	d.index(op, now)
	return nil
}

// index records op as applied: deps, children, heads.
func (d *DAG) index(op Op, now time.Time) {
	d.deps[op.ID] = op.Deps
	d.fresh = append(d.fresh, op.ID)
	m := meta{time: op.Time, author: op.Author}
	for _, dep := range op.Deps {
		m.depth = max(m.depth, d.meta[dep].depth+1)
	}
	d.meta[op.ID] = m
	for _, dep := range op.Deps {
		d.children[dep] = append(d.children[dep], op.ID)
		delete(d.heads, dep)
	}
	d.heads[op.ID] = struct{}{}
	if !now.IsZero() && op.Time.Wall > now.Add(d.MaxSkew).UnixMilli() {
		d.skewed[op.ID] = true
	}
	d.stale = true
}

// sortKeys computes every op's sort key. An op's key is its timestamp,
// except when a direct dependant by another author — who saw it, so it
// existed by then — carries a timestamp more than MaxSkew earlier: the
// op's clock was ahead, and its key is pulled down to the earliest such
// dependant's time (never below the keys of its own dependencies). Keys
// depend on the DAG only, so every replica computes the same ones.
func (d *DAG) sortKeys() {
	if !d.stale {
		return
	}
	d.stale = false
	d.clamped = map[OpID]bool{}
	indeg := make(map[OpID]int, len(d.deps))
	var ready []OpID
	for id, deps := range d.deps {
		indeg[id] = len(deps)
		if len(deps) == 0 {
			ready = append(ready, id)
		}
	}
	skew := d.MaxSkew.Milliseconds()
	for len(ready) > 0 {
		id := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		m := d.meta[id]
		key := m.time
		for _, c := range d.children[id] {
			cm := d.meta[c]
			if cm.author != m.author && m.time.Wall > cm.time.Wall+skew && cm.time.Compare(key) < 0 {
				key = cm.time
			}
		}
		if key != m.time {
			for _, dep := range d.deps[id] {
				if k := d.keys[dep]; k.Compare(key) > 0 {
					key = k
				}
			}
			d.clamped[id] = true
		}
		d.keys[id] = key
		for _, c := range d.children[id] {
			if indeg[c]--; indeg[c] == 0 {
				ready = append(ready, c)
			}
		}
	}
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

// Heads are the applied ops nothing depends on yet: the deps of the next op.
func (d *DAG) Heads() []OpID {
	out := make([]OpID, 0, len(d.heads))
	for id := range d.heads {
		out = append(out, id)
	}
	slices.SortFunc(out, OpID.Compare)
	if len(out) > MaxDeps {
		out = out[len(out)-MaxDeps:]
	}
	return out
}

// Get returns an applied op.
func (d *DAG) Get(id OpID) (Op, error) { return d.store.Get(id) }

// Deps returns the dependencies of an applied op.
func (d *DAG) Deps(id OpID) []OpID { return d.deps[id] }

// Key is op id's sort key and whether its timestamp is distrusted: pulled
// down by a dependant (deterministic), or more than MaxSkew ahead of local
// time when it arrived here (advisory).
func (d *DAG) Key(id OpID) (Timestamp, bool) {
	d.sortKeys()
	return d.keys[id], d.skewed[id] || d.clamped[id]
}

// SortCausal orders applied op IDs so that every op comes after its
// dependencies: by depth in the DAG (the longest path to a root), then ID.
// It costs O(n log n) in the IDs given, whatever the DAG's size — unlike
// sort keys, which are recomputed over the whole DAG after every apply.
// Unknown IDs sort first.
func (d *DAG) SortCausal(ids []OpID) {
	slices.SortFunc(ids, func(a, b OpID) int {
		if c := cmp.Compare(d.meta[a].depth, d.meta[b].depth); c != 0 {
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
	op, err := d.store.Get(id)
	if err != nil {
		return err
	}
	if err := d.store.Put(Op{ID: id, Deps: op.Deps, Time: op.Time}); err != nil {
		return err
	}
	d.gone[id] = true
	return nil
}

// Gone reports whether retention deleted id.
func (d *DAG) Gone(id OpID) bool { return d.gone[id] }

// IDs lists every op ID the DAG knows as applied, including deleted ones:
// the set sync reconciles.
func (d *DAG) IDs() []OpID {
	if len(d.fresh) > 0 {
		d.sorted, d.fresh = MergeIDs(d.sorted, d.fresh), d.fresh[:0]
	}
	return slices.Clone(d.sorted)
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
	indeg := make(map[OpID]int, len(d.deps))
	h := &keyHeap{keys: d.keys}
	for id, deps := range d.deps {
		indeg[id] = len(deps)
		if len(deps) == 0 {
			h.ids = append(h.ids, id)
		}
	}
	heap.Init(h)
	out := make([]OpID, 0, len(d.deps))
	for h.Len() > 0 {
		id := heap.Pop(h).(OpID)
		out = append(out, id)
		for _, c := range d.children[id] {
			if indeg[c]--; indeg[c] == 0 {
				heap.Push(h, c)
			}
		}
	}
	return out
}

type keyHeap struct {
	ids  []OpID
	keys map[OpID]Timestamp
}

func (h *keyHeap) Len() int { return len(h.ids) }
func (h *keyHeap) Less(i, j int) bool {
	if c := h.keys[h.ids[i]].Compare(h.keys[h.ids[j]]); c != 0 {
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
