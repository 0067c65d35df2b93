package simulations

import (
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/mesh"
)

// Calibrated virtual costs and the gossip model of the discrete-event
// engine. Signature checks and decryption are not computed: each op a
// device takes in costs ReceiveCost of virtual time — the chat ingest
// benchmark's per-op time on this machine (decode, ZIP-215 batch verify,
// decrypt, apply), see the README.
const (
	ReceiveCost  = 70e-6 // s per op received
	OpBytes      = 1024 + 200
	GossipDegree = 6 // gossipsub's D: a push reaches each subscriber from up to D mesh peers
)

// replica is one device's copy of one conversation (or, on an anchor, the
// ciphertext it carries): a real crdt DAG and its sorted ID set.
type replica struct {
	dag    *crdt.DAG
	ids    []crdt.OpID // sorted
	fresh  []crdt.OpID // added since ids was last merged
	digest [32]byte    // XOR of the IDs: equal digests and counts mean equal sets
}

func newReplica() *replica {
	return &replica{dag: crdt.NewMemDAG()}
}

func (r *replica) add(id crdt.OpID) {
	r.fresh = append(r.fresh, id)
	for i := range r.digest {
		r.digest[i] ^= id[i]
	}
}

func (r *replica) n() int { return len(r.ids) + len(r.fresh) }

// sorted merges the fresh IDs in: linear, not a sort of the whole set.
func (r *replica) sorted() []crdt.OpID {
	if len(r.fresh) > 0 {
		r.ids, r.fresh = crdt.MergeIDs(r.ids, r.fresh), r.fresh[:0]
	}
	return r.ids
}

type arrival struct {
	at   float64
	hops int32
}

type dnode struct {
	*Device
	idx   int
	place int
	reps  map[int]*replica // by conversation (trustConv: the CRLs)
	convs []int            // keys of reps, sorted
	got   map[int32]arrival
	links []int // trace contacts up now, sorted
}

func (d *dnode) rep(c int) *replica {
	r := d.reps[c]
	if r == nil {
		r = newReplica()
		d.reps[c] = r
		i, _ := slices.BinarySearch(d.convs, c)
		d.convs = slices.Insert(d.convs, i, c)
	}
	return r
}

// Event kinds.
const (
	eMove = iota
	eSend
	eRound
	eUp
	eDown
	eRevoke
	eHeal
)

type event struct {
	at    float64
	seq   int
	kind  int
	a, b  int
	until float64 // eUp: when the contact ends
}

type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	// A contact that ends when another starts goes down first: trace
	// contacts last to the end of a second, and the next second's are new.
	if di, dj := q[i].kind == eDown, q[j].kind == eDown; di != dj {
		return di
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any     { x := (*q)[len(*q)-1]; *q = (*q)[:len(*q)-1]; return x }

// des is one discrete-event run.
type des struct {
	w         *World
	res       *Result
	nodes     []*dnode
	at        [][]int // devices present, per place
	ids       []crdt.OpID
	msgOf     map[crdt.OpID]int32
	syncKeys  map[crdt.OpID]uint64 // each op's sync key, as its envelope gives it (e2e.Envelope.SyncKey)
	deps      [][]int32            // per message: the messages it depends on
	trustConv int
	bridges   []*dnode
	epidemic  bool
	contacts  map[[2]int]*contact // trace links up now
	carry     *carriage           // routing medmesh-carry: carriage by non-members (carry.go)
}

// contact is a trace link while it is up: one channel that carries a
// transfer at a time, until its end — what the contact's duration and the
// link's bandwidth allow, and nothing after.
type contact struct {
	free float64 // when what was queued on it has gone
	end  float64
}

// crlKey is the arrival key of revocation r's CRL.
func crlKey(r int) int32 { return int32(-1 - r) }

// RunDES runs a scenario in virtual time with the given seed. progress, if
// not nil, is told of processed events.
func RunDES(s Scenario, seed uint64, progress func(done, total int)) (*Result, error) {
	w, err := Build(s, seed)
	if err != nil {
		return nil, err
	}
	return w.RunDES(progress), nil
}

// RunDES runs the world in virtual time.
func (w *World) RunDES(progress func(done, total int)) *Result {
	start := time.Now()
	s := w.S
	x := &des{w: w, res: newResult(w, "des"), at: make([][]int, len(s.Places)), msgOf: map[crdt.OpID]int32{},
		trustConv: len(w.Convs), epidemic: s.Routing == "epidemic", contacts: map[[2]int]*contact{}}
	for i := range w.Devices {
		d := &dnode{Device: &w.Devices[i], idx: i, place: w.Devices[i].Start, reps: map[int]*replica{}, got: map[int32]arrival{}}
		if len(w.Revokes) > 0 {
			d.rep(x.trustConv)
		}
		if d.place != nowhere {
			x.at[d.place] = append(x.at[d.place], i)
		}
		if d.Bridge {
			x.bridges = append(x.bridges, d)
		}
		x.nodes = append(x.nodes, d)
	}
	for i := range w.Sends {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], w.Seed)
		binary.LittleEndian.PutUint64(b[8:], uint64(i))
		id := crdt.OpID(sha256.Sum256(b[:]))
		x.ids = append(x.ids, id)
		x.msgOf[id] = int32(i)
	}
	for c, ms := range w.Convs {
		for _, m := range ms {
			x.nodes[m].rep(c)
		}
	}
	x.deps = make([][]int32, len(w.Sends))
	if s.Routing == "medmesh-carry" {
		x.carry = newCarriage(x)
	}
	q := &queue{}
	seq := 0
	push := func(e event) { e.seq = seq; seq++; heap.Push(q, e) }
	for i, d := range w.Devices {
		for _, m := range d.Moves {
			push(event{at: m.At, kind: eMove, a: i, b: m.Place})
		}
	}
	for _, l := range w.Links {
		push(event{at: l.Up, kind: eUp, a: l.A, b: l.B, until: l.Down})
		push(event{at: l.Down, kind: eDown, a: l.A, b: l.B})
	}
	for i, m := range w.Sends {
		push(event{at: m.At, kind: eSend, a: i})
	}
	for i, r := range w.Revokes {
		push(event{at: r.At, kind: eRevoke, a: i})
	}
	for _, c := range w.Cuts {
		push(event{at: c.To, kind: eHeal})
	}
	for t := s.SyncSeconds; t < s.Hours*3600; t += s.SyncSeconds {
		push(event{at: t, kind: eRound})
	}
	total := q.Len()
	for done := 1; q.Len() > 0; done++ {
		e := heap.Pop(q).(event)
		if progress != nil && done%1024 == 0 {
			progress(done, total)
		}
		x.step(e)
	}
	x.res.Events = total
	if progress != nil {
		progress(total, total)
	}
	x.finish()
	x.res.Wall = time.Since(start)
	return x.res
}

func (x *des) step(e event) {
	if x.carry != nil {
		defer x.drain()
	}
	switch e.kind {
	case eMove: // arrives somewhere: meets everyone there
		d := x.nodes[e.a]
		if d.place != nowhere {
			x.at[d.place] = removeOne(x.at[d.place], d.idx)
		}
		d.place = e.b
		if d.place == nowhere {
			return
		}
		x.at[d.place] = append(x.at[d.place], d.idx)
		for _, o := range x.at[d.place] {
			if o != d.idx {
				if x.carry != nil {
					x.encounter(d, x.nodes[o], e.at)
				}
				x.sync(d, x.nodes[o], e.at)
			}
		}
	case eUp:
		a, b := x.nodes[e.a], x.nodes[e.b]
		a.links, b.links = insertSorted(a.links, b.idx), insertSorted(b.links, a.idx)
		x.contacts[[2]int{e.a, e.b}] = &contact{free: e.at, end: e.until}
		if x.carry != nil {
			x.encounter(a, b, e.at)
		}
		x.sync(a, b, e.at)
	case eDown:
		a, b := x.nodes[e.a], x.nodes[e.b]
		a.links, b.links = removeOne(a.links, b.idx), removeOne(b.links, a.idx)
		delete(x.contacts, [2]int{e.a, e.b})
	case eSend:
		x.send(e.a, e.at)
	case eRevoke:
		x.revoke(e.a, e.at)
	case eHeal:
		for _, b := range x.bridges {
			x.bridge(b, e.at)
		}
	case eRound: // anti-entropy in every place, conversation by conversation
		for p := range x.at {
			x.round(x.at[p], e.at)
		}
		for _, d := range x.nodes {
			for _, o := range d.links {
				if o > d.idx {
					x.sync(d, x.nodes[o], e.at)
				}
			}
		}
	}
}

// round: every device syncs each period with its peers; modelled as a
// chain through the devices present that hold each conversation.
func (x *des) round(present []int, t float64) {
	if len(present) < 2 {
		return
	}
	holders := map[int][]*dnode{}
	var convs []int
	for _, i := range present {
		d := x.nodes[i]
		for _, c := range d.convs {
			if holders[c] == nil {
				convs = append(convs, c)
			}
			holders[c] = append(holders[c], d)
		}
	}
	slices.Sort(convs)
	for _, c := range convs {
		hs := holders[c]
		for i := 0; i+1 < len(hs); i++ {
			x.syncConv(hs[i], hs[i+1], c, t)
		}
	}
}

// refused: the gater drops a peer whose revocation it knows.
func (x *des) refused(a, b *dnode) bool {
	for r, rv := range x.w.Revokes {
		_, aKnows := a.got[crlKey(r)]
		_, bKnows := b.got[crlKey(r)]
		if (aKnows && rv.Dev == b.idx) || (bKnows && rv.Dev == a.idx) {
			return true
		}
	}
	return false
}

// holds reports whether d takes part in conversation c's sync: members,
// and anchors (which carry any tag offered); under plain epidemic routing,
// everyone.
func (x *des) holds(d *dnode, c int) bool {
	return d.reps[c] != nil || d.Anchor || x.epidemic
}

// sync runs the real reconciliation for every conversation a and b share;
// with carriage, they then offer each other what they carry.
func (x *des) sync(a, b *dnode, t float64) {
	if x.refused(a, b) {
		return
	}
	x.syncShared(a, b, t)
	if x.carry != nil {
		x.exchange(a, b, t)
	}
}

func (x *des) syncShared(a, b *dnode, t float64) {
	if !a.Anchor && !b.Anchor && !x.epidemic {
		small, big := a, b
		if len(b.convs) < len(a.convs) {
			small, big = b, a
		}
		for _, c := range small.convs {
			if big.reps[c] != nil {
				x.syncConv(a, b, c, t)
			}
		}
		return
	}
	var cs []int
	for _, c := range a.convs {
		if x.holds(b, c) {
			cs = append(cs, c)
		}
	}
	for _, c := range b.convs {
		if a.reps[c] == nil && x.holds(a, c) {
			cs = append(cs, c)
		}
	}
	slices.Sort(cs)
	for _, c := range cs {
		x.syncConv(a, b, c, t)
	}
}

func (x *des) link(bytes, rounds, ops int) float64 {
	s := x.w.S
	return float64(rounds)*2*s.LinkMS/1000 + float64(bytes)/s.LinkBytesPerSecond() + float64(ops)*ReceiveCost
}

// channel is the trace contact a and b talk over (nil: co-located, or a
// WAN, whose bandwidth the model does not bound).
func (x *des) channel(a, b *dnode) *contact {
	if a.place != nowhere && a.place == b.place {
		return nil
	}
	return x.contacts[[2]int{min(a.idx, b.idx), max(a.idx, b.idx)}]
}

func (x *des) syncConv(a, b *dnode, c int, t float64) {
	ra, rb := a.rep(c), b.rep(c)
	if ra.digest == rb.digest && ra.n() == rb.n() {
		// Identical sets: one round trip of one fingerprint each way.
		x.res.ReconMsgs += 2
		x.res.Bytes += 48
		return
	}
	var needA, needB []crdt.OpID
	bytes, rounds := 0, 0
	if x.epidemic {
		// Plain epidemic routing: exchange summary vectors (every ID).
		bytes, rounds = 32*(ra.n()+rb.n()), 2
		needA, needB = missing(rb.sorted(), ra.sorted()), missing(ra.sorted(), rb.sorted())
	} else {
		ia, ib := ra.sorted(), rb.sorted()
		sa, sb := mesh.NewKeyedSession(ia, x.keysOf(ia)), mesh.NewKeyedSession(ib, x.keysOf(ib))
		msg, _ := sa.Initiate()
		cur := sb
		// The initiator ends it at mesh.MaxRounds, as a device does (the
		// DES goes on at the next contact, not at once).
		for msg != nil {
			bytes += len(msg)
			rounds++
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
		needA, needB = sa.Need(), sb.Need()
	}
	x.res.ReconMsgs += rounds
	if ch := x.channel(a, b); ch != nil {
		x.syncOver(ch, a, b, c, t, bytes, rounds, needA, needB)
		return
	}
	x.res.Bytes += int64(bytes + (len(needA)+len(needB))*(OpBytes+32))
	x.res.EnvelopeBytes += int64((len(needA) + len(needB)) * OpBytes)
	done := t + x.link(bytes+(len(needA)+len(needB))*OpBytes, (rounds+1)/2+1, len(needA)+len(needB))
	x.learn(a, c, x.transfer(b, a, c, needA, done), done, bySync)
	x.learn(b, c, x.transfer(a, b, c, needB, done), done, bySync)
}

// syncOver is a sync over a trace contact: the reconciliation, then the
// ops one at a time, oldest first and each way in turn, each arriving
// when the link has carried it — until the contact ends.
func (x *des) syncOver(ch *contact, a, b *dnode, c int, t float64, bytes, rounds int, needA, needB []crdt.OpID) {
	bw := x.w.S.LinkBytesPerSecond()
	cur := max(t, ch.free) + x.link(bytes, (rounds+1)/2+1, 0)
	if cur > ch.end {
		x.res.Bytes += int64(float64(bytes) * min(1, (ch.end-max(t, ch.free))/(cur-max(t, ch.free))))
		ch.free = ch.end
		return
	}
	x.res.Bytes += int64(bytes)
	x.oldestFirst(needA)
	x.oldestFirst(needB)
	for i := 0; i < max(len(needA), len(needB)); i++ {
		for _, dir := range [2]struct {
			from, to *dnode
			need     []crdt.OpID
		}{{b, a, needA}, {a, b, needB}} {
			if i >= len(dir.need) {
				continue
			}
			next := cur + OpBytes/bw + ReceiveCost
			if next > ch.end {
				ch.free = ch.end
				return
			}
			cur = next
			x.res.Bytes += OpBytes + 32
			x.res.EnvelopeBytes += OpBytes
			x.learn(dir.to, c, x.transfer(dir.from, dir.to, c, dir.need[i:i+1], cur), cur, bySync)
		}
	}
	ch.free = cur
}

// oldestFirst orders ops as they were written (a CRL first), so a contact
// cut short has carried whole causal prefixes.
func (x *des) oldestFirst(ids []crdt.OpID) {
	rank := func(id crdt.OpID) int32 {
		if m, ok := x.msgOf[id]; ok {
			return m
		}
		return -1
	}
	slices.SortStableFunc(ids, func(p, q crdt.OpID) int { return int(rank(p)) - int(rank(q)) })
}

// missing lists the IDs of sorted set have that sorted set of lacks.
func missing(have, of []crdt.OpID) []crdt.OpID {
	var out []crdt.OpID
	j := 0
	for _, id := range have {
		for j < len(of) && of[j].Compare(id) < 0 {
			j++
		}
		if j == len(of) || of[j] != id {
			out = append(out, id)
		}
	}
	return out
}

// transfer hands b the ops of conversation c it lacks; it returns the ops
// b took in (with those they unblocked).
func (x *des) transfer(a, b *dnode, c int, need []crdt.OpID, t float64) []crdt.OpID {
	ra, rb := a.rep(c), b.rep(c)
	var learnt []crdt.OpID
	for _, id := range need {
		op, err := ra.dag.Get(id)
		if err != nil {
			continue
		}
		applied, err := rb.dag.Add(op, time.Time{})
		if errors.Is(err, crdt.ErrDuplicate) {
			x.res.Duplicates++
			continue
		}
		x.res.Relayed++
		for _, ap := range applied {
			rb.add(ap.ID)
			k := x.key(ap)
			if _, ok := b.got[k]; !ok {
				b.got[k] = arrival{at: t, hops: a.got[k].hops + 1}
			}
			learnt = append(learnt, ap.ID)
		}
	}
	return learnt
}

// keysOf gives the sync keys of ids, as a device's holder does.
func (x *des) keysOf(ids []crdt.OpID) []uint64 {
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = x.syncKeys[id]
	}
	return out
}

// noteKey records op's sync key: its clock as an envelope header says it.
func (x *des) noteKey(op crdt.Op) {
	if x.syncKeys == nil {
		x.syncKeys = map[crdt.OpID]uint64{}
	}
	x.syncKeys[op.ID] = e2e.ClockKey(op.Time.Wall, op.Time.Logical)
}

func (x *des) key(op crdt.Op) int32 {
	if m, ok := x.msgOf[op.ID]; ok {
		return m
	}
	return crlKey(int(op.Body[0]))
}

// bridge passes what a bridge anchor learnt to the other bridges over the
// WAN, while no cut isolates either end.
func (x *des) bridge(a *dnode, t float64) {
	if !a.Bridge || !x.w.wanUp(a.place, t) {
		return
	}
	for _, o := range x.bridges {
		if o != a && x.w.wanUp(o.place, t) {
			x.sync(a, o, t+x.w.S.WANMS/1000)
		}
	}
}

// publish adds op to d's replica of c and gossips it to the subscribers
// in reach.
func (x *des) publish(d *dnode, c int, op crdt.Op, t float64) {
	r := d.rep(c)
	if r.dag.Has(op.ID) {
		return
	}
	r.dag.Add(op, time.Time{})
	r.add(op.ID)
	d.got[x.key(op)] = arrival{at: t}
	x.learn(d, c, []crdt.OpID{op.ID}, t, byPush)
}

// How a device took ops in, which decides where it passes them on.
const (
	byPush      = iota // written here, or pushed over a trace contact: forward everywhere in reach
	byPlacePush        // pushed in d's place, which reached every subscriber there: forward over contacts
	bySync             // fetched by sync: forward over contacts
)

// hop is ops of one conversation a device took in, to pass on.
type hop struct {
	d   *dnode
	c   int
	ids []crdt.OpID
	t   float64
	by  int
}

// learn: d took in ops of c at t. A bridge syncs them over the WAN; and d
// forwards them at once to the subscribers in reach that lack them, as
// gossipsub forwards a message on receipt — a push in d's place reaches
// every subscriber there (each getting up to D copies), a push over a
// trace contact waits for the contact's channel — and each receiver
// forwards in turn. Ops fetched by sync go on over trace contacts only (a
// model: trace contacts are often shorter than the anti-entropy period;
// the real mesh passes them on at its next round), so that a message
// spreads through all the contacts up at once, whatever their order.
func (x *des) learn(d *dnode, c int, ids []crdt.OpID, t float64, by int) {
	if len(ids) == 0 {
		return
	}
	work := []hop{{d, c, ids, t, by}}
	for len(work) > 0 {
		h := work[len(work)-1]
		work = work[:len(work)-1]
		x.bridge(h.d, h.t)
		if x.carry != nil {
			x.received(h.d, h.c, h.ids, h.t)
		}
		if x.carry != nil && x.carry.cfg.Policy == "prophet" && !h.d.Anchor {
			x.carry.queue = append(x.carry.queue, qd{h.d.idx, h.t}) // may pass them to a carrier in reach
		}
		if h.by == byPush && h.d.place != nowhere {
			var subs []*dnode
			for _, o := range x.at[h.d.place] {
				if n := x.nodes[o]; o != h.d.idx && x.holds(n, h.c) && !x.refused(h.d, n) {
					subs = append(subs, n)
				}
			}
			copies := min(GossipDegree, len(subs))
			for _, n := range subs {
				lack := x.lacking(n, h.c, h.ids)
				if len(lack) == 0 {
					continue
				}
				at := h.t + x.link(len(lack)*OpBytes, 1, len(lack))
				x.res.Bytes += int64(copies * OpBytes * len(lack))
				x.res.EnvelopeBytes += int64(copies * OpBytes * len(lack))
				x.res.Duplicates += (copies - 1) * len(lack)
				if got := x.transfer(h.d, n, h.c, lack, at); len(got) > 0 {
					work = append(work, hop{n, h.c, got, at, byPlacePush})
				}
			}
		}
		for _, o := range h.d.links {
			n := x.nodes[o]
			if (n.place != nowhere && n.place == h.d.place) || !x.holds(n, h.c) || x.refused(h.d, n) {
				continue
			}
			lack := x.lacking(n, h.c, h.ids)
			ch := x.channel(h.d, n)
			if len(lack) == 0 || ch == nil {
				continue
			}
			x.oldestFirst(lack)
			cur := max(h.t, ch.free) + 2*x.w.S.LinkMS/1000
			for _, id := range lack {
				next := cur + OpBytes/x.w.S.LinkBytesPerSecond() + ReceiveCost
				if next > ch.end {
					cur = ch.end
					break
				}
				cur = next
				x.res.Bytes += OpBytes
				x.res.EnvelopeBytes += OpBytes
				if got := x.transfer(h.d, n, h.c, []crdt.OpID{id}, cur); len(got) > 0 {
					work = append(work, hop{n, h.c, got, cur, byPush})
				}
			}
			ch.free = cur
		}
	}
}

// lacking lists the ops of ids that n does not hold in c.
func (x *des) lacking(n *dnode, c int, ids []crdt.OpID) []crdt.OpID {
	var out []crdt.OpID
	r := n.rep(c)
	for _, id := range ids {
		if !r.dag.Has(id) {
			out = append(out, id)
		}
	}
	return out
}

func (x *des) send(i int, t float64) {
	m := x.w.Sends[i]
	d := x.nodes[m.Dev]
	heads := d.rep(m.Conv).dag.Heads()
	for _, h := range heads {
		x.deps[i] = append(x.deps[i], x.msgOf[h])
	}
	op := crdt.Op{ID: x.ids[i], Deps: heads, Author: d.Name, Time: crdt.Timestamp{Wall: int64(t * 1000)}, Body: []byte{1}}
	x.noteKey(op)
	x.publish(d, m.Conv, op, t)
	if x.carry != nil {
		x.wrote(d, i, t)
	}
}

// revoke: the CA's CRL reaches every anchor outside a cut, which gossips
// it on the trust topic.
func (x *des) revoke(r int, t float64) {
	var b [16]byte
	copy(b[:], "medmesh crl")
	b[15] = byte(r)
	op := crdt.Op{ID: sha256.Sum256(b[:]), Author: "ca", Time: crdt.Timestamp{Wall: int64(t * 1000)}, Body: []byte{byte(r)}}
	x.noteKey(op)
	for _, d := range x.nodes {
		if d.Anchor && x.w.wanUp(d.place, t) {
			x.publish(d, x.trustConv, op, t)
		}
	}
}

func (x *des) finish() {
	x.w.outcome(x.res, func(dev int, key int32) (arrival, bool) {
		a, ok := x.nodes[dev].got[key]
		return a, ok
	}, x.deps)
	for _, d := range x.nodes {
		n := 0
		for _, r := range d.reps {
			n += r.n()
		}
		x.res.Storage[d.Name] = int64(n) * OpBytes
	}
	if x.carry != nil {
		x.res.Carriage = make([]CarrierLoad, len(x.nodes))
		for i, n := range x.carry.nodes {
			x.res.Carriage[i] = CarrierLoad{Device: x.nodes[i].Name, PeakBytes: int64(n.peak), Sent: n.sent, Received: n.recv}
		}
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

func insertSorted(xs []int, x int) []int {
	i, found := slices.BinarySearch(xs, x)
	if found {
		return xs
	}
	return slices.Insert(xs, i, x)
}
