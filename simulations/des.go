package simulations

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/mesh"
)

// offSite is the place of a device not yet on site: it meets nobody.
const offSite = -1

// Calibrated virtual costs (from the benchmarks in the README).
const (
	ReceiveCost = 70e-6 // s per op: decode + verify + decrypt + apply (chat ingest)
	OpBytes     = 1024 + 200
)

type device struct {
	name   string
	group  string
	anchor bool
	dag    *crdt.DAG
	place  int
	got    map[crdt.OpID]float64 // when each op arrived
	hops   map[crdt.OpID]int
	moves  []move
	bridge bool
	digest [32]byte // XOR of held op IDs: equal digests (and counts) mean equal sets
}

func (d *device) hold(id crdt.OpID) {
	for i := range d.digest {
		d.digest[i] ^= id[i]
	}
}

type move struct {
	at    float64
	place int
}

type event struct {
	at   float64
	seq  int
	kind int // 0 move, 1 send
	dev  int
	arg  int
}

type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any     { x := (*q)[len(*q)-1]; *q = (*q)[:len(*q)-1]; return x }

// Message is one message's fate at one recipient.
type Message struct {
	ID        int
	From, To  string
	Sent      float64
	Delivered float64 // -1 if never
	Oracle    float64 // -1 if no path existed
	Hops      int
}

// Result is what a run produced.
type Result struct {
	Scenario  Scenario
	Seed      uint64
	Messages  []Message
	Relayed   int
	Bytes     int64
	ReconMsgs int
	Storage   map[string]int64
	Events    int
	Wall      time.Duration
}

// RunDES runs a scenario in virtual time with the given seed. progress, if
// not nil, is told of each processed event.
func RunDES(s Scenario, seed uint64, progress func(done, total int)) (*Result, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0x6d65646d657368))
	horizon := s.Hours * 3600
	placeIdx := map[string]int{}
	for i, p := range s.Places {
		placeIdx[p] = i
	}
	var devs []*device
	for _, g := range s.Devices {
		for i := range g.Count {
			d := &device{name: fmt.Sprintf("%s-%d", g.Name, i+1), group: g.Name, anchor: g.Anchor, bridge: g.Bridge,
				place: placeIdx[g.Home], got: map[crdt.OpID]float64{}, hops: map[crdt.OpID]int{}}
			d.dag, _ = crdt.NewDAG(crdt.NewMemStore())
			// Mobility: off site until the group joins, then visits to
			// other places, back home after each.
			t := 0.0
			if g.JoinAtHours > 0 {
				d.place = offSite
				t = g.JoinAtHours * 3600
				d.moves = append(d.moves, move{t, placeIdx[g.Home]})
			}
			for g.Visits > 0 {
				t += expo(rng, 3600/g.Visits)
				if t >= horizon || len(s.Places) < 2 {
					break
				}
				other := placeIdx[g.Home]
				for tries := 0; other == placeIdx[g.Home] || (tries < 32 && !sameSite(s.Places[other], g.Home)); tries++ {
					other = rng.IntN(len(s.Places))
				}
				d.moves = append(d.moves, move{t, other})
				t += expo(rng, g.VisitMinutes*60)
				if t >= horizon {
					break
				}
				d.moves = append(d.moves, move{t, placeIdx[g.Home]})
			}
			devs = append(devs, d)
		}
	}
	if s.Trace != "" {
		if err := replayTrace(s, devs, placeIdx); err != nil {
			return nil, err
		}
	}
	var members []int
	for i, d := range devs {
		if !d.anchor {
			members = append(members, i)
		}
	}
	if len(members) < 2 {
		return nil, fmt.Errorf("scenario %s: needs at least two member devices", s.Name)
	}
	q := &queue{}
	seq := 0
	push := func(e event) { e.seq = seq; seq++; heap.Push(q, e) }
	for i, d := range devs {
		for _, m := range d.moves {
			push(event{at: m.at, kind: 0, dev: i, arg: m.place})
		}
	}
	type sent struct {
		from int
		at   float64
		id   crdt.OpID
	}
	var msgs []sent
	for t := s.SyncSeconds; t < horizon; t += s.SyncSeconds {
		push(event{at: t, kind: 2})
	}
	for i := range s.Messages {
		at := rng.Float64() * horizon
		if s.BurstMinutes > 0 {
			at = s.BurstAtHours*3600 + rng.Float64()*s.BurstMinutes*60
		}
		push(event{at: at, kind: 1, dev: members[rng.IntN(len(members))], arg: i})
	}
	res := &Result{Scenario: s, Seed: seed, Storage: map[string]int64{}}
	total := q.Len()
	link := func(bytes int, rounds int, ops int) float64 {
		return float64(rounds)*2*s.LinkMS/1000 + float64(bytes)/(s.LinkKBps*1024) + float64(ops)*ReceiveCost
	}
	// transfer gives b the ops a has and b lacks (one direction), at time t.
	transfer := func(a, b *device, need []crdt.OpID, t float64) []crdt.OpID {
		var moved []crdt.OpID
		for _, id := range need {
			op, err := a.dag.Get(id)
			if err != nil {
				continue
			}
			applied, err := b.dag.Add(op, time.Time{})
			if err != nil && err != crdt.ErrDuplicate {
				continue
			}
			res.Relayed++
			for _, ap := range applied {
				if _, ok := b.got[ap.ID]; !ok {
					b.hold(ap.ID)
					b.got[ap.ID] = t
					b.hops[ap.ID] = a.hops[ap.ID] + 1
					moved = append(moved, ap.ID)
				}
			}
		}
		return moved
	}
	var bridges []*device
	for _, d := range devs {
		if d.bridge {
			bridges = append(bridges, d)
		}
	}
	var sync func(a, b *device, t float64)
	// bridge passes what a bridge anchor learnt to the others over the WAN.
	bridge := func(a *device, t float64) {
		if !a.bridge {
			return
		}
		for _, o := range bridges {
			if o != a {
				sync(a, o, t+s.WANMS/1000)
			}
		}
	}
	// sync runs the real reconciliation between two devices in contact.
	sync = func(a, b *device, t float64) {
		if a.digest == b.digest && len(a.got) == len(b.got) {
			// Identical sets: the real protocol settles this in one round
			// trip of one fingerprint each way.
			res.ReconMsgs += 2
			res.Bytes += 48
			return
		}
		sa, sb := mesh.NewSession(a.dag.IDs()), mesh.NewSession(b.dag.IDs())
		msg, _ := sa.Initiate()
		cur, rounds, bytes := sb, 0, 0
		for msg != nil && rounds < mesh.MaxRounds {
			bytes += len(msg)
			rounds++
			res.ReconMsgs++
			var err error
			if msg, err = cur.Reply(msg); err != nil {
				return
			}
			if cur == sb {
				cur = sa
			} else {
				cur = sb
			}
		}
		needA, needB := sa.Need(), sb.Need()
		res.Bytes += int64(bytes + (len(needA)+len(needB))*(OpBytes+32))
		done := t + link(bytes+(len(needA)+len(needB))*OpBytes, (rounds+1)/2+1, len(needA)+len(needB))
		if len(transfer(b, a, needA, done)) > 0 {
			bridge(a, done)
		}
		if len(transfer(a, b, needB, done)) > 0 {
			bridge(b, done)
		}
	}
	here := func(p int) []int {
		if p == offSite {
			return nil // off site: nobody to meet
		}
		var out []int
		for i, d := range devs {
			if d.place == p {
				out = append(out, i)
			}
		}
		return out
	}
	done := 0
	for q.Len() > 0 {
		e := heap.Pop(q).(event)
		done++
		if progress != nil && done%256 == 0 {
			progress(done, total)
		}
		d := devs[e.dev]
		switch e.kind {
		case 0: // arrives somewhere: meet everyone there
			d.place = e.arg
			for _, o := range here(e.arg) {
				if o != e.dev {
					sync(d, devs[o], e.at)
				}
			}
		case 1: // writes a message: push to everyone in reach (gossip)
			var b [16]byte
			binary.LittleEndian.PutUint64(b[:], seed)
			binary.LittleEndian.PutUint64(b[8:], uint64(e.arg))
			op := crdt.Op{ID: sha256.Sum256(b[:]), Deps: d.dag.Heads(), Author: d.name,
				Time: crdt.Timestamp{Wall: int64(e.at * 1000)}, Body: []byte{1}}
			d.dag.Add(op, time.Time{})
			d.got[op.ID], d.hops[op.ID] = e.at, 0
			d.hold(op.ID)
			msgs = append(msgs, sent{from: e.dev, at: e.at, id: op.ID})
			for _, o := range here(d.place) {
				if o != e.dev {
					res.Bytes += OpBytes
					if len(transfer(d, devs[o], []crdt.OpID{op.ID}, e.at+link(OpBytes, 1, 1))) > 0 {
						bridge(devs[o], e.at+link(OpBytes, 1, 1))
					}
				}
			}
		case 2: // anti-entropy round in every place
			for p := range s.Places {
				in := here(p)
				for i := 0; i+1 < len(in); i++ {
					sync(devs[in[i]], devs[in[i+1]], e.at)
				}
			}
		}
	}
	res.Events = done
	if progress != nil {
		progress(total, total)
	}
	oracle := oracleArrivals(devs, s, placeIdx)
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].at < msgs[j].at })
	for i, m := range msgs {
		for _, r := range members {
			if r == m.from {
				continue
			}
			rec := Message{ID: i, From: devs[m.from].name, To: devs[r].name, Sent: m.at, Delivered: -1, Oracle: -1}
			if t, ok := devs[r].got[m.id]; ok {
				rec.Delivered, rec.Hops = t, devs[r].hops[m.id]
			}
			if t := oracle(m.from, m.at)[r]; t >= 0 {
				rec.Oracle = t
			}
			res.Messages = append(res.Messages, rec)
		}
	}
	for _, d := range devs {
		res.Storage[d.name] = int64(d.dag.Len()) * OpBytes
	}
	res.Wall = time.Since(start)
	return res, nil
}

// oracleArrivals returns, for a message written by src at t0, the earliest
// time every device could hold it: instant transfer at every co-location,
// with full knowledge of future contacts (-1: no path).
func oracleArrivals(devs []*device, s Scenario, placeIdx map[string]int) func(src int, t0 float64) []float64 {
	type mv struct {
		at    float64
		dev   int
		place int
	}
	var all []mv
	for i, d := range devs {
		for _, m := range d.moves {
			all = append(all, mv{m.at, i, m.place})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at < all[j].at })
	home := make([]int, len(devs))
	for i, d := range devs {
		for _, g := range s.Devices {
			if d.group == g.Name {
				home[i] = placeIdx[g.Home]
				if g.JoinAtHours > 0 {
					home[i] = offSite
				}
			}
		}
	}
	return func(src int, t0 float64) []float64 {
		place := append([]int(nil), home...)
		k := 0
		for ; k < len(all) && all[k].at <= t0; k++ {
			place[all[k].dev] = all[k].place
		}
		members := make([][]int, len(s.Places)+1) // devices present, per place (last: off site)
		slot := func(p int) int {
			if p == offSite {
				return len(s.Places)
			}
			return p
		}
		for i, p := range place {
			members[slot(p)] = append(members[slot(p)], i)
		}
		infected := make([]int, len(s.Places)+1) // infected devices present, per place
		arr := make([]float64, len(devs))
		for i := range arr {
			arr[i] = -1
		}
		var infect func(i int, t float64)
		var spread func(p int, t float64)
		infect = func(i int, t float64) {
			arr[i] = t
			infected[slot(place[i])]++
			if devs[i].bridge { // the WAN link is always up
				for j, o := range devs {
					if o.bridge && arr[j] < 0 {
						infect(j, t)
						spread(place[j], t)
					}
				}
			}
		}
		spread = func(p int, t float64) {
			if p == offSite {
				return // off site: nobody to meet
			}
			for _, i := range members[p] {
				if arr[i] < 0 {
					infect(i, t)
				}
			}
		}
		infect(src, t0)
		spread(place[src], t0)
		for ; k < len(all); k++ {
			m := all[k]
			old := slot(place[m.dev])
			members[old] = removeOne(members[old], m.dev)
			if arr[m.dev] >= 0 {
				infected[old]--
			}
			place[m.dev] = m.place
			members[slot(m.place)] = append(members[slot(m.place)], m.dev)
			switch {
			case arr[m.dev] >= 0:
				infected[slot(m.place)]++
				spread(m.place, m.at)
			case infected[slot(m.place)] > 0 && m.place != offSite:
				infect(m.dev, m.at)
			}
		}
		return arr
	}
}

func removeOne(xs []int, x int) []int {
	for i, y := range xs {
		if y == x {
			return append(xs[:i], xs[i+1:]...)
		}
	}
	return xs
}

// sameSite reports whether two places share a site prefix ("north-ward" and
// "north-ed"); places without a prefix are all one site.
func sameSite(a, b string) bool {
	pa, _, okA := strings.Cut(a, "-")
	pb, _, okB := strings.Cut(b, "-")
	return !okA || !okB || pa == pb
}

// replayTrace replaces generated mobility with a contact trace.
func replayTrace(s Scenario, devs []*device, placeIdx map[string]int) error {
	fh, err := os.Open(s.Trace)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	defer fh.Close()
	rows, err := csv.NewReader(fh).ReadAll()
	if err != nil {
		return fmt.Errorf("trace %s: %w", s.Trace, err)
	}
	byName := map[string]*device{}
	for _, d := range devs {
		byName[d.name] = d
		d.moves = nil
	}
	for i, r := range rows {
		if len(r) != 3 {
			return fmt.Errorf("trace %s: line %d: want seconds,device,place", s.Trace, i+1)
		}
		if i == 0 && r[0] == "seconds" {
			continue // header
		}
		t, err := strconv.ParseFloat(r[0], 64)
		d, okD := byName[r[1]]
		p, okP := placeIdx[r[2]]
		switch {
		case err != nil || t < 0:
			return fmt.Errorf("trace %s: line %d: bad time %q", s.Trace, i+1, r[0])
		case !okD:
			return fmt.Errorf("trace %s: line %d: unknown device %q", s.Trace, i+1, r[1])
		case !okP:
			return fmt.Errorf("trace %s: line %d: unknown place %q", s.Trace, i+1, r[2])
		}
		d.moves = append(d.moves, move{t, p})
	}
	for _, d := range devs {
		sort.SliceStable(d.moves, func(i, j int) bool { return d.moves[i].at < d.moves[j].at })
	}
	return nil
}
