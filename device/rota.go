package device

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/patient"
	"github.com/medmesh/medmesh/rota"
)

// Roles is the site's on-call rota as this device knows it now.
func (d *Device) Roles() []rota.Role { return d.n.Roles() }

// SubmitRota signs a rota op as this device and spreads it (node.SubmitRota);
// a take and a hand-over are recorded in the audit trail.
func (d *Device) SubmitRota(dr node.RotaDraft) (*rota.Op, error) {
	op, err := d.n.SubmitRota(dr)
	if err != nil {
		return nil, err
	}
	switch op.Kind {
	case rota.KindTake:
		d.trail.Record(audit.Event{Kind: audit.RoleTaken, IDs: audit.IDs{Ops: []string{op.ID.String()}}})
	case rota.KindHandover:
		d.trail.Record(audit.Event{Kind: audit.RoleHandedOver, IDs: audit.IDs{Ops: []string{op.ID.String()}, Peer: op.To.String()}})
	}
	return op, nil
}

// CreateForRole starts a conversation addressed to on-call role id: this
// device resolves the role's holders from what it knows now, makes them
// members (beside members), and links the conversation to the role inside
// its encrypted state. It returns the role as resolved, so the caller can
// say who it reached and whether the holders are split. A role nobody
// holds, or held only by this device, is refused with rota.ErrNoHolder
// unless members names someone else.
func (d *Device) CreateForRole(title string, id rota.RoleID, members []peer.ID, p *patient.Patient) (chat.ConversationID, rota.Role, error) {
	r, ok := rota.Find(d.n.Roles(), id)
	if !ok {
		return chat.ConversationID{}, rota.Role{}, fmt.Errorf("%w: %s", rota.ErrUnknownRole, id)
	}
	all := append([]peer.ID(nil), members...)
	for _, h := range r.Holders {
		if h.PeerID != d.ID() && !contains(all, h.PeerID) {
			all = append(all, h.PeerID)
		}
	}
	if len(all) == 0 {
		return chat.ConversationID{}, r, fmt.Errorf("%w: %s", rota.ErrNoHolder, id)
	}
	if title == "" {
		title = r.Name
	}
	cid, err := d.c.CreateForRole(title, all, p, chat.RoleLink{ID: string(r.ID), Name: r.Name})
	return cid, r, err
}

func contains(ids []peer.ID, id peer.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
