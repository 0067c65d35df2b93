package node

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// HasRole reports whether id is admitted now on a credential that grants
// role (the roles of the staff certificate it was issued with). A peer not
// (or no longer) admitted — unknown, refused, revoked, disconnected — has
// no role. It reads the admission table only; the answer follows
// revocations, which withdraw an admission. The mesh asks it whether a
// peer's "held" acknowledgements count (role "anchor").
func (n *Node) HasRole(id peer.ID, role string) bool {
	return slices.Contains(n.adm.roles(id), role)
}
