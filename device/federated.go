package device

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// Federated colleagues (scope "invited"): the node admits devices of a
// federated trust and learns their prekeys (node/federated_peers.go), the
// conversations layer says which conversations each is a member of, and
// the mesh syncs those with it and nothing else (mesh/federated.go).

// federatedMesh sets the mesh's hooks for federated peers.
func federatedMesh(cfg mesh.Config, n *node.Node, shares func(peer.ID, []byte) bool) mesh.Config {
	cfg.Federated = n.IsFederated
	cfg.FederatedSender = n.KnownFederated
	cfg.Shares = shares
	return cfg
}

// FederatedPeers lists the devices of federated trusts admitted now.
func (d *Device) FederatedPeers() []node.FederatedInfo { return d.n.FederatedPeers() }
