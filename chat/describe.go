package chat

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// Op kinds as Describe names them.
const (
	OpText       = "text"
	OpPhoto      = "photo"
	OpEdit       = "edit"
	OpDelete     = "delete"
	OpReceipt    = "receipt"
	OpAdd        = "add"
	OpRemove     = "remove"
	OpLeave      = "leave"
	OpEscalate   = "escalate"
	OpOther      = "other" // reactions, photo chunks, create, promote, retention, welcomes
	OpUnreadable = ""      // this device cannot read it (yet)
)

// opNames names the op kinds Describe tells apart.
var opNames = map[uint8]string{kindText: OpText, kindPhoto: OpPhoto, kindEdit: OpEdit, kindDelete: OpDelete,
	kindReceipt: OpReceipt, kindAdd: OpAdd, kindRemove: OpRemove, kindLeave: OpLeave,
	kindEscalate: OpEscalate}

// OpSummary says what an op is, by identifiers only: no text, no photo,
// no title. It is what an audit trail may keep.
type OpSummary struct {
	Kind     string
	Sender   peer.ID
	Target   crdt.OpID // edit, delete: the message
	Member   peer.ID   // add, remove: who
	Level    int       // receipt: Delivered, Read or Acknowledged
	Standing bool      // authorised and standing now
}

// Describe summarises op id, if this replica holds it.
func (r *Replica) Describe(id crdt.OpID) (OpSummary, bool) {
	info := r.ops[id]
	if info == nil {
		return OpSummary{}, false
	}
	s := OpSummary{Sender: info.sender, Standing: info.valid}
	if info.kind == 0 {
		return s, true // unreadable here
	}
	// The kind is kept when a delete destroys the payload.
	s.Kind = opNames[info.kind]
	switch {
	case s.Kind == "":
		s.Kind = OpOther
	case s.Kind == OpLeave:
		s.Member = info.sender
	}
	p := info.p
	if p == nil {
		return s, true
	}
	switch s.Kind {
	case OpEdit, OpDelete, OpEscalate:
		if len(p.Target) == len(s.Target) {
			copy(s.Target[:], p.Target)
		}
	case OpReceipt:
		s.Level = int(p.Level)
	case OpAdd, OpRemove:
		s.Member = peer.ID(p.Member)
	}
	return s, true
}

// WithAppliedLog makes the replica list the ops of others it applies
// (TakeApplied), for an audit trail: ops applied when their missing
// dependencies arrive included, ops replayed by Restore not; an op applied
// before this device could read it is listed again once it can (callers
// skip IDs they saw). Nothing is
// dropped: the list holds IDs of ops the replica holds anyway, and the
// caller bounds it by taking it after each batch it hands in.
func WithAppliedLog() Option { return func(r *Replica) { r.logApplied = true } }

// TakeApplied returns the ops of others applied since the last call, in
// the order applied, and forgets them (nil without WithAppliedLog).
func (r *Replica) TakeApplied() []crdt.OpID {
	out := r.applied
	r.applied = nil
	return out
}

// MemberSet is the set of members at this replica's heads (State's
// Members, without materialising the state), as a copy.
func (r *Replica) MemberSet() map[peer.ID]bool {
	m := r.headView().members
	out := make(map[peer.ID]bool, len(m))
	for p := range m {
		out[p] = true
	}
	return out
}
