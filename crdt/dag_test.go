package crdt

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestIDsStaySorted: the cached sorted ID set follows every apply, in any
// order, and callers get their own copy.
func TestIDsStaySorted(t *testing.T) {
	d, err := NewDAG(NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range 200 {
		var id OpID
		id[0], id[1], id[2] = byte(i*37), byte(i), 1
		ops = append(ops, Op{ID: id, Author: "a", Time: Timestamp{Wall: int64(i)}, Body: []byte{1}})
	}
	for i, op := range ops {
		if _, err := d.Add(op, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if i%17 != 0 {
			continue
		}
		ids := d.IDs()
		if len(ids) != i+1 || !slices.IsSortedFunc(ids, OpID.Compare) {
			t.Fatalf("after %d ops: %d IDs, sorted %v", i+1, len(ids), slices.IsSortedFunc(ids, OpID.Compare))
		}
		ids[0] = OpID{0xff} // a caller's copy
		if d.IDs()[0] == (OpID{0xff}) {
			t.Fatal("IDs shares its cache with the caller")
		}
	}
}

// TestSortCausal: any subset of applied IDs, in any order, comes out with
// every op after its dependencies, even when clocks lie (timestamps
// running backwards along the DAG), and the same after a reload.
func TestSortCausal(t *testing.T) {
	store := NewMemStore()
	d, err := NewDAG(store)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var ids []OpID
	deps := map[OpID][]OpID{}
	for i := range 300 {
		var id OpID
		id[0], id[1], id[2] = byte(rng.IntN(256)), byte(i), byte(i>>8)
		var ds []OpID
		for range rng.IntN(3) {
			if len(ids) > 0 {
				if dep := ids[rng.IntN(len(ids))]; !slices.Contains(ds, dep) {
					ds = append(ds, dep)
				}
			}
		}
		slices.SortFunc(ds, OpID.Compare)
		op := Op{ID: id, Deps: ds, Author: "a", Time: Timestamp{Wall: int64(rng.IntN(1000))}, Body: []byte{1}}
		if _, err := d.Add(op, time.Time{}); err != nil {
			t.Fatal(err)
		}
		ids, deps[id] = append(ids, id), ds
	}
	check := func(d *DAG) {
		t.Helper()
		for range 20 {
			sub := slices.Clone(ids)
			rng.Shuffle(len(sub), func(i, j int) { sub[i], sub[j] = sub[j], sub[i] })
			sub = sub[:1+rng.IntN(len(sub))]
			d.SortCausal(sub)
			pos := map[OpID]int{}
			for i, id := range sub {
				pos[id] = i
			}
			for i, id := range sub {
				for _, dep := range deps[id] {
					if p, ok := pos[dep]; ok && p > i {
						t.Fatalf("op %x at %d before its dependency %x at %d", id[:3], i, dep[:3], p)
					}
				}
			}
		}
	}
	check(d)
	again, err := NewDAG(store)
	if err != nil {
		t.Fatal(err)
	}
	check(again)
}

// TestMemDAGMatchesStore: a DAG without a store (NewMemDAG) answers every
// question as one over a MemStore, through ops arriving out of order,
// stubs, buffering and retention's deletes.
func TestMemDAGMatchesStore(t *testing.T) {
	stored, err := NewDAG(NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	mem := NewMemDAG()
	rng := rand.New(rand.NewPCG(5, 6))
	var ops []Op
	for i := range 400 {
		var id OpID
		id[0], id[1], id[2] = byte(rng.IntN(256)), byte(i), byte(i>>8)
		var deps []OpID
		for range rng.IntN(3) {
			if len(ops) > 0 {
				if dep := ops[rng.IntN(len(ops))].ID; !slices.Contains(deps, dep) {
					deps = append(deps, dep)
				}
			}
		}
		ops = append(ops, Op{ID: id, Deps: deps, Author: string(rune('a' + i%5)), Time: Timestamp{Wall: int64(rng.IntN(1000))}, Body: []byte{byte(i), 1}})
	}
	stubs := func(o Op, _ bool) Admission {
		if o.ID[0]%7 == 0 {
			return AdmitStub
		}
		return AdmitFull
	}
	stored.Admit, mem.Admit = stubs, stubs
	for i, j := range rng.Perm(len(ops)) { // out of order: most wait in the buffer
		for _, d := range []*DAG{stored, mem} {
			if _, err := d.Add(ops[j], time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 0 && stored.Has(ops[j].ID) {
			for _, d := range []*DAG{stored, mem} {
				if err := d.Delete(ops[j].ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if stored.Len() != mem.Len() || !slices.Equal(stored.Order(), mem.Order()) || !slices.Equal(stored.IDs(), mem.IDs()) {
		t.Fatalf("stored: %d ops, mem: %d; orders equal %v", stored.Len(), mem.Len(), slices.Equal(stored.Order(), mem.Order()))
	}
	gone := 0
	for _, o := range ops {
		want, werr := stored.Get(o.ID)
		got, gerr := mem.Get(o.ID)
		if (werr == nil) != (gerr == nil) || got.ID != want.ID || !slices.Equal(got.Deps, want.Deps) ||
			got.Author != want.Author || got.Time != want.Time || !slices.Equal(got.Body, want.Body) ||
			stored.Stub(o.ID) != mem.Stub(o.ID) || stored.Gone(o.ID) != mem.Gone(o.ID) {
			t.Fatalf("op %x: stored %+v (%v), mem %+v (%v)", o.ID[:3], want, werr, got, gerr)
		}
		if mem.Gone(o.ID) {
			gone++
		}
	}
	if gone == 0 || stored.Len() == 0 {
		t.Fatalf("%d deleted of %d applied: the test exercised nothing", gone, stored.Len())
	}
}
