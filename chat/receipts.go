package chat

import (
	"bytes"
	"fmt"
	"math/bits"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// This file holds cumulative receipts: how this device makes them, and
// what the receipts of a DAG cover ("Receipts" in doc.go).

// receipt makes a receipt op (see Receipt).
func (r *Replica) receipt(level int, msgs []crdt.OpID) (Out, error) {
	if level < Delivered || level > Acknowledged {
		return Out{}, fmt.Errorf("%w: receipt level %d", ErrInvalidPayload, level)
	}
	var named []crdt.OpID
	seen := make(map[crdt.OpID]bool, len(msgs))
	for _, m := range msgs {
		if !seen[m] && (r.readable(m) || (level == Acknowledged && r.quoted(m))) {
			named = append(named, m)
		}
		seen[m] = true
	}
	if len(msgs) > 0 && len(named) == 0 {
		return Out{}, ErrNoSuchMessage // nothing this device has can be claimed
	}
	if level == Acknowledged {
		p := &payload{Kind: kindReceipt, Level: Acknowledged}
		for _, m := range named[:min(len(named), maxTargets)] {
			p.Targets = append(p.Targets, m[:])
			// An acknowledgement of an urgent message is urgent too: late,
			// it sets off an escalation nobody needs.
			p.Urgent = p.Urgent || r.quoted(m) || r.ops[m].p.Urgent
		}
		return r.do(p)
	}
	out, err := r.prepare()
	if err != nil {
		return Out{}, err
	}
	r.loadExcepted()
	except := r.unreadable()
	if len(except) > maxTargets {
		// More unreadable messages than one receipt may except (a member
		// flooding garbage can make any number): name the readable
		// messages instead, which no other member can stop.
		return r.explicitReceipts(out, level, named)
	}
	p := &payload{Kind: kindReceipt, Level: uint8(level)}
	if len(named) == 0 {
		// Everything held: the op's own past, and the heads the MaxDeps
		// cap leaves out of its deps.
		p.Past = true
		all := r.standingHeads()
		deps := r.capDeps(slices.Clone(all))
		var left []crdt.OpID
		for _, h := range all {
			if _, in := slices.BinarySearchFunc(deps, h, crdt.OpID.Compare); !in {
				left = append(left, h)
			}
		}
		for _, h := range r.nameable(left) {
			p.Heads = append(p.Heads, h[:])
		}
		if level == Delivered {
			// Messages an earlier receipt of ours excepted that opened
			// since: named, since exceptions are for good (see cover).
			for id := range r.excepted {
				if r.readable(id) {
					p.Heads = append(p.Heads, id[:])
					delete(r.excepted, id)
				}
			}
		}
	} else {
		for _, h := range r.maximal(named) {
			p.Heads = append(p.Heads, h[:])
		}
	}
	slices.SortFunc(p.Heads, bytes.Compare)
	p.Heads = p.Heads[:min(len(p.Heads), maxTargets)] // fewer covered, never more
	for _, id := range except {
		p.Except = append(p.Except, id[:])
	}
	raw, err := r.emit(p)
	out.add(raw)
	if raw != nil {
		if r.excepted == nil {
			r.excepted = map[crdt.OpID]bool{}
		}
		for _, id := range except {
			r.excepted[id] = true
		}
	}
	return out, err
}

// nameable replaces each op of heads this device holds but cannot read
// by its dependencies, down to ops it can name: a receipt names in Heads
// only what its device may claim, since naming an op counts even against
// an exception (see cover) — a flood of unreadable heads past the MaxDeps
// cap must not be claimed by being named.
func (r *Replica) nameable(heads []crdt.OpID) []crdt.OpID {
	return r.descendPast(heads, func(h crdt.OpID) bool {
		info := r.ops[h]
		return info != nil && info.env != nil && info.env.Kind == e2e.KindContent &&
			info.p == nil && !info.gone && info.sender != r.dev.ID
	})
}

// explicitReceipts makes receipts of level that name each message they
// claim (Targets, in ops of at most maxTargets): the readable messages of
// others this device was a recipient of — all of them, or those of named
// and their causal past — that our receipts do not yet put at level. It is
// what receipt falls back to when a cumulative receipt could not except
// everything it must: the states stay exactly as honest (only messages
// this device reads are named), and each message is named once per level.
func (r *Replica) explicitReceipts(out Out, level int, named []crdt.OpID) (Out, error) {
	var in map[crdt.OpID]bool
	if len(named) > 0 {
		in = r.pastOf(named)
	}
	var targets []crdt.OpID
	for _, m := range r.State().Messages {
		cur, recipient := m.Receipts[r.dev.ID]
		if !recipient || cur >= level || (in != nil && !in[m.ID]) || !r.readable(m.ID) {
			continue
		}
		targets = append(targets, m.ID)
	}
	for len(targets) > 0 {
		n := min(len(targets), maxTargets)
		p := &payload{Kind: kindReceipt, Level: uint8(level)}
		for _, id := range targets[:n] {
			p.Targets = append(p.Targets, id[:])
		}
		raw, err := r.emit(p)
		out.add(raw)
		if err != nil {
			return out, err
		}
		for _, id := range targets[:n] {
			if level == Delivered {
				delete(r.excepted, id) // named now: see cover
			}
		}
		targets = targets[n:]
	}
	return out, nil
}

// pastOf is the set of ids and every op in their causal past.
func (r *Replica) pastOf(ids []crdt.OpID) map[crdt.OpID]bool {
	seen := map[crdt.OpID]bool{}
	stack := slices.Clone(ids)
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[cur] {
			continue
		}
		seen[cur] = true
		stack = append(stack, r.dag.Deps(cur)...)
	}
	return seen
}

// loadExcepted rebuilds, once per Replica, what our own cumulative
// receipts excepted and no receipt of ours has named since (r.excepted is
// not persisted): otherwise a restart would except them all again, and
// enough of them would make every later receipt fall back to naming.
func (r *Replica) loadExcepted() {
	if r.exceptedLoaded {
		return
	}
	r.exceptedLoaded = true
	if r.excepted == nil {
		r.excepted = map[crdt.OpID]bool{}
	}
	namedBy := map[crdt.OpID]bool{}
	for _, info := range r.ops {
		if info.sender != r.dev.ID || info.kind != kindReceipt || info.p == nil || info.p.Level != Delivered {
			continue
		}
		for _, x := range info.p.Except {
			xid, _ := crdt.OpIDFromBytes(x)
			r.excepted[xid] = true
		}
		for _, h := range slices.Concat(info.p.Heads, info.p.Targets) {
			hid, _ := crdt.OpIDFromBytes(h)
			namedBy[hid] = true
		}
	}
	for id := range namedBy {
		delete(r.excepted, id)
	}
}

// readable reports whether id is a message this device holds and can read
// (deleted ones included: they were had).
func (r *Replica) readable(id crdt.OpID) bool {
	info := r.ops[id]
	return info != nil && info.valid && info.p != nil && (info.kind == kindText || info.kind == kindPhoto)
}

// unreadable lists, sorted, the content ops of others this device holds,
// was a recipient of, and cannot read although their sender may write
// them (a share that did not open, an expired key), and that no receipt of
// ours has excepted yet: a cumulative receipt must not claim them.
func (r *Replica) unreadable() []crdt.OpID {
	var out []crdt.OpID
	for id, info := range r.ops {
		if info.env == nil || info.env.Kind != e2e.KindContent || info.p != nil || info.gone || info.stub ||
			info.sender == r.dev.ID || r.excepted[id] {
			continue
		}
		if r.membersOf(info.before).members[r.dev.ID] && r.mayOpen(id, info) {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, crdt.OpID.Compare)
	return out
}

// maximal drops the ops of ids that are in the causal past of another of
// them: a search back from them that stops below the shallowest.
func (r *Replica) maximal(ids []crdt.OpID) []crdt.OpID {
	if len(ids) < 2 {
		return ids
	}
	floor := ^uint32(0)
	var stack []crdt.OpID
	for _, id := range ids {
		floor = min(floor, r.ops[id].depth)
		stack = append(stack, r.dag.Deps(id)...)
	}
	seen := map[crdt.OpID]bool{}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[cur] {
			continue
		}
		seen[cur] = true
		if ci := r.ops[cur]; ci != nil && ci.depth > floor {
			stack = append(stack, r.dag.Deps(cur)...)
		}
	}
	return slices.DeleteFunc(slices.Clone(ids), func(id crdt.OpID) bool { return seen[id] })
}

// cover is what the valid cumulative receipts of a DAG cover: for each op
// (by its position in the order State walks) and each receipt sender, the
// highest level of its receipts whose cover holds the op. One pass over
// the DAG in reverse causal order carries a bit per sender and level from
// each op to its dependencies, so the cost is O(ops × senders/64), however
// many receipts there are.
type cover struct {
	who    []peer.ID
	words  int      // per level
	bits   []uint64 // per position: Delivered words, then Read words
	except map[crdt.OpID][]int
	named  map[crdt.OpID]map[int]int // excepted ops that receipts name: sender → level
}

// newCover computes what the receipts cums (valid, cumulative, in order)
// cover; order is the DAG's order, with each op's ord its position.
func (r *Replica) newCover(order, cums []crdt.OpID) *cover {
	c := &cover{except: map[crdt.OpID][]int{}}
	idx := map[peer.ID]int{}
	for _, id := range cums {
		s := r.ops[id].sender
		if _, ok := idx[s]; !ok {
			idx[s] = len(c.who)
			c.who = append(c.who, s)
		}
		for _, x := range r.ops[id].p.Except {
			xid, _ := crdt.OpIDFromBytes(x)
			c.except[xid] = append(c.except[xid], idx[s])
		}
	}
	c.words = (len(c.who) + 63) / 64
	stride := 2 * c.words
	c.bits = make([]uint64, len(order)*stride)
	top := -1
	set := func(op crdt.OpID, j, lvl int) {
		info := r.ops[op]
		if info == nil {
			return
		}
		pos := int(info.ord)
		c.bits[pos*stride+(lvl-1)*c.words+j/64] |= 1 << (j % 64)
		top = max(top, pos)
	}
	for _, id := range cums {
		info := r.ops[id]
		j, lvl := idx[info.sender], int(info.p.Level)
		if info.p.Past {
			for _, d := range r.dag.Deps(id) {
				set(d, j, lvl)
			}
		}
		for _, h := range info.p.Heads {
			hid, _ := crdt.OpIDFromBytes(h)
			set(hid, j, lvl)
			if _, ex := c.except[hid]; ex {
				if c.named == nil {
					c.named = map[crdt.OpID]map[int]int{}
				}
				if c.named[hid] == nil {
					c.named[hid] = map[int]int{}
				}
				c.named[hid][j] = max(c.named[hid][j], lvl)
			}
		}
	}
	for pos := top; pos >= 0; pos-- {
		from := c.bits[pos*stride : (pos+1)*stride]
		if !slices.ContainsFunc(from, func(w uint64) bool { return w != 0 }) {
			continue
		}
		for _, d := range r.dag.Deps(order[pos]) {
			if di := r.ops[d]; di != nil {
				to := c.bits[int(di.ord)*stride : (int(di.ord)+1)*stride]
				for k, w := range from {
					to[k] |= w
				}
			}
		}
	}
	return c
}

// each calls f with every sender whose receipts cover op id, and the
// highest level they cover it at. An op a sender's receipt excepts (held,
// but not readable when it said so) counts for that sender only where
// one of its receipts names it.
func (c *cover) each(id crdt.OpID, info *opInfo, f func(peer.ID, int)) {
	stride := 2 * c.words
	b := c.bits[int(info.ord)*stride : (int(info.ord)+1)*stride]
	except := c.except[id]
	for k := range c.words {
		for del, read := b[k], b[c.words+k]; del|read != 0; {
			bit := bits.TrailingZeros64(del | read)
			j := k*64 + bit
			lvl := Delivered
			if read&(1<<bit) != 0 {
				lvl = Read
			}
			del &^= 1 << bit
			read &^= 1 << bit
			if except != nil && slices.Contains(except, j) {
				lvl = c.named[id][j]
			}
			if lvl > 0 {
				f(c.who[j], lvl)
			}
		}
	}
}
