package node

import "github.com/libp2p/go-libp2p/core/peer"

// RoleAnchor is the certificate role of an always-on anchor: the mesh
// counts a "held" acknowledgement only from a peer whose certificate grants
// it.
const RoleAnchor = "anchor"

// HasRole reports whether id is admitted now and the certificate it was
// admitted on grants role. A peer not (or no longer) admitted — unknown,
// refused, revoked, disconnected — has no role. It reads the admission
// table only (under its lock); the answer follows revocations, which
// withdraw an admission.
func (n *Node) HasRole(id peer.ID, role string) bool {
	a := n.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.peers[id]
	return st != nil && st.admitted() && st.staff.HasRole(role)
}
