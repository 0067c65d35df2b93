package device

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// Federated colleagues (scope "invited"): the node admits devices of a
// federated trust and learns their prekeys (node/federated_peers.go), the
// conversations layer says which conversations each is a member of, and
// the mesh syncs those with it and nothing else (mesh/federated.go).

// federatedMesh sets the mesh's hooks for federated peers.
func federatedMesh(cfg mesh.Config, n *node.Node, c *conversations.Service) mesh.Config {
	cfg.Federated = n.IsFederated
	cfg.FederatedSender = n.KnownFederated
	cfg.Shares = c.Shares
	cfg.Introduce = func(p peer.ID, tags [][]byte) {
		var ids []peer.ID
		for _, t := range tags {
			ids = append(ids, c.CoMembers(p, t)...)
		}
		n.IntroduceTo(p, ids)
	}
	return cfg
}

// FederatedPeers lists the devices of federated trusts admitted now.
func (d *Device) FederatedPeers() []node.FederatedInfo { return d.n.FederatedPeers() }

// revokedIn is the revocation predicate replicas apply (the revoked-sender
// rule): a colleague a CRL revokes, or a federated device met whose
// trust's CRL revokes it.
func revokedIn(n *node.Node) func(peer.ID) bool {
	return func(id peer.ID) bool {
		if known, r := n.KnownStaff(id); known {
			return r
		}
		_, r := n.KnownFederated(id)
		return r
	}
}

// foreignIn is what conversations asks before making a member an admin:
// true unless the node knows the member as our own staff (a certificate of
// our CA, admitted now or in the persisted directory). Deciding from our
// own CA's word, not from the in-memory fed book, keeps a device of
// another trust from being promoted after a restart, before it is met.
func foreignIn(n *node.Node) func(peer.ID) bool {
	return func(id peer.ID) bool {
		if id == n.ID() {
			return false // this device is our own staff
		}
		if n.Foreign(id) {
			return true
		}
		known, _ := n.KnownStaff(id)
		return !known
	}
}

// unfederated names the members conversations.Prune removes after a newer
// federation record: devices of another trust met whose record no longer
// admits them (withdrawn, narrowed, or the certificate lapsed).
func unfederated(n *node.Node) func(peer.ID) bool {
	return func(id peer.ID) bool {
		if !n.Foreign(id) {
			return false
		}
		known, _ := n.KnownFederated(id)
		return !known
	}
}

// invitesFrom reports whether a device of another trust, admitted now, may
// invite ours into a conversation it creates: our record for its trust
// says so (policy "invites"). Our own staff never ask: they are not
// foreign.
func invitesFrom(n *node.Node, trust *identity.Trust) func(peer.ID) bool {
	return func(id peer.ID) bool {
		_, fed, ok := n.FederatedStaff(id)
		if !ok || fed == nil {
			return false
		}
		// The record in force now, not the one the peer was admitted
		// under: a newer record may grant or withdraw invitations.
		for _, f := range trust.Federations() {
			if f.Other == fed.Other {
				return !f.Withdrawn && f.Policy.Invites
			}
		}
		return false
	}
}
