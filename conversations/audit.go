package conversations

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// What the audit trail hears from this layer (Config.Audit): for ops this
// device made, sent (text, photo), edited, deleted, created, member added
// or removed (a leave counts as removed); for ops taken in from others,
// received (text, photo), edited, deleted, member added or removed, and
// acknowledged (a colleague's acknowledgement receipt), escalated (made
// here or taken in: Ops the message, then the escalation) — each with the
// conversation, the op IDs and the peer concerned, never text or titles.
// Read, acknowledged and photo viewed by this device's user are recorded
// when the user does them (Receipt, Photo). Delivered and read receipts
// of others, reactions and photo chunks are not recorded; nor are ops of
// a conversation this device cannot open yet.
//
// What is recorded is what took effect, as the replica judges it when the
// op is applied (chat.OpSummary.Standing): an op the replica refuses or
// voids (an add by a non-admin, an edit of another's message, an op of a
// removed member concurrent with its removal…) is recorded as "refused",
// with its sender as Peer, never as what it claims to be. An add may be
// voided later, when a concurrent removal of its author arrives: the
// membership before and after each batch taken in is compared, and a
// member who drops out with no removal of them in the batch is recorded
// as "member_add_voided" (Peer: who); one who reappears with no add in
// the batch (a removal voided) as "member_added" with no op.
//
// Identifiers a colleague chooses (the member of an add or remove) are
// bounded with audit.BoundID: one longer than audit.MaxID is recorded as
// its SHA-256 digest ("sha256:…").
//
// An op of ours whose save failed is recorded as sent by the save that
// persists it (conv.unaudited), so every op of ours that reaches the
// store is recorded once.

// auditOps describes ops of c (made here if local, else taken in) as audit
// events, grouped by kind and peer; given before (the members before a
// batch taken in), membership changes no op of the batch explains too.
// Callers hold c.mu.
func (s *Service) auditOps(c *conv, ids []crdt.OpID, local bool, before map[peer.ID]bool) []audit.Event {
	if s.cfg.Audit == nil || len(ids) == 0 {
		return nil
	}
	conv := c.r.ID()
	if conv.IsZero() {
		return nil
	}
	type group struct {
		kind audit.Kind
		peer peer.ID
	}
	var order []group
	ops := map[group][]string{}
	named := map[peer.ID]bool{} // members a standing add, remove or leave here names
	seen := make(map[crdt.OpID]bool, len(ids))
	for _, id := range ids {
		d, ok := c.r.Describe(id)
		if !ok || seen[id] || d.Kind == chat.OpUnreadable {
			continue // an op read only later is listed again then
		}
		seen[id] = true
		g := group{peer: d.Sender}
		if local {
			g.peer = ""
		}
		extra := ""
		switch d.Kind {
		case chat.OpText, chat.OpPhoto:
			g.kind = audit.Received
			if local {
				g.kind = audit.Sent
			}
		case chat.OpEdit, chat.OpDelete:
			g.kind = audit.Edited
			if d.Kind == chat.OpDelete {
				g.kind = audit.Deleted
			}
			if !d.Target.IsZero() {
				extra = d.Target.String()
			}
		case chat.OpAdd, chat.OpRemove, chat.OpLeave:
			g.kind, g.peer = audit.MemberAdded, d.Member
			if d.Kind != chat.OpAdd {
				g.kind = audit.MemberRemoved
			}
		case chat.OpEscalate:
			g.kind = audit.Escalated
			if !d.Target.IsZero() {
				extra = d.Target.String()
			}
		case chat.OpReceipt:
			if local || d.Level != chat.Acknowledged {
				continue
			}
			g.kind = audit.Acknowledged
		default:
			continue
		}
		switch {
		case !d.Standing:
			g, extra = group{kind: audit.Refused, peer: d.Sender}, ""
			if local {
				g.peer = ""
			}
		case g.kind == audit.MemberAdded || g.kind == audit.MemberRemoved:
			named[d.Member] = true
		}
		if _, seen := ops[g]; !seen {
			order = append(order, g)
		}
		if extra != "" {
			ops[g] = append(ops[g], extra)
		}
		ops[g] = append(ops[g], id.String())
	}
	var evs []audit.Event
	for _, g := range order {
		evs = append(evs, chunked(g.kind, conv, g.peer, ops[g])...)
	}
	if before != nil {
		after := c.r.MemberSet()
		var gone, back []peer.ID
		for p := range before {
			if !after[p] && !named[p] {
				gone = append(gone, p)
			}
		}
		for p := range after {
			if !before[p] && !named[p] {
				back = append(back, p)
			}
		}
		slices.Sort(gone)
		slices.Sort(back)
		for _, p := range gone {
			evs = append(evs, chunked(audit.MemberVoided, conv, p, nil)...)
		}
		for _, p := range back {
			evs = append(evs, chunked(audit.MemberAdded, conv, p, nil)...)
		}
	}
	return evs
}

// chunked makes one event per audit.MaxOps ops (see audit.Chunked).
func chunked(kind audit.Kind, conv chat.ConversationID, p peer.ID, ops []string) []audit.Event {
	ids := audit.IDs{Conversation: conv.String()}
	if p != "" {
		ids.Peer = audit.BoundID(p.String())
	}
	return audit.Chunked(kind, ids, ops)
}

func opIDs(envs [][]byte) []crdt.OpID {
	ids := make([]crdt.OpID, 0, len(envs))
	for _, raw := range envs {
		ids = append(ids, crdt.OpID(e2e.ID(raw)))
	}
	return ids
}

func opStrings(ids []crdt.OpID) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

// record hands events to the audit trail, outside every lock.
func (s *Service) record(evs ...audit.Event) {
	if s.cfg.Audit != nil && len(evs) > 0 {
		s.cfg.Audit(evs)
	}
}
