package chat

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// ReceivedAt returns, for each of the messages ids that a recipient has
// signed a receipt for, the earliest time one did: the timestamp of the
// first valid receipt (delivered, read or acknowledged) by one of its
// recipients (State's Message.Receipts) that covers it — explicitly, or cumulatively
// as State counts it (an op a receipt excepts counts only where a receipt
// of that device names it). It is when the message was known to have
// reached a recipient, by that recipient's clock, at most one coalescing
// window after it did. Messages no receipt covers are absent.
//
// It walks the DAG once per receipt sender (O(ops × senders)); it is for
// exports, not for every State.
func (r *Replica) ReceivedAt(ids []crdt.OpID) map[crdt.OpID]time.Time {
	out := map[crdt.OpID]time.Time{}
	asked := make(map[crdt.OpID]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	want := map[crdt.OpID]map[peer.ID]int{} // message → its recipients
	for _, m := range r.State().Messages {
		if asked[m.ID] {
			want[m.ID] = m.Receipts
		}
	}
	if len(want) == 0 {
		return out
	}
	note := func(id crdt.OpID, by peer.ID, at time.Time) {
		if _, ok := want[id][by]; !ok {
			return
		}
		if cur, seen := out[id]; !seen || at.Before(cur) {
			out[id] = at
		}
	}
	type receipt struct {
		id crdt.OpID
		at time.Time
		p  *payload
	}
	cums := map[peer.ID][]receipt{}
	for _, id := range r.dag.Order() {
		info := r.ops[id]
		if info == nil || !info.valid || info.p == nil || info.kind != kindReceipt {
			continue
		}
		key, _ := r.dag.Key(id)
		if !info.p.cumulative() {
			for _, t := range info.p.Targets {
				tid, _ := crdt.OpIDFromBytes(t)
				note(tid, info.sender, key.Time())
			}
			continue
		}
		cums[info.sender] = append(cums[info.sender], receipt{id: id, at: key.Time(), p: info.p})
	}
	for by, list := range cums {
		slices.SortStableFunc(list, func(a, b receipt) int { return a.at.Compare(b.at) })
		excepted := map[crdt.OpID]bool{}
		for _, rc := range list {
			for _, x := range rc.p.Except {
				xid, _ := crdt.OpIDFromBytes(x)
				excepted[xid] = true
			}
		}
		// In time order, each receipt covers what no earlier one did: an
		// op visited before has its whole past visited too.
		visited := map[crdt.OpID]bool{}
		for _, rc := range list {
			var stack []crdt.OpID
			if rc.p.Past {
				stack = append(stack, r.dag.Deps(rc.id)...)
			}
			for _, h := range rc.p.Heads {
				hid, _ := crdt.OpIDFromBytes(h)
				if excepted[hid] {
					note(hid, by, rc.at) // named: counts from this receipt on
				}
				stack = append(stack, hid)
			}
			for len(stack) > 0 {
				cur := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if visited[cur] || r.ops[cur] == nil {
					continue
				}
				visited[cur] = true
				if !excepted[cur] {
					note(cur, by, rc.at)
				}
				stack = append(stack, r.dag.Deps(cur)...)
			}
		}
	}
	return out
}
