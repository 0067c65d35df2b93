package crdt_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/crdt/crdttest"
)

func TestMemStoreConformance(t *testing.T) {
	crdttest.Run(t, func(t *testing.T) crdt.Store { return crdt.NewMemStore() })
}

func mkop(name string, wall int64, deps ...crdt.OpID) crdt.Op {
	return crdt.Op{ID: sha256.Sum256([]byte(name)), Deps: deps, Author: "a", Time: crdt.Timestamp{Wall: wall}, Body: []byte(name)}
}

// randomHistory makes n ops by several authors, each depending on the heads
// its author had seen: a realistic DAG with concurrency.
func randomHistory(rng *rand.Rand, n int) []crdt.Op {
	root := mkop("root", 1000)
	ops := []crdt.Op{root}
	for i := 1; i < n; i++ {
		var deps []crdt.OpID
		for _, j := range rng.Perm(len(ops))[:min(len(ops), 1+rng.IntN(3))] {
			deps = append(deps, ops[j].ID)
		}
		slices.SortFunc(deps, crdt.OpID.Compare)
		deps = slices.Compact(deps)
		ops = append(ops, mkop(fmt.Sprint("op", i), 1000+int64(rng.IntN(5000)), deps...))
	}
	return ops
}

// TestOrderIndependentOfDelivery: any delivery order, with duplicates, gives
// the same applied set and the same linear order.
func TestOrderIndependentOfDelivery(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 1))
		ops := randomHistory(rng, 200)
		var want []crdt.OpID
		for trial := range 4 {
			d, _ := crdt.NewDAG(crdt.NewMemStore())
			deliver := slices.Clone(ops)
			rng.Shuffle(len(deliver), func(i, j int) { deliver[i], deliver[j] = deliver[j], deliver[i] })
			deliver = append(deliver, deliver[:50]...) // duplicates
			for _, op := range deliver {
				if _, err := d.Add(op, time.Time{}); err != nil && !errors.Is(err, crdt.ErrDuplicate) {
					t.Fatal(err)
				}
			}
			if d.Len() != len(ops) || d.PendingLen() != 0 {
				t.Fatalf("seed %d: applied %d pending %d", seed, d.Len(), d.PendingLen())
			}
			got := d.Order()
			pos := map[crdt.OpID]int{}
			for i, id := range got {
				pos[id] = i
			}
			for _, op := range ops {
				for _, dep := range op.Deps {
					if pos[dep] >= pos[op.ID] {
						t.Fatalf("seed %d: op before its dependency", seed)
					}
				}
			}
			if trial == 0 {
				want = got
			} else if !slices.Equal(got, want) {
				t.Fatalf("seed %d: order depends on delivery order", seed)
			}
		}
	}
}

func TestBufferEvictionAndMissing(t *testing.T) {
	d, _ := crdt.NewDAG(crdt.NewMemStore())
	d.MaxPending = 3
	root := mkop("root", 1)
	var orphans []crdt.Op
	for i := range 5 {
		orphans = append(orphans, mkop(fmt.Sprint("orphan", i), 2, root.ID))
	}
	for _, o := range orphans {
		d.Add(o, time.Time{})
	}
	if d.PendingLen() != 3 {
		t.Fatalf("pending %d, want bounded at 3", d.PendingLen())
	}
	if m := d.Missing(); len(m) != 1 || m[0] != root.ID {
		t.Fatalf("Missing = %v", m)
	}
	applied, err := d.Add(root, time.Time{})
	if err != nil || len(applied) != 4 || applied[0].ID != root.ID {
		t.Fatalf("applied %d ops, err %v", len(applied), err)
	}
	if d.Has(orphans[0].ID) || !d.Has(orphans[4].ID) {
		t.Fatal("eviction should drop the oldest buffered op")
	}
	if len(d.Missing()) != 0 {
		t.Fatal("nothing should be missing now")
	}
}

func TestInvalidOps(t *testing.T) {
	d, _ := crdt.NewDAG(crdt.NewMemStore())
	self := mkop("self", 1)
	self.Deps = []crdt.OpID{self.ID}
	twice := mkop("twice", 1, sha256.Sum256([]byte("x")), sha256.Sum256([]byte("x")))
	many := mkop("many", 1)
	for i := range crdt.MaxDeps + 1 {
		many.Deps = append(many.Deps, sha256.Sum256([]byte(fmt.Sprint(i))))
	}
	for _, op := range []crdt.Op{self, twice, many, {}} {
		if _, err := d.Add(op, time.Time{}); !errors.Is(err, crdt.ErrInvalid) {
			t.Errorf("op %v: err %v", op.ID, err)
		}
	}
	r := mkop("r", 1)
	d.Add(r, time.Time{})
	if _, err := d.Add(r, time.Time{}); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
}

// TestSkewedClockCannotPinToEnd: a device two hours ahead writes one message
// concurrently with others; it is clamped near its causal context and
// flagged, and the later honest messages that saw it come after it.
func TestSkewedClockCannotPinToEnd(t *testing.T) {
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	d, _ := crdt.NewDAG(crdt.NewMemStore())
	root := mkop("root", base.UnixMilli())
	ahead := mkop("ahead", base.Add(2*time.Hour).UnixMilli(), root.ID)
	ahead.Author = "bob (clock two hours fast)"
	honest1 := mkop("honest1", base.Add(30*time.Second).UnixMilli(), root.ID)
	honest2 := mkop("honest2", base.Add(10*time.Minute).UnixMilli(), honest1.ID)
	reply := mkop("reply", base.Add(11*time.Minute).UnixMilli(), ahead.ID, honest2.ID)
	reply.Author = "carol"
	for _, op := range []crdt.Op{root, ahead, honest1, honest2, reply} {
		if _, err := d.Add(op, base.Add(11*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	order := d.Order()
	idx := func(op crdt.Op) int { return slices.Index(order, op.ID) }
	if !(idx(ahead) < idx(reply) && idx(honest2) < idx(reply)) {
		t.Fatalf("skewed op pinned late: order %v", order)
	}
	if k, flagged := d.Key(ahead.ID); !flagged || k.Wall != reply.Time.Wall {
		t.Fatalf("skewed op not pulled down to its first answer: key %v flagged %v", k, flagged)
	}
	for _, op := range []crdt.Op{honest2, reply} {
		if _, flagged := d.Key(op.ID); flagged {
			t.Fatalf("honest op %s flagged", op.Body)
		}
	}
}

func TestClockBound(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c := crdt.NewClock(func() time.Time { return now })
	a := c.Now()
	if b := c.Now(); b.Compare(a) <= 0 {
		t.Fatal("clock not monotonic within a millisecond")
	}
	if c.Observe(crdt.Timestamp{Wall: now.Add(2 * time.Hour).UnixMilli()}) {
		t.Fatal("adopted a timestamp two hours ahead")
	}
	if c.Now().Wall != now.UnixMilli() {
		t.Fatal("a far-future timestamp moved the clock")
	}
	near := crdt.Timestamp{Wall: now.Add(time.Minute).UnixMilli(), Logical: 4}
	if !c.Observe(near) || c.Now().Compare(near) <= 0 {
		t.Fatal("clock did not adopt a timestamp within the bound")
	}
}

func TestReindexAndRetention(t *testing.T) {
	store := crdt.NewMemStore()
	d, _ := crdt.NewDAG(store)
	ops := randomHistory(rand.New(rand.NewPCG(7, 7)), 100)
	for _, op := range ops {
		d.Add(op, time.Time{})
	}
	for _, op := range ops[:40] {
		if err := d.Delete(op.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Get(ops[0].ID); err != nil {
		t.Fatal("stub missing")
	} else if op, _ := store.Get(ops[0].ID); op.Body != nil || op.Author != "" {
		t.Fatal("retention left content behind")
	}
	again, err := crdt.NewDAG(store)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Order(), d.Order()) || !again.Gone(ops[0].ID) || again.Gone(ops[99].ID) {
		t.Fatal("reindexed DAG differs")
	}
	if _, err := again.Add(ops[0], time.Time{}); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatal("a deleted op could be fetched again")
	}
}

func TestTypesCommute(t *testing.T) {
	id := func(s string) crdt.OpID { return sha256.Sum256([]byte(s)) }
	type w struct {
		v  string
		at crdt.Stamp
	}
	writes := []w{{"a", crdt.Stamp{Key: crdt.Timestamp{Wall: 1}, ID: id("1")}}, {"b", crdt.Stamp{Key: crdt.Timestamp{Wall: 3}, ID: id("2")}}, {"c", crdt.Stamp{Key: crdt.Timestamp{Wall: 2}, ID: id("3")}}}
	for _, perm := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}} {
		var r crdt.LWW[string]
		for _, i := range perm {
			r.Set(writes[i].v, writes[i].at)
		}
		if r.Value != "b" {
			t.Fatalf("LWW = %q", r.Value)
		}
	}
	// Remove observed only tag t1; a concurrent add with t2 survives, in any order.
	for _, removeFirst := range []bool{false, true} {
		s := crdt.NewORSet[string]()
		if removeFirst {
			s.Remove("👍", []crdt.OpID{id("t1")})
		}
		s.Add("👍", id("t1"))
		s.Add("👍", id("t2"))
		if !removeFirst {
			s.Remove("👍", []crdt.OpID{id("t1")})
		}
		if !s.Contains("👍") || len(s.Tags("👍")) != 1 {
			t.Fatalf("ORSet removeFirst=%v: %v", removeFirst, s.Tags("👍"))
		}
	}
	m := crdt.NewMaxRegister[string]()
	m.Raise("dev", 3)
	m.Raise("dev", 1)
	if m.Get("dev") != 3 {
		t.Fatal("max register went backwards")
	}
}

// FuzzApply feeds arbitrary op sequences, some refused or stubbed on
// admission: the DAG must never panic, never apply an op before its
// dependencies, and stay within its buffer bounds.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 1, 0, 4, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, _ := crdt.NewDAG(crdt.NewMemStore())
		d.MaxPending, d.MaxPendingBytes, d.MaxPendingPerAuthor = 8, 6, 4
		d.Admit = func(op crdt.Op, wanted bool) crdt.Admission {
			if op.ID[0]%5 == 0 && !wanted {
				return crdt.Refuse
			}
			return crdt.Admission(op.ID[1] % 3)
		}
		ids := []crdt.OpID{}
		for i := 0; i+1 < len(data); i += 2 {
			op := crdt.Op{ID: sha256.Sum256(data[i : i+2]), Time: crdt.Timestamp{Wall: int64(data[i])},
				Author: string(rune('a' + data[i]%3)), Body: make([]byte, data[i+1]%4)}
			if len(ids) > 0 {
				op.Deps = append(op.Deps, ids[int(data[i+1])%len(ids)])
			}
			if data[i+1]%7 == 0 {
				op.Deps = append(op.Deps, sha256.Sum256([]byte{data[i+1]}))
			}
			applied, _ := d.Add(op, time.Time{})
			for _, a := range applied {
				for _, dep := range a.Deps {
					if !d.Has(dep) {
						t.Fatal("applied before dependency")
					}
				}
			}
			ids = append(ids, op.ID)
			if d.PendingLen() > 8 || d.PendingBytes() > 6 {
				t.Fatal("buffer bound exceeded")
			}
		}
		_ = d.Order()
	})
}

// TestKeyNeverBeforeDeps: an op's sort key is above every dependency's key,
// whatever its timestamp says. A backdated op is clamped just after what it
// depends on (not refused) and flagged; an honest one keeps its stamp.
func TestKeyNeverBeforeDeps(t *testing.T) {
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).UnixMilli()
	hour := time.Hour.Milliseconds()
	ts := func(wall int64, logical uint32) crdt.Timestamp { return crdt.Timestamp{Wall: wall, Logical: logical} }
	tests := []struct {
		name          string
		depAuthor     string
		dep, op       crdt.Timestamp // stamps
		wantDep, want crdt.Timestamp // keys
		depFlag, flag bool
	}{
		{"later op keeps its stamp", "a", ts(base, 0), ts(base+1000, 0), ts(base, 0), ts(base+1000, 0), false, false},
		{"backdated an hour: sorts after its dep", "a", ts(base, 0), ts(base-hour, 0), ts(base, 0), ts(base, 1), false, true},
		{"backdated within the millisecond", "a", ts(base, 5), ts(base, 2), ts(base, 5), ts(base, 6), false, true},
		{"same stamp as its dep: a tick later, not flagged", "a", ts(base, 0), ts(base, 0), ts(base, 0), ts(base, 1), false, false},
		{"logical counter full: next millisecond", "a", ts(base, math.MaxUint32), ts(base-hour, 0), ts(base, math.MaxUint32), ts(base+1, 0), false, true},
		{"no room above the dep's key", "a", ts(math.MaxInt64, math.MaxUint32), ts(base, 0), ts(math.MaxInt64, math.MaxUint32), ts(math.MaxInt64, math.MaxUint32), false, true},
		// Another author's answer an hour earlier pulls a root dep down to
		// its time: the dep's clock looks fast, and it is flagged. The
		// answer ties with it and still sorts just after it, unflagged —
		// the DAG cannot tell a fast clock from a backdated answer here.
		{"another author's answer pulls a fast dep down", "b", ts(base, 0), ts(base-hour, 0), ts(base-hour, 0), ts(base-hour, 1), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := crdt.NewMemStore()
			d, _ := crdt.NewDAG(store)
			dep := mkop("dep", 0)
			dep.Author, dep.Time = tt.depAuthor, tt.dep
			op := mkop("op", 0, dep.ID)
			op.Time = tt.op
			for _, o := range []crdt.Op{dep, op} {
				if _, err := d.Add(o, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []*crdt.DAG{d, must(crdt.NewDAG(store))} { // and after a reindex
				if k, flag := d.Key(dep.ID); k != tt.wantDep || flag != tt.depFlag {
					t.Fatalf("dep key %v flagged %v, want %v %v", k, flag, tt.wantDep, tt.depFlag)
				}
				if k, flag := d.Key(op.ID); k != tt.want || flag != tt.flag {
					t.Fatalf("op key %v flagged %v, want %v %v", k, flag, tt.want, tt.flag)
				}
				if !slices.Equal(d.Order(), []crdt.OpID{dep.ID, op.ID}) {
					t.Fatal("op sorts before its dependency")
				}
			}
		})
	}
}

// TestKeyClampCascades: ops that depend on a clamped op are raised above
// its key in turn, so the chain keeps its causal order in keys; an honest
// later op is untouched.
func TestKeyClampCascades(t *testing.T) {
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).UnixMilli()
	d, _ := crdt.NewDAG(crdt.NewMemStore())
	a := mkop("a", base)
	b := mkop("b", base-50, a.ID)   // backdated
	c := mkop("c", base-25, b.ID)   // also before a, which it saw
	h := mkop("h", base+1000, c.ID) // honest
	for _, o := range []crdt.Op{a, b, c, h} {
		if _, err := d.Add(o, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		op   crdt.Op
		want crdt.Timestamp
		flag bool
	}{
		{a, crdt.Timestamp{Wall: base}, false},
		{b, crdt.Timestamp{Wall: base, Logical: 1}, true},
		{c, crdt.Timestamp{Wall: base, Logical: 2}, true},
		{h, crdt.Timestamp{Wall: base + 1000}, false},
	}
	for _, tt := range tests {
		if k, flag := d.Key(tt.op.ID); k != tt.want || flag != tt.flag {
			t.Errorf("%s: key %v flagged %v, want %v %v", tt.op.Body, k, flag, tt.want, tt.flag)
		}
	}
}

// TestBackdatedAnswerFlagged: another author's answer stamped an hour
// before an op that has a causal past pulls that op down only as far as its
// past allows, so the answer stays below the op's key: it is raised above
// it and flagged.
func TestBackdatedAnswerFlagged(t *testing.T) {
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).UnixMilli()
	d, _ := crdt.NewDAG(crdt.NewMemStore())
	r := mkop("r", base-10*time.Minute.Milliseconds())
	m := mkop("m", base, r.ID)
	x := mkop("x", base-time.Hour.Milliseconds(), m.ID)
	x.Author = "mallory"
	for _, o := range []crdt.Op{r, m, x} {
		if _, err := d.Add(o, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		op   crdt.Op
		want crdt.Timestamp
		flag bool
	}{
		{r, r.Time, false},
		{m, crdt.Timestamp{Wall: r.Time.Wall, Logical: 1}, true},
		{x, crdt.Timestamp{Wall: r.Time.Wall, Logical: 2}, true},
	}
	for _, tt := range tests {
		if k, flag := d.Key(tt.op.ID); k != tt.want || flag != tt.flag {
			t.Errorf("%s: key %v flagged %v, want %v %v", tt.op.Body, k, flag, tt.want, tt.flag)
		}
	}
}

// TestORSetRemoveCoversItsElement: a remove of one element that names the
// tag of another element's add (another user's reaction) removes nothing
// of the other, in either order; it still removes its own element's tags.
func TestORSetRemoveCoversItsElement(t *testing.T) {
	id := func(s string) crdt.OpID { return sha256.Sum256([]byte(s)) }
	tests := []struct {
		name        string
		removeFirst bool
	}{
		{"remove applied after the add", false},
		{"remove applied before the add", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := crdt.NewORSet[string]()
			attack := func() { s.Remove("a", []crdt.OpID{id("add b"), id("add a")}) }
			if tt.removeFirst {
				attack()
			}
			s.Add("a", id("add a"))
			s.Add("b", id("add b"))
			if !tt.removeFirst {
				attack()
			}
			if !s.Contains("b") || !slices.Equal(s.Tags("b"), []crdt.OpID{id("add b")}) {
				t.Fatalf("b's add removed by a remove of a: tags %v", s.Tags("b"))
			}
			if s.Contains("a") || !slices.Equal(s.Elements(), []string{"b"}) {
				t.Fatalf("a's observed add survived its remove: elements %v", s.Elements())
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
