package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/keywrap"
)

// testEnv runs commands in-process with passphrases from a map and a cheap
// KDF, so a test can drive several nodes.
func testEnv(out *bytes.Buffer) *env {
	vars := map[string]string{envCAPass: "ca-secret", envDevicePass: "device-secret"}
	w := &lockedWriter{w: out}
	return &env{stdin: strings.NewReader(""), stdout: w, stderr: w,
		getenv: func(k string) string { return vars[k] },
		kdf:    &keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}}
}

func cli(t *testing.T, e *env, args ...string) {
	t.Helper()
	root := newRootCmd(e)
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("medmesh %s: %v", strings.Join(args, " "), err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunServesAPIAndShutsDown starts `medmesh run`, reads the token file,
// calls the API with and without it, then cancels (as SIGINT does) and
// expects a clean stop within the 5 s grace.
func TestRunServesAPIAndShutsDown(t *testing.T) {
	e, ca, dev := newTrustAndDevice(t)
	cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dev, "device.csr"), "--out", filepath.Join(dev, "device.crt"), "--roles", "doctor")

	api := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var logs bytes.Buffer
		root := newRootCmd(testEnv(&logs))
		root.SetArgs([]string{"run", "--dir", dev, "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", api})
		done <- root.ExecuteContext(ctx)
	}()
	tokenPath := filepath.Join(dev, "api.token")
	var token string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(tokenPath); err == nil && len(b) > 0 {
			token = strings.TrimSpace(string(b))
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no api.token within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, _ := os.Stat(tokenPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("api.token mode %v", st.Mode().Perm())
	}
	get := func(tok string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest("GET", "http://"+api+"/api/v1/status", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		var resp *http.Response
		var err error
		for end := time.Now().Add(10 * time.Second); ; {
			if resp, err = http.DefaultClient.Do(req); err == nil || time.Now().After(end) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	if resp, _ := get(""); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	resp, body := get(token)
	if resp.StatusCode != 200 || body["name"] != "Dr One" || !strings.HasPrefix(body["peer_id"].(string), "12D3KooW") {
		t.Fatalf("status: %d %v", resp.StatusCode, body)
	}
	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		t.Logf("stopped in %v", time.Since(stopped))
	case <-time.After(3 * shutdownGrace): // the grace, then the device's close
		t.Fatalf("run did not stop within %v", 3*shutdownGrace)
	}
}

func TestRunRefusesWithoutCertificate(t *testing.T) {
	e, _, dev := newTrustAndDevice(t)
	root := newRootCmd(e)
	root.SetArgs([]string{"run", "--dir", dev, "--no-mdns"})
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "have the CA sign device.csr first") {
		t.Fatalf("run without device.crt: %v", err)
	}
}

// lockedWriter serialises writes: several devices' loggers share it.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// newTrustAndDevice makes a CA and one device with keys and a CSR (not yet
// signed) in a temporary directory.
func newTrustAndDevice(t *testing.T) (e *env, ca, dev string) {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	e = testEnv(&out)
	ca, dev = filepath.Join(dir, "ca"), filepath.Join(dir, "dev")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	cli(t, e, "init", "--dir", dev, "--name", "Dr One", "--staff-id", "S1", "--ca", filepath.Join(ca, "ca.crt"))
	return e, ca, dev
}
