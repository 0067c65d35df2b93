package chat

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/medmesh/medmesh/"

// deps lists the packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestLayering guards the layering of DESIGN.md: dependencies point
// downward only.
func TestLayering(t *testing.T) {
	rules := []struct {
		pkgs      []string
		forbidden []string
		why       string
	}{
		{[]string{"crdt", "e2e", "chat", "identity", "rota"}, []string{
			module + "node", module + "web", module + "mesh", module + "conversations", module + "device",
			module + "discovery", module + "store", "net/http", "github.com/libp2p/go-libp2p-pubsub", "github.com/libp2p/go-libp2p/p2p/",
		}, "the pure core does no network I/O and wires no node"},
		{[]string{"mesh"}, []string{module + "chat", module + "conversations", module + "device", module + "web"},
			"mesh only moves envelopes"},
		{[]string{"node"}, []string{module + "web", module + "mesh", module + "conversations", module + "device"},
			"node is one host: admission, trust, directory"},
		{[]string{"conversations"}, []string{module + "device", module + "web", module + "node"},
			"conversations sits on mesh and chat"},
		{[]string{"device"}, []string{module + "web"}, "the composition root serves no HTTP"},
	}
	for _, r := range rules {
		for _, pkg := range r.pkgs {
			for _, dep := range deps(t, pkg) {
				for _, f := range r.forbidden {
					if strings.HasPrefix(dep, f) && (len(dep) == len(f) || strings.HasSuffix(f, "/") || dep[len(f)] == '/') {
						t.Errorf("%s imports %s (%s)", pkg, dep, r.why)
					}
				}
			}
		}
	}
	// Nothing imports cmd.
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module+"cmd/") {
				t.Errorf("%s imports %s", f[0], imp)
			}
		}
	}
}
