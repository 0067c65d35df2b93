package mobile

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/keywrap"
)

// TestStartServesTheApp: a device directory made as `medmesh init` and
// `ca sign` make it starts through the facade, serves the web app on
// loopback, and stops (twice, harmlessly).
func TestStartServesTheApp(t *testing.T) {
	root := t.TempDir()
	cheap := keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}
	now := time.Now()
	ca, err := identity.InitRootCA(filepath.Join(root, "ca"), "General Hospital", []byte("ca"), cheap, false, now)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(root, "ca", identity.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "dev")
	if _, err := identity.InitDevice(dir, identity.Details{Name: "Dr Asha Rao", StaffID: "A1"}, rootPEM, []byte("pass"), cheap); err != nil {
		t.Fatal(err)
	}
	csr, err := os.ReadFile(filepath.Join(dir, identity.DeviceCSRFile))
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := ca.Sign(csr, identity.SignOptions{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, identity.DeviceCertFile), chain, 0o644); err != nil {
		t.Fatal(err)
	}

	if _, err := start(dir, "wrong", false); err == nil {
		t.Fatal("started with a wrong passphrase")
	}
	d, err := start(dir, "pass", false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.URL(), "http://127.0.0.1:") || !strings.HasPrefix(d.PeerID(), "12D3KooW") {
		t.Fatalf("URL %q, peer ID %q", d.URL(), d.PeerID())
	}
	resp, err := http.Get(d.URL())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<html") {
		t.Fatalf("app: %d %.80q", resp.StatusCode, page)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(d.URL()); err == nil {
		t.Fatal("the app still answers after Stop")
	}
}
