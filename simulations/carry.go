package simulations

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// Carriage by non-members: routing "medmesh-carry" in the DES. Members and
// anchors behave exactly as under "medmesh" (members and anchors hold a
// conversation's replica and sync it); in addition an admitted device
// that is neither a member of a conversation nor an anchor may carry
// sealed envelopes of it in a bounded bag, and hands them to the first
// member or anchor it meets (through the sync, over the link or place
// they share). Two policies decide who takes a copy:
//
//   - spray: binary spray-and-wait (Spyropoulos et al., 2005). The author
//     starts with Copies copies of each envelope it writes; a holder with
//     n > 1 copies meeting a device that can carry and lacks the envelope
//     hands it floor(n/2) and keeps the rest; with one copy it waits to
//     meet a member or an anchor. Other members hold no copies to spray.
//   - prophet: delivery predictabilities (PRoPHET, RFC 6693, with its
//     defaults P_init 0.75, β 0.25, γ 0.98 per ProphetUnitSeconds, 300 s
//     by default). Every device keeps P(d, e) for every other device; on
//     meeting e it ages all entries by γ^k for the k time units elapsed,
//     sets P(d,e) += (1 − P(d,e))·P_init and applies transitivity
//     P(d,f) = max(P(d,f), P(d,e)·P(e,f)·β). A device's utility for a
//     conversation is its highest predictability for a member other than
//     itself and the holder; a holder — a member, or a carrier — gives a
//     copy to a device that can carry, lacks the envelope and has a
//     higher utility (the GRTR strategy: the holder keeps its copy).
//
// Spray has three variants, compared and not chosen (Carry's fields):
// members spray what they receive (MemberCopies), copies split by
// utility (Split "utility") and a single copy moving once to a better
// carrier (Focus); utility there is a device's direct predictability of
// meeting another member, learnt from the tags its peers offered.
//
// Anchors spray nothing and take what carriers hand them, as a member
// does. Devices offer at every meeting (arriving in a place, a trace
// contact coming up, each anti-entropy round over a contact); a device
// that takes envelopes offers them at once to everyone in its reach, as
// a relay forwards on receipt.
//
// Under both, a carrier's bag is bounded: QuotaKiB bytes of envelopes; an
// envelope expires TTLSeconds after it was written (the header's time)
// and is then dropped and never offered; one origin (the header's sender)
// fills at most OriginShare of the quota; urgent envelopes are offered
// and sent first, and a full bag drops its oldest non-urgent envelope
// (its oldest urgent one only for an urgent newcomer). A carrier keeps
// an envelope it has handed to a member until it expires or is evicted:
// other members may still lack it.
//
// Every envelope transfer counts OpBytes on the wire (Result.Bytes and
// Result.EnvelopeBytes) plus its 32-byte ID offered; an envelope offered
// and refused costs its ID. PRoPHET's predictability exchange at each
// meeting costs 8 bytes per non-zero entry each way (Result.Bytes, not
// envelope bytes).

// PRoPHET's defaults (RFC 6693, section 3.3).
const (
	ProphetPInit = 0.75
	ProphetBeta  = 0.25
	ProphetGamma = 0.98
)

// Carriage defaults.
const (
	DefaultCarryCopies        = 8
	DefaultCarryQuotaKiB      = 1024          // about 850 envelopes of OpBytes
	DefaultCarryTTLSeconds    = 7 * 24 * 3600 // a rota's week: a colleague back from days off still brings it
	DefaultCarryOriginShare   = 0.25
	DefaultProphetUnitSeconds = 300
	prophetEntryBytes         = 8
)

// Carry configures carriage by non-members (routing "medmesh-carry");
// zero fields take the defaults above.
type Carry struct {
	Policy      string  `json:"policy"`       // "spray" (default) or "prophet"
	Copies      int     `json:"copies"`       // spray: L, the author's copies of each envelope
	QuotaKiB    int     `json:"quota_kib"`    // a carrier's bag, in KiB of envelopes
	TTLSeconds  float64 `json:"ttl_s"`        // an envelope is carried until this long after it was written
	OriginShare float64 `json:"origin_share"` // the share of a bag one origin (sender) may fill
	// UrgentShare: the fraction of messages that are urgent (offered,
	// sent and kept first), drawn from the seed and the message's index.
	UrgentShare float64 `json:"urgent_share"`
	// ProphetUnitSeconds: PRoPHET's time unit, the aging γ applies per unit.
	ProphetUnitSeconds float64 `json:"prophet_unit_s"`
	// MemberCopies (spray): a member other than the author starts with
	// this many copies of each message it receives (0: none).
	MemberCopies int `json:"member_copies"`
	// Split (spray): "binary" (default: a holder of n hands floor(n/2)) or
	// "utility": it hands floor(n·(u_o+ε)/(u_o+u_h+2ε)), ε = 0.01, u being
	// a device's direct predictability (PRoPHET's update and aging, no
	// transitivity) of meeting a member other than the holder and the
	// envelope's sender — members being the peers it saw offering the tag.
	// Focus > 0 (spray): a carrier's single copy moves, once, to a carrier
	// whose utility exceeds Focus × its own. Both were compared and not
	// chosen (README, "Carriage by non-members").
	Split string  `json:"split"`
	Focus float64 `json:"focus"`
}

func (c Carry) withDefaults() Carry {
	if c.Policy == "" {
		c.Policy = "spray"
	}
	if c.Copies == 0 {
		c.Copies = DefaultCarryCopies
	}
	if c.QuotaKiB == 0 {
		c.QuotaKiB = DefaultCarryQuotaKiB
	}
	if c.TTLSeconds == 0 {
		c.TTLSeconds = DefaultCarryTTLSeconds
	}
	if c.OriginShare == 0 {
		c.OriginShare = DefaultCarryOriginShare
	}
	if c.ProphetUnitSeconds == 0 {
		c.ProphetUnitSeconds = DefaultProphetUnitSeconds
	}
	return c
}

func (c Carry) check(s Scenario) error {
	switch {
	case c != (Carry{}) && s.Routing != "medmesh-carry":
		return fmt.Errorf("scenario %s: field carry needs routing medmesh-carry", s.Name)
	case c.Policy != "" && c.Policy != "spray" && c.Policy != "prophet":
		return fmt.Errorf("scenario %s: field carry.policy must be spray or prophet", s.Name)
	case c.Copies < 0 || c.Copies > 1<<20:
		return fmt.Errorf("scenario %s: field carry.copies must be in [0, %d] (0: %d)", s.Name, 1<<20, DefaultCarryCopies)
	case c.QuotaKiB < 0 || c.QuotaKiB > 1<<30:
		return fmt.Errorf("scenario %s: field carry.quota_kib must not be negative", s.Name)
	case c.TTLSeconds < 0 || math.IsNaN(c.TTLSeconds):
		return fmt.Errorf("scenario %s: field carry.ttl_s must not be negative", s.Name)
	case c.OriginShare < 0 || c.OriginShare > 1 || math.IsNaN(c.OriginShare):
		return fmt.Errorf("scenario %s: field carry.origin_share must be in [0, 1]", s.Name)
	case c.UrgentShare < 0 || c.UrgentShare > 1 || math.IsNaN(c.UrgentShare):
		return fmt.Errorf("scenario %s: field carry.urgent_share must be in [0, 1]", s.Name)
	case c.ProphetUnitSeconds < 0 || math.IsNaN(c.ProphetUnitSeconds):
		return fmt.Errorf("scenario %s: field carry.prophet_unit_s must not be negative", s.Name)
	case c.MemberCopies < 0 || c.MemberCopies > 1<<20:
		return fmt.Errorf("scenario %s: field carry.member_copies must be in [0, %d]", s.Name, 1<<20)
	case c.Policy == "prophet" && (c.MemberCopies != 0 || c.Split != "" || c.Focus != 0):
		return fmt.Errorf("scenario %s: fields carry.member_copies, carry.split and carry.focus are spray's", s.Name)
	case c.Split != "" && c.Split != "binary" && c.Split != "utility":
		return fmt.Errorf("scenario %s: field carry.split must be binary or utility", s.Name)
	case c.Focus < 0 || math.IsNaN(c.Focus):
		return fmt.Errorf("scenario %s: field carry.focus must not be negative", s.Name)
	}
	return nil
}

// carried is one envelope in a carrier's bag.
type carried struct {
	op     crdt.Op
	msg    int32
	conv   int
	copies int // spray: copies this carrier holds
	exp    float64
	origin int
	urgent bool
	hops   int32
	moved  bool // spray, focus: this single copy moved here; it moves no further
}

// cnode is one device's carriage state.
type cnode struct {
	bag        map[crdt.OpID]*carried
	byConv     map[int]map[crdt.OpID]*carried // the bag by conversation
	spreading  map[int]int                    // spray: envelopes of the bag with copies to hand out, by conversation
	bytes      int
	byOrigin   map[int]int
	peak       int
	sent, recv int64             // envelope bytes out of and into its bag
	tokens     map[crdt.OpID]int // spray: copies an author holds of its own envelopes
	pred       []float64         // prophet: P(d, e) by device
	aged       float64
}

// carriage is the carriage state of one DES run.
type carriage struct {
	cfg      Carry
	quota    int
	nodes    []cnode
	urgent   []bool
	convMsgs [][]int32 // per conversation: its messages in time order
	queue    []qd      // devices that took envelopes, to pass them on
}

type qd struct {
	d int
	t float64
}

func newCarriage(x *des) *carriage {
	w := x.w
	k := &carriage{cfg: w.S.Carry.withDefaults(), nodes: make([]cnode, len(w.Devices)), urgent: make([]bool, len(w.Sends)),
		convMsgs: make([][]int32, len(w.Convs))}
	k.quota = k.cfg.QuotaKiB * 1024
	for i := range k.nodes {
		k.nodes[i] = cnode{bag: map[crdt.OpID]*carried{}, byConv: map[int]map[crdt.OpID]*carried{}, spreading: map[int]int{},
			byOrigin: map[int]int{}, tokens: map[crdt.OpID]int{}}
		if k.cfg.Policy == "prophet" || k.tracks() {
			k.nodes[i].pred = make([]float64, len(w.Devices))
		}
	}
	for i, m := range w.Sends {
		var b [24]byte
		copy(b[:], "urgent")
		binary.LittleEndian.PutUint64(b[8:], w.Seed)
		binary.LittleEndian.PutUint64(b[16:], uint64(i))
		h := sha256.Sum256(b[:])
		k.urgent[i] = float64(binary.LittleEndian.Uint64(h[:]))/math.Exp2(64) < k.cfg.UrgentShare
		k.convMsgs[m.Conv] = append(k.convMsgs[m.Conv], int32(i))
	}
	return k
}

// carrier reports whether d may carry conversation c: not a member, not
// an anchor (an anchor holds the replica itself).
func (x *des) carrier(d *dnode, c int) bool { return !d.Anchor && d.reps[c] == nil }

// wrote: the author of message i starts with L copies to spray.
func (x *des) wrote(d *dnode, i int, t float64) {
	k := x.carry
	if k.cfg.Policy == "spray" && k.cfg.Copies > 1 {
		k.nodes[d.idx].tokens[x.ids[i]] = k.cfg.Copies
	}
	k.queue = append(k.queue, qd{d.idx, t})
}

// received: member d (not the author) took messages ids of c; with
// MemberCopies it holds that many copies of each to spray.
func (x *des) received(d *dnode, c int, ids []crdt.OpID, t float64) {
	k := x.carry
	if k.cfg.Policy != "spray" || k.cfg.MemberCopies <= 1 || d.Anchor || c < 0 || c >= len(x.w.Convs) {
		return
	}
	n := &k.nodes[d.idx]
	added := false
	for _, id := range ids {
		m, ok := x.msgOf[id]
		if !ok || x.w.Sends[m].Dev == d.idx || t >= x.w.Sends[m].At+k.cfg.TTLSeconds {
			continue
		}
		if _, ok := n.tokens[id]; !ok {
			n.tokens[id] = k.cfg.MemberCopies
			added = true
		}
	}
	if added {
		k.queue = append(k.queue, qd{d.idx, t})
	}
}

// tracks: spray with a utility keeps direct predictabilities.
func (k *carriage) tracks() bool {
	return k.cfg.Policy == "spray" && (k.cfg.Split == "utility" || k.cfg.Focus > 0)
}

// memberUtility is d's direct predictability (PRoPHET's update and aging,
// without transitivity) of meeting a member of c other than itself and
// holder h; members are the peers d saw offering c's tag.
func (x *des) memberUtility(d, h *dnode, c, sender int, t float64) float64 {
	k := x.carry
	n := &k.nodes[d.idx]
	k.age(n, t)
	u := 0.0
	for _, m := range x.w.Convs[c] {
		if m != d.idx && m != h.idx && m != sender {
			u = max(u, n.pred[m])
		}
	}
	return u
}

// split is how many of its n copies holder h hands carrier o for c.
func (x *des) split(h, o *dnode, c, sender, n int, t float64) int {
	k := x.carry
	if k.cfg.Split != "utility" {
		return n / 2
	}
	const eps = 0.01
	uh, uo := x.memberUtility(h, h, c, sender, t), x.memberUtility(o, h, c, sender, t)
	return min(int(float64(n)*(uo+eps)/(uo+uh+2*eps)), n-1)
}

// encounter updates PRoPHET's predictabilities of a and b meeting at t,
// and charges their exchange.
func (x *des) encounter(a, b *dnode, t float64) {
	k := x.carry
	if x.refused(a, b) {
		return
	}
	if k.tracks() {
		pa, pb := &k.nodes[a.idx], &k.nodes[b.idx]
		k.age(pa, t)
		k.age(pb, t)
		pa.pred[b.idx] += (1 - pa.pred[b.idx]) * ProphetPInit
		pb.pred[a.idx] += (1 - pb.pred[a.idx]) * ProphetPInit
	}
	if k.cfg.Policy != "prophet" {
		return
	}
	pa, pb := &k.nodes[a.idx], &k.nodes[b.idx]
	k.age(pa, t)
	k.age(pb, t)
	pa.pred[b.idx] += (1 - pa.pred[b.idx]) * ProphetPInit
	pb.pred[a.idx] += (1 - pb.pred[a.idx]) * ProphetPInit
	oldA, oldB := slices.Clone(pa.pred), slices.Clone(pb.pred)
	nz := 0
	for f := range pa.pred {
		if oldA[f] > 0 {
			nz++
		}
		if oldB[f] > 0 {
			nz++
		}
		if f != a.idx && f != b.idx {
			pa.pred[f] = max(pa.pred[f], oldA[b.idx]*oldB[f]*ProphetBeta)
			pb.pred[f] = max(pb.pred[f], oldB[a.idx]*oldA[f]*ProphetBeta)
		}
	}
	x.res.Bytes += int64(nz * prophetEntryBytes)
}

func (k *carriage) age(n *cnode, t float64) {
	if units := (t - n.aged) / k.cfg.ProphetUnitSeconds; units > 0 {
		f := math.Pow(ProphetGamma, units)
		for i := range n.pred {
			n.pred[i] *= f
		}
		n.aged = t
	}
}

// utility is d's highest predictability for a member of c other than
// itself and the holder h (which has the envelope already).
func (x *des) utility(d, h *dnode, c int, t float64) float64 {
	k := x.carry
	n := &k.nodes[d.idx]
	k.age(n, t)
	u := 0.0
	for _, m := range x.w.Convs[c] {
		if m != d.idx && m != h.idx {
			u = max(u, n.pred[m])
		}
	}
	return u
}

// wire times transfers between two devices: over their trace contact (its
// bandwidth and end) or, co-located, over the place's link.
type wire struct {
	x   *des
	ch  *contact
	cur float64
}

func (x *des) wire(a, b *dnode, t float64) *wire {
	w := &wire{x: x, ch: x.channel(a, b), cur: t}
	if w.ch != nil {
		w.cur = max(t, w.ch.free)
	}
	w.cur += 2 * x.w.S.LinkMS / 1000
	return w
}

// next is when the next envelope has arrived; false once the contact ends.
func (w *wire) next() (float64, bool) {
	n := w.cur + OpBytes/w.x.w.S.LinkBytesPerSecond() + ReceiveCost
	if w.ch != nil && n > w.ch.end {
		w.cur = w.ch.end
		return 0, false
	}
	w.cur = n
	return n, true
}

func (w *wire) close() {
	if w.ch != nil {
		w.ch.free = max(w.ch.free, w.cur)
	}
}

// inReach lists the devices d can talk to now: its trace contacts and
// everyone in its place.
func (x *des) inReach(d *dnode) []*dnode {
	var out []*dnode
	if d.place != nowhere {
		for _, o := range x.at[d.place] {
			if o != d.idx {
				out = append(out, x.nodes[o])
			}
		}
	}
	for _, o := range d.links {
		if n := x.nodes[o]; n.place == nowhere || n.place != d.place {
			out = append(out, n)
		}
	}
	return out
}

// exchange: a and b offer each other what they carry and what they may
// spray.
func (x *des) exchange(a, b *dnode, t float64) {
	x.offer(a, b, t)
	x.offer(b, a, t)
}

// drain passes on, from every device that took envelopes, to everyone in
// its reach — as a relay forwards on receipt.
func (x *des) drain() {
	k := x.carry
	for len(k.queue) > 0 {
		q := k.queue[0]
		k.queue = k.queue[1:]
		d := x.nodes[q.d]
		for _, o := range x.inReach(d) {
			x.offer(d, o, q.t)
		}
	}
	k.queue = k.queue[:0]
}

// a candidate envelope h may hand to o.
type cand struct {
	id      crdt.OpID
	msg     int32
	conv    int
	deliver bool // to a member or an anchor of conv
	give    int  // spray: copies handed over
	move    bool // spray, focus: the holder's single copy moves on
}

// offer: h hands o what o should take from it at t.
func (x *des) offer(h, o *dnode, t float64) {
	if x.refused(h, o) {
		return
	}
	k := x.carry
	hn, on := &k.nodes[h.idx], &k.nodes[o.idx]
	var cs []cand
	// From h's bag: to a member or an anchor, or on to another carrier.
	// (Map order does not matter: the candidates are sorted below.)
	for c, items := range hn.byConv {
		deliver := !x.carrier(o, c)
		r := o.reps[c]
		switch {
		case deliver:
		case k.cfg.Policy == "prophet":
			if x.utility(o, h, c, t) <= x.utility(h, h, c, t) {
				continue
			}
		case hn.spreading[c] == 0 && k.cfg.Focus == 0:
			continue // spray: every copy here waits for a member
		}
		for id, e := range items {
			switch {
			case t >= e.exp:
				k.drop(hn, id)
			case deliver:
				if r == nil || (!r.dag.Has(id) && !r.dag.Pending(id)) {
					cs = append(cs, cand{id: id, msg: e.msg, conv: c, deliver: true})
				}
			case on.bag[id] != nil:
			case k.cfg.Policy == "prophet":
				cs = append(cs, cand{id: id, msg: e.msg, conv: c})
			case e.copies > 1:
				if g := x.split(h, o, c, e.origin, e.copies, t); g > 0 {
					cs = append(cs, cand{id: id, msg: e.msg, conv: c, give: g})
				}
			case k.cfg.Focus > 0 && !e.moved && x.memberUtility(o, h, c, e.origin, t) > k.cfg.Focus*x.memberUtility(h, h, c, e.origin, t):
				cs = append(cs, cand{id: id, msg: e.msg, conv: c, give: 1, move: true})
			}
		}
	}
	// From h's replicas, to a carrier: the author's copies (spray), or any
	// member's envelopes within their TTL (prophet).
	if !h.Anchor {
		switch k.cfg.Policy {
		case "spray":
			for id, n := range hn.tokens {
				m := x.msgOf[id]
				c := x.w.Sends[m].Conv
				switch {
				case t >= x.w.Sends[m].At+k.cfg.TTLSeconds || n <= 1:
					delete(hn.tokens, id)
				case x.carrier(o, c) && on.bag[id] == nil:
					if g := x.split(h, o, c, x.w.Sends[m].Dev, n, t); g > 0 {
						cs = append(cs, cand{id: id, msg: m, conv: c, give: g})
					}
				}
			}
		case "prophet":
			for _, c := range h.convs {
				if h.reps[c] == nil || !x.carrier(o, c) || x.utility(o, h, c, t) <= x.utility(h, h, c, t) {
					continue
				}
				ms := k.convMsgs[c]
				for i := len(ms) - 1; i >= 0; i-- {
					m := x.w.Sends[ms[i]]
					if m.At > t {
						continue
					}
					if t >= m.At+k.cfg.TTLSeconds {
						break
					}
					id := x.ids[ms[i]]
					if h.reps[c].dag.Has(id) && on.bag[id] == nil {
						cs = append(cs, cand{id: id, msg: ms[i], conv: c})
					}
				}
			}
		}
	}
	if len(cs) == 0 {
		return
	}
	slices.SortFunc(cs, func(p, q cand) int {
		if up, uq := k.urgent[p.msg], k.urgent[q.msg]; up != uq {
			if up {
				return -1
			}
			return 1
		}
		return int(p.msg) - int(q.msg)
	})
	w := x.wire(h, o, t)
	defer w.close()
	took := false
	for _, cd := range cs {
		x.res.Bytes += 32 // the offered ID
		var op crdt.Op
		var hops int32
		if e := hn.bag[cd.id]; e != nil {
			op, hops = e.op, e.hops
		} else {
			var err error
			if op, err = h.reps[cd.conv].dag.Get(cd.id); err != nil {
				continue
			}
			hops = h.got[cd.msg].hops
		}
		if cd.deliver {
			at, ok := w.next()
			if !ok {
				break
			}
			x.res.Bytes += OpBytes
			x.res.EnvelopeBytes += OpBytes
			hn.sent += OpBytes
			x.handOver(o, cd.conv, op, hops+1, at)
			continue
		}
		send := x.w.Sends[cd.msg]
		exp := send.At + k.cfg.TTLSeconds
		if !k.admit(on, send.Dev, k.urgent[cd.msg], send.At) {
			continue
		}
		if _, ok := w.next(); !ok {
			break
		}
		x.res.Bytes += OpBytes
		x.res.EnvelopeBytes += OpBytes
		hn.sent += OpBytes
		on.recv += OpBytes
		e := &carried{op: op, msg: cd.msg, conv: cd.conv, exp: exp, origin: send.Dev, urgent: k.urgent[cd.msg], hops: hops + 1, copies: 1}
		if cd.give > 0 {
			e.copies = cd.give
			if he := hn.bag[cd.id]; he != nil {
				if he.copies -= cd.give; he.copies == 1 {
					hn.spreading[he.conv]--
				}
			} else {
				hn.tokens[cd.id] -= cd.give
			}
		}
		k.put(on, cd.id, e)
		if cd.move {
			e.moved = true
			k.drop(hn, cd.id)
		}
		took = true
	}
	if took {
		k.queue = append(k.queue, qd{o.idx, w.cur})
	}
}

// handOver gives member or anchor o an envelope of c from a carrier, and
// o passes it on as ops fetched by sync.
func (x *des) handOver(o *dnode, c int, op crdt.Op, hops int32, at float64) {
	rb := o.rep(c)
	applied, err := rb.dag.Add(op, time.Time{})
	if errors.Is(err, crdt.ErrDuplicate) {
		x.res.Duplicates++
		return
	}
	x.res.Relayed++
	var learnt []crdt.OpID
	for _, ap := range applied {
		rb.add(ap.ID)
		kk := x.key(ap)
		if _, ok := o.got[kk]; !ok {
			o.got[kk] = arrival{at: at, hops: hops}
		}
		learnt = append(learnt, ap.ID)
	}
	x.learn(o, c, learnt, at, bySync)
}

// admit makes room in n's bag for an envelope of origin written at
// written (expired envelopes go first; a full origin share drops that
// origin's oldest; a full bag its oldest non-urgent one, or its oldest
// urgent one for an urgent newcomer); false if there is none.
func (k *carriage) admit(n *cnode, origin int, urgent bool, written float64) bool {
	share := k.cfg.OriginShare * float64(k.quota)
	if k.quota < OpBytes || share < OpBytes {
		return false
	}
	if n.bytes+OpBytes > k.quota || float64(n.byOrigin[origin]+OpBytes) > share {
		for id, e := range n.bag {
			if e.exp <= written {
				k.drop(n, id)
			}
		}
	}
	for float64(n.byOrigin[origin]+OpBytes) > share {
		if !k.evict(n, urgent, func(e *carried) bool { return e.origin == origin }) {
			return false
		}
	}
	for n.bytes+OpBytes > k.quota {
		if !k.evict(n, urgent, func(*carried) bool { return true }) {
			return false
		}
	}
	return true
}

// evict drops the oldest envelope that match allows (non-urgent first;
// urgent ones only for an urgent newcomer).
func (k *carriage) evict(n *cnode, urgent bool, match func(*carried) bool) bool {
	var victim *carried
	var vid crdt.OpID
	for id, e := range n.bag {
		if !match(e) || (e.urgent && !urgent) {
			continue
		}
		if victim == nil || (victim.urgent && !e.urgent) || (victim.urgent == e.urgent && (e.msg < victim.msg)) {
			victim, vid = e, id
		}
	}
	if victim == nil {
		return false
	}
	k.drop(n, vid)
	return true
}

func (k *carriage) put(n *cnode, id crdt.OpID, e *carried) {
	n.bag[id] = e
	if n.byConv[e.conv] == nil {
		n.byConv[e.conv] = map[crdt.OpID]*carried{}
	}
	n.byConv[e.conv][id] = e
	if e.copies > 1 {
		n.spreading[e.conv]++
	}
	n.bytes += OpBytes
	n.byOrigin[e.origin] += OpBytes
	n.peak = max(n.peak, n.bytes)
}

func (k *carriage) drop(n *cnode, id crdt.OpID) {
	e := n.bag[id]
	if e == nil {
		return
	}
	delete(n.bag, id)
	if delete(n.byConv[e.conv], id); len(n.byConv[e.conv]) == 0 {
		delete(n.byConv, e.conv)
	}
	if e.copies > 1 {
		n.spreading[e.conv]--
	}
	n.bytes -= OpBytes
	n.byOrigin[e.origin] -= OpBytes
}
