package chat

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// Heal starts a new epoch when concurrent changes of who is a member left
// no epoch in use at this replica's heads although every admin who changed
// the members rekeyed after its change: an add concurrent with another
// admin's removal leaves the added member without the control key of the
// other admin's epoch, so it cannot read control ops sealed in it (a
// patient corrected there, a retention set there) until someone rekeys
// with history — and in a quiet conversation nobody sends. One device
// heals: of the members who hold every latest authorised epoch, the lowest
// peer ID — every replica holding the same ops names the same one — and
// its welcome carries, as history, the control keys the others lack. While
// an admin's own rekey is still owed (its change is in no welcome's past:
// the welcome may be on its way), or if the designated device is blind or
// away, nothing happens here, and the next op anyone sends rekeys as
// before. The conversations layer calls it after every batch it receives.
func (r *Replica) Heal() (Out, error) {
	m := r.headView()
	if !m.created || len(m.epochs) > 0 || !m.members[r.dev.ID] {
		return Out{}, nil
	}
	v := r.union(r.dag.AllHeads())
	latest := r.latestWelcomes(v)
	if len(latest) == 0 || r.rekeyOwed(v, latest) || r.healer(m, latest) != r.dev.ID {
		return Out{}, nil
	}
	return r.prepare()
}

// latestWelcomes are the authorised welcomes in v no other one in v has in
// its past.
func (r *Replica) latestWelcomes(v *view) []crdt.OpID {
	var all []crdt.OpID
	for id := range v.set {
		if info := r.ops[id]; info.kind == kindWelcome && info.valid {
			all = append(all, id)
		}
	}
	var out []crdt.OpID
	for _, w := range all {
		if !slices.ContainsFunc(all, func(o crdt.OpID) bool { return o != w && r.ops[o].before.has(w) }) {
			out = append(out, w)
		}
	}
	return out
}

// rekeyOwed: an add, removal or escalation in v is in the past of none of
// the latest welcomes — its admin has not rekeyed after it, as far as v shows. (A
// leave is never owed: the member who left cannot rekey.)
func (r *Replica) rekeyOwed(v *view, latest []crdt.OpID) bool {
	for id := range v.set {
		info := r.ops[id]
		if !info.valid || (info.kind != kindAdd && info.kind != kindRemove && info.kind != kindEscalate) {
			continue
		}
		if !slices.ContainsFunc(latest, func(w crdt.OpID) bool { return r.ops[w].view.has(id) }) {
			return true
		}
	}
	return false
}

// healer is the member, of those holding every latest welcome, with the
// lowest peer ID ("" if none holds them all).
func (r *Replica) healer(m *membership, latest []crdt.OpID) peer.ID {
	var best peer.ID
	for p := range m.members {
		if best != "" && p >= best {
			continue
		}
		if !slices.ContainsFunc(latest, func(w crdt.OpID) bool { return !slices.Contains(r.ops[w].holders, p) }) {
			best = p
		}
	}
	return best
}
