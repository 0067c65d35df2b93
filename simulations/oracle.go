package simulations

import (
	"maps"
	"sort"
)

// The oracle computes, for every message, the earliest time each recipient
// could hold it under any protocol: the earliest time-respecting path
// through the contact graph, with full knowledge of future contacts,
// instant transfer at every contact and every device (member or not)
// willing to carry it. Co-located devices are in contact; so are the two
// devices of a trace link while it is up, and bridges over the WAN while no
// cut isolates them.

const (
	tMove = iota
	tUp
	tDown
	tHeal
)

type tev struct {
	at   float64
	kind uint8
	a, b int // device(s); for a move, b is the place
}

// ostate is where everyone is: a device's place and, per place, a doubly
// linked list of the devices in it; and the trace links that are up.
type ostate struct {
	place, head, next, prev []int32
	adj                     map[int]map[int]bool
}

func (st *ostate) copyFrom(o *ostate) {
	copy(st.place, o.place)
	copy(st.head, o.head)
	copy(st.next, o.next)
	copy(st.prev, o.prev)
	if o.adj != nil {
		st.adj = make(map[int]map[int]bool, len(o.adj))
		for k, v := range o.adj {
			st.adj[k] = maps.Clone(v)
		}
	}
}

func (st *ostate) insert(d int, p int) {
	st.place[d] = int32(p)
	if p == nowhere {
		return
	}
	st.next[d], st.prev[d] = st.head[p], -1
	if h := st.head[p]; h >= 0 {
		st.prev[h] = int32(d)
	}
	st.head[p] = int32(d)
}

func (st *ostate) remove(d int) {
	p := st.place[d]
	if p == nowhere {
		return
	}
	if st.prev[d] >= 0 {
		st.next[st.prev[d]] = st.next[d]
	} else {
		st.head[p] = st.next[d]
	}
	if st.next[d] >= 0 {
		st.prev[st.next[d]] = st.prev[d]
	}
}

func (st *ostate) apply(e tev) {
	switch e.kind {
	case tMove:
		st.remove(e.a)
		st.insert(e.a, e.b)
	case tUp:
		if st.adj[e.a] == nil {
			st.adj[e.a] = map[int]bool{}
		}
		if st.adj[e.b] == nil {
			st.adj[e.b] = map[int]bool{}
		}
		st.adj[e.a][e.b], st.adj[e.b][e.a] = true, true
	case tDown:
		delete(st.adj[e.a], e.b)
		delete(st.adj[e.b], e.a)
	}
}

type oracle struct {
	w        *World
	tl       []tev
	k        int    // events applied to base
	base, st ostate // base: the world at the last message's time
	arr      []float64
	want     []bool
	stack    []int
	bridges  []int
	spread   []int // per place: the infect call that flooded it
	call     int
}

func newOracle(w *World) *oracle {
	n, np := len(w.Devices), len(w.S.Places)
	o := &oracle{w: w, arr: make([]float64, n), want: make([]bool, n), spread: make([]int, np)}
	for i, d := range w.Devices {
		for _, m := range d.Moves {
			o.tl = append(o.tl, tev{at: m.At, kind: tMove, a: i, b: m.Place})
		}
		if d.Bridge {
			o.bridges = append(o.bridges, i)
		}
	}
	for _, l := range w.Links {
		o.tl = append(o.tl, tev{at: l.Up, kind: tUp, a: l.A, b: l.B}, tev{at: l.Down, kind: tDown, a: l.A, b: l.B})
	}
	for _, c := range w.Cuts {
		o.tl = append(o.tl, tev{at: c.To, kind: tHeal})
	}
	// A contact that ends when another starts goes down first (trace
	// contacts last to the end of a second; the next second's are new).
	sort.SliceStable(o.tl, func(i, j int) bool {
		if o.tl[i].at != o.tl[j].at {
			return o.tl[i].at < o.tl[j].at
		}
		return o.tl[i].kind == tDown && o.tl[j].kind != tDown
	})
	for _, st := range []*ostate{&o.base, &o.st} {
		st.place, st.next, st.prev, st.head = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, np)
		for i := range st.head {
			st.head[i] = -1
		}
		if len(w.Links) > 0 {
			st.adj = map[int]map[int]bool{}
		}
	}
	for i, d := range w.Devices {
		o.base.insert(i, d.Start)
	}
	return o
}

// arrivals returns the earliest arrival at every device of a message
// written by src at t0 (-1: no path), computed until every device in want
// has it. Calls must come in order of t0.
func (o *oracle) arrivals(src int, t0 float64, want []int) []float64 {
	for ; o.k < len(o.tl) && o.tl[o.k].at <= t0; o.k++ {
		o.base.apply(o.tl[o.k])
	}
	o.st.copyFrom(&o.base)
	for i := range o.arr {
		o.arr[i] = -1
	}
	left := 0
	for _, d := range want {
		if d != src && !o.want[d] {
			o.want[d] = true
			left++
		}
	}
	left -= o.infect(src, t0)
	for k := o.k; k < len(o.tl) && left > 0; k++ {
		e := o.tl[k]
		o.st.apply(e)
		switch e.kind {
		case tMove:
			if e.b == nowhere {
				continue
			}
			if held := o.infectedAt(e.b, e.a); o.arr[e.a] >= 0 && !held {
				left -= o.infect(e.a, e.at) // spreads to the place
			} else if o.arr[e.a] < 0 && held {
				left -= o.infect(e.a, e.at)
			}
		case tUp:
			if (o.arr[e.a] >= 0) != (o.arr[e.b] >= 0) {
				left -= o.infect(e.a, e.at) + o.infect(e.b, e.at)
			}
		case tHeal:
			for _, b := range o.bridges {
				if o.arr[b] >= 0 {
					left -= o.infect(b, e.at)
					break
				}
			}
		}
	}
	for _, d := range want {
		o.want[d] = false
	}
	return o.arr
}

// infectedAt reports whether the devices in place p (other than d) hold
// the message: a place is all infected or not at all, so one tells.
func (o *oracle) infectedAt(p, d int) bool {
	for x := o.st.head[p]; x >= 0; x = o.st.next[x] {
		if int(x) != d {
			return o.arr[x] >= 0
		}
	}
	return false
}

// infect gives d the message at t (if it lacks it) and floods everything
// in reach; it returns how many wanted devices it reached.
func (o *oracle) infect(d int, t float64) int {
	got := 0
	o.call++
	if o.arr[d] >= 0 {
		o.stack = append(o.stack, d) // already holds it: spread from here
	} else {
		got += o.mark(d, t)
	}
	for len(o.stack) > 0 {
		x := o.stack[len(o.stack)-1]
		o.stack = o.stack[:len(o.stack)-1]
		if p := int(o.st.place[x]); p != nowhere && o.spread[p] != o.call {
			o.spread[p] = o.call
			for y := o.st.head[p]; y >= 0; y = o.st.next[y] {
				got += o.mark(int(y), t)
			}
		}
		if o.w.Devices[x].Bridge && o.w.wanUp(int(o.st.place[x]), t) {
			for _, b := range o.bridges {
				if o.w.wanUp(int(o.st.place[b]), t) {
					got += o.mark(b, t)
				}
			}
		}
		for y := range o.st.adj[x] {
			got += o.mark(y, t)
		}
	}
	return got
}

// mark gives x the message at t if it lacks it (to be spread from, on the
// stack); it returns 1 if x is a wanted device newly reached.
func (o *oracle) mark(x int, t float64) int {
	if o.arr[x] >= 0 {
		return 0
	}
	o.arr[x] = t
	o.stack = append(o.stack, x)
	if o.want[x] {
		return 1
	}
	return 0
}
