package device

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/rota"
)

// WithEscalator names who urgent messages nobody acknowledged go to next.
// Without it the device escalates along its on-call rota (rotaEscalator);
// where that names nobody, the sender is asked to choose
// (conversations.EventChoose).
func WithEscalator(e conversations.Escalator) Option {
	return func(c *config) error { c.escalator = e; return nil }
}

// rotaEscalator escalates along the on-call rota: a conversation addressed
// to an on-call role (its role link, chat.State.Role) goes at step k to
// the holders of the k-th role in that role's escalation chain, as this
// device's rota shows them now — the sender's device resolves the holder
// from what it knows, as a message to a role does. No role link, a chain
// shorter than k, or a role nobody else holds: no target, and the sender
// chooses.
type rotaEscalator struct{ d *Device }

func (e rotaEscalator) Next(conv, _ string, step int) ([]peer.ID, string, bool) {
	id, err := chat.ParseConversationID(conv)
	if err != nil {
		return nil, "", false
	}
	st, err := e.d.c.State(id)
	if err != nil || st.Role == nil {
		return nil, "", false
	}
	r, ok := rota.Next(e.d.n.Roles(), rota.RoleID(st.Role.ID), step)
	if !ok {
		return nil, "", false
	}
	var to []peer.ID
	for _, h := range r.Holders {
		if h.PeerID != e.d.ID() && !slices.Contains(to, h.PeerID) {
			to = append(to, h.PeerID)
		}
	}
	if len(to) == 0 {
		return nil, "", false
	}
	slices.Sort(to)
	if len(to) > chat.MaxEscalationTargets {
		to = to[:chat.MaxEscalationTargets]
	}
	label := r.Name
	if r.Split {
		label += " (two holders: both alerted)"
	}
	return to, label, true
}
