package chat

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPureCore guards the layering of DESIGN.md: the pure core imports
// nothing that does network I/O or wires a node.
func TestPureCore(t *testing.T) {
	forbidden := []string{
		"github.com/medmesh/medmesh/node", "github.com/medmesh/medmesh/web",
		"github.com/medmesh/medmesh/mesh", "github.com/medmesh/medmesh/discovery",
		"github.com/medmesh/medmesh/store", "net/http", "github.com/libp2p/go-libp2p-pubsub",
		"github.com/libp2p/go-libp2p/p2p/",
	}
	for _, pkg := range []string{"crdt", "e2e", "chat", "identity"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/medmesh/medmesh/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s imports %s", pkg, dep)
				}
			}
		}
	}
}
