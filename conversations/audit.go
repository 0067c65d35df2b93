package conversations

import (
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
// acknowledged (a colleague's acknowledgement receipt) — each with the
// conversation, the op IDs and the peer concerned, never text or titles.
// Read, acknowledged and photo viewed by this device's user are recorded
// when the user does them (Receipt, Photo). Delivered and read receipts
// of others, reactions and photo chunks are not recorded; nor are ops of
// a conversation this device cannot open yet.

// auditOps describes ops of c (made here if local, else taken in) as audit
// events, grouped by kind and peer. Callers hold c.mu.
func (s *Service) auditOps(c *conv, ids []crdt.OpID, local bool) []audit.Event {
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
	for _, id := range ids {
		d, ok := c.r.Describe(id)
		if !ok {
			continue
		}
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
		case chat.OpReceipt:
			if local || d.Level != chat.Acknowledged {
				continue
			}
			g.kind = audit.Acknowledged
		default:
			continue
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
	return evs
}

// chunked makes one event per audit.MaxOps ops.
func chunked(kind audit.Kind, conv chat.ConversationID, p peer.ID, ops []string) []audit.Event {
	var evs []audit.Event
	for len(ops) > 0 || evs == nil {
		n := min(len(ops), audit.MaxOps)
		ids := audit.IDs{Conversation: conv.String(), Ops: ops[:n:n]}
		if p != "" {
			ids.Peer = p.String()
		}
		evs = append(evs, audit.Event{Kind: kind, IDs: ids})
		ops = ops[n:]
	}
	return evs
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
