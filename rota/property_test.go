package rota

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// TestConvergenceAnyOrder: replicas that receive the same ops in random
// orders, with duplicates, show the same rota.
func TestConvergenceAnyOrder(t *testing.T) {
	seeds := 60 // 1,000 passed when this was written
	if testing.Short() {
		seeds = 15
	}
	admin := newPerson(t, "admin", AdminRole)
	staff := []*person{newPerson(t, "ann", "reg"), newPerson(t, "bob", "reg"), newPerson(t, "cat", "reg"), newPerson(t, "dan", "nurse")}
	auth := newDir(append(staff, admin)...)
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 7))
		roles := []RoleID{"a", "b"}
		// Build a history on a few partitioned "authors": each knows the
		// ops delivered to it so far.
		var all []*Op
		views := make([]*Rota, 3)
		for i := range views {
			views[i] = New(site)
		}
		add := func(i int, o *Op) {
			all = append(all, o)
			views[i].Add(o, auth) //nolint:errcheck // refusals are part of the test
		}
		for i, id := range roles {
			add(i%3, admin.define(t, id, 1, "reg", roles[(i+1)%2]))
		}
		for step := range 30 {
			i := rng.IntN(3)
			switch rng.IntN(4) {
			case 0: // deliver something known to another author
				if len(all) > 0 {
					views[i].Add(all[rng.IntN(len(all))], auth) //nolint:errcheck
				}
				continue
			}
			id := roles[rng.IntN(len(roles))]
			p := staff[rng.IntN(len(staff))]
			var seen []OpID
			if v, ok := views[i].Role(id, auth); ok {
				seen = v.Live
			}
			at := t0.Add(time.Duration(step) * time.Second)
			var o *Op
			switch rng.IntN(4) {
			case 0, 1:
				o = p.sign(t, Draft{Kind: KindTake, Role: id, Time: at, Seen: seen})
			case 2:
				o = p.sign(t, Draft{Kind: KindHandover, Role: id, Time: at, Seen: seen, To: staff[rng.IntN(len(staff))].id})
			case 3:
				o = p.sign(t, Draft{Kind: KindRelease, Role: id, Time: at, Seen: seen})
			}
			if rng.IntN(8) == 0 {
				o = admin.define(t, id, uint64(step+2), "reg")
			}
			add(i, o)
		}
		var want []Role
		for k := range 6 {
			ops := append([]*Op(nil), all...)
			rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
			ops = append(ops, ops[:len(ops)/3]...) // duplicates
			r := New(site)
			for n, o := range ops {
				r.Add(o, auth)                   //nolint:errcheck
				if k%2 == 1 && n == len(ops)/2 { // a restart halfway
					data, err := r.Marshal()
					if err != nil {
						t.Fatal(err)
					}
					if r, err = Load(data, auth); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := r.View(auth)
			if k == 0 {
				want = got
				continue
			}
			if !reflect.DeepEqual(got, want) {
				names := map[string]string{}
				for _, p := range append(staff, admin) {
					names[string(p.id)] = p.m.Name
				}
				dumpOps(t, all, names)
				t.Logf("order:")
				dumpOps(t, ops, names)
				t.Fatalf("seed %d order %d:\n got %+v\nwant %+v", seed, k, got, want)
			}
		}
	}
}
