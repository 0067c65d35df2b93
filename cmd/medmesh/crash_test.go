package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

// TestSIGKILLLosesNoAcknowledgedMessage runs two real `medmesh run`
// processes on loopback, A bootstrapped to B, in one conversation. A sends
// through its local API and is killed with SIGKILL right after a send was
// acknowledged, then restarted on the same directory, several times. Every
// message A's API acknowledged with an id must reach B: an op or its key
// record lost with the process would make A reuse a chain index after the
// restart, and B would reject the message sealed with it for good.
func TestSIGKILLLosesNoAcknowledgedMessage(t *testing.T) {
	const kills, perRound = 3, 10
	bin, err := exec.LookPath("medmesh") // the test binary, put in PATH by testscript.Main
	if err != nil {
		t.Fatalf("medmesh command from TestMain: %v", err)
	}
	root := t.TempDir()
	var out bytes.Buffer
	e := testEnv(&out)
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	dirs := map[string]string{}
	for _, who := range []string{"a", "b"} {
		dir := filepath.Join(root, who)
		cli(t, e, "init", "--dir", dir, "--name", "Dr "+who, "--staff-id", who, "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt"))
		// Make the store's key file with a cheap KDF: `run` then only opens it.
		st, err := store.Open(filepath.Join(dir, device.StoreDir), []byte("device-secret"),
			store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		dirs[who] = dir
	}

	b := startProc(t, bin, dirs["b"])
	boot := b.listen + "/p2p/" + b.id
	a := startProc(t, bin, dirs["a"], "--bootstrap", boot)

	var conv struct{ ID string }
	eventually(t, 30*time.Second, "A creates a conversation with B", func() bool {
		return a.call(t, "POST", "/api/v1/conversations", map[string]any{"title": "ward 7", "members": []string{b.id}}, &conv) == http.StatusCreated
	})
	msgs := "/api/v1/conversations/" + conv.ID + "/messages"
	eventually(t, 30*time.Second, "B joins the conversation", func() bool {
		return b.call(t, "GET", msgs, nil, nil) == http.StatusOK
	})

	acked := map[string]string{} // message id → text
	for round := 0; round <= kills; round++ {
		for i := range perRound {
			text := fmt.Sprintf("round %d message %d", round, i)
			var res struct{ ID string }
			if code := a.call(t, "POST", msgs, map[string]any{"text": text}, &res); code != http.StatusCreated || res.ID == "" {
				t.Fatalf("send %q: status %d, id %q", text, code, res.ID)
			}
			acked[res.ID] = text
		}
		if round == kills {
			break
		}
		a.kill(t) // right after the last send returned
		a = startProc(t, bin, dirs["a"], "--bootstrap", boot)
	}

	var missing []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []struct{ ID, Text string }
		b.call(t, "GET", msgs, nil, &got)
		seen := map[string]string{}
		for _, m := range got {
			seen[m.ID] = m.Text
		}
		missing = missing[:0]
		for id, text := range acked {
			if seen[id] != text {
				missing = append(missing, text)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	t.Logf("A's log:\n%s", a.logs.String())
	t.Logf("B's log:\n%s", b.logs.String())
	t.Fatalf("%d of %d acknowledged messages never reached B: %q", len(missing), len(acked), missing)
}

// proc is one `medmesh run` process.
type proc struct {
	cmd    *exec.Cmd
	dir    string
	id     string // peer ID
	api    string // http://host:port
	listen string // its loopback TCP multiaddr
	token  string
	logs   *lockedBuffer
	exited chan struct{}
	ready  chan procInfo // the addresses, once printed
}

// procInfo is what `medmesh run` prints once it is up.
type procInfo struct{ id, api, listen string }

// startProc runs `medmesh run` on dir (loopback only, no mDNS) and waits
// until it has printed its peer ID, API address and listen address; it is
// killed at the end of the test.
func startProc(t *testing.T, bin, dir string, args ...string) *proc {
	t.Helper()
	return startCmd(t, procCmd(bin, dir, args...), dir)
}

// procCmd is the command startProc runs, for a caller to adjust (its
// environment, process attributes) before startCmd; a later duplicate in
// Env wins.
func procCmd(bin, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, append([]string{"run", "--dir", dir, "--no-mdns",
		"--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), envDevicePass+"=device-secret", "MEDMESH_LOG=debug")
	return cmd
}

// startCmd starts cmd (from procCmd) as startProc does.
func startCmd(t *testing.T, cmd *exec.Cmd, dir string) *proc {
	t.Helper()
	p := launchCmd(t, cmd, dir)
	select {
	case in := <-p.ready:
		p.up(t, in)
	case <-p.exited:
		t.Fatalf("medmesh run %s exited early:\n%s", dir, p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("medmesh run %s not ready within 30 s:\n%s", dir, p.logs.String())
	}
	return p
}

// launchCmd starts cmd without waiting: p.ready has a value once the
// process has printed its peer ID and addresses, for p.up.
func launchCmd(t *testing.T, cmd *exec.Cmd, dir string) *proc {
	t.Helper()
	p := &proc{cmd: cmd, dir: dir, logs: &lockedBuffer{}, exited: make(chan struct{}), ready: make(chan procInfo, 1)}
	p.cmd.Stderr = p.logs
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		var in procInfo
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "medmesh" && f[1] == "node":
				in.id = f[2]
			case len(f) >= 2 && f[0] == "app/API:":
				in.api = strings.TrimSuffix(f[1], "/")
			case len(f) == 2 && f[0] == "listen:" && strings.HasPrefix(f[1], "/ip4/127.0.0.1/tcp/"):
				in.listen = f[1]
			}
			if in.id != "" && in.api != "" && in.listen != "" {
				p.ready <- in
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill(t) })
	return p
}

// up records the addresses p printed (from p.ready) and reads its API token.
func (p *proc) up(t *testing.T, in procInfo) {
	t.Helper()
	p.id, p.api, p.listen = in.id, in.api, in.listen
	// The token file was written before the addresses were printed.
	tok, err := os.ReadFile(filepath.Join(p.dir, tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(tok))
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill: %v", err)
	}
	<-p.exited
}

// call makes one API request with the token; it returns the status (0 if
// the request failed) and decodes a 2xx body into out.
func (p *proc) call(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

var eventually = check.Eventually

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
