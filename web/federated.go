package web

import (
	"net/http"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/node"
)

// Federated colleagues (scope "invited"): devices of a federated trust
// admitted now. They are never in the directory; an inviter finds them in
// GET /api/v1/federated (name, department, roles, site and the trust they
// belong to) and names them by peer ID in POST /api/v1/conversations and
// POST /api/v1/conversations/{id}/members (add). A staff ID never names
// one: staff IDs of another trust may collide with ours.

// federatedPeers is what the federated routes need from the backend (the
// node has it).
type federatedPeers interface {
	FederatedPeers() []node.FederatedInfo
	FederatedPeer(id peer.ID) (node.FederatedInfo, bool)
}

// routeFederated: GET /api/v1/federated.
func (s *Server) routeFederated() {
	f, ok := s.b.(federatedPeers)
	if !ok {
		return
	}
	s.mux.HandleFunc("GET /api/v1/federated", func(w http.ResponseWriter, r *http.Request) {
		out := f.FederatedPeers()
		if out == nil {
			out = []node.FederatedInfo{}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// federatedMember resolves a peer ID naming a federated device this node
// admits (or admitted, while its record and certificate still hold).
func (s *Server) federatedMember(name string) (peer.ID, bool) {
	f, ok := s.staff.(federatedPeers)
	if !ok {
		return "", false
	}
	id, err := peer.Decode(strings.TrimSpace(name))
	if err != nil {
		return "", false
	}
	if _, ok := f.FederatedPeer(id); !ok {
		return "", false
	}
	return id, true
}
