package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/check"
)

// nsNet makes the network namespaces of one test's topology, removed
// when it ends.
type nsNet struct {
	t   *testing.T
	tag string
}

func (n *nsNet) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// ns adds a namespace named tag+name, removed when the test ends.
func (n *nsNet) ns(name string) string {
	full := n.tag + name
	n.ip("netns", "add", full)
	n.t.Cleanup(func() { exec.Command("ip", "netns", "del", full).Run() })
	n.ip("-n", full, "link", "set", "lo", "up")
	return full
}

// link joins namespace a (interface ia, address aAddr) to b (ib, bAddr); an
// empty address leaves that end unaddressed (a bridge port).
func (n *nsNet) link(a, ia, aAddr, b, ib, bAddr string) {
	n.ip("link", "add", ia, "netns", a, "type", "veth", "peer", "name", ib, "netns", b)
	for _, e := range []struct{ ns, dev, addr string }{{a, ia, aAddr}, {b, ib, bAddr}} {
		if e.addr != "" {
			n.ip("-n", e.ns, "addr", "add", e.addr, "dev", e.dev)
		}
		n.ip("-n", e.ns, "link", "set", e.dev, "up")
	}
}

// nsProc is one `medmesh run` inside a namespace.
type nsProc struct {
	ns, dir, id string
	cmd         *exec.Cmd
	log         *lockedWriter
	buf         *bytes.Buffer
}

// api calls the node's local API from inside its namespace (curl), with
// its token. It returns the status and the body (status 0: no answer).
func (p *nsProc) api(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(p.dir, tokenFile))
	if err != nil {
		return 0, nil
	}
	args := []string{"netns", "exec", p.ns, "curl", "-s", "-m", "10", "-X", method, "-w", "\n%{http_code}",
		"-H", "Authorization: Bearer " + strings.TrimSpace(string(tok)), "-H", "Content-Type: application/json"}
	var in []byte
	if body != nil {
		in, _ = json.Marshal(body)
		args = append(args, "--data-binary", "@-")
	}
	cmd := exec.Command("ip", append(args, "http://127.0.0.1:7070"+path)...)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		return 0, nil
	}
	i := bytes.LastIndexByte(out, '\n')
	if i < 0 {
		return 0, nil
	}
	code, _ := strconv.Atoi(string(out[i+1:]))
	return code, out[:i]
}

// TestSitesInNamespaces: two hospital sites, each a LAN (a bridge) with a
// device and a site anchor, joined by a WAN namespace that routes between
// the anchors' WAN addresses. Site A's device has no route off its LAN;
// site B is "behind NAT": its device can reach out across the WAN (its
// anchor routes for it) but nothing at site A can reach it. Every node is
// a real `medmesh run` in its own namespace; the devices say they are
// behind NAT (--private). Site B's device holds a relay slot on site A's
// anchor, site A's device is told so and reaches it there — a device it
// has never shared a LAN with and cannot route to — both admit each other,
// and a conversation between them works. Then the WAN is cut, both sides
// write, the WAN returns and both converge with no operator action. The
// figures (time to cross, time to converge) are logged.
func TestSitesInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 || exec.Command("ip", "netns", "list").Run() != nil {
		if requireAll() {
			t.Fatal("needs root and iproute2 (MEDMESH_REQUIRE_ALL=1)")
		}
		t.Skip("needs root and iproute2")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		if requireAll() {
			t.Fatal("needs curl (MEDMESH_REQUIRE_ALL=1)")
		}
		t.Skip("needs curl")
	}
	bin := filepath.Join(t.TempDir(), "medmesh")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	pid := os.Getpid() % 200
	net := &nsNet{t: t, tag: fmt.Sprintf("ms%d", os.Getpid()%100000)}
	sub := func(i, host int) string { return fmt.Sprintf("10.%d.%d.%d", 100+pid/4, (pid%4)*50+i, host) }

	wan := net.ns("wan")
	net.ip("netns", "exec", wan, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	var out bytes.Buffer
	e := testEnv(&out)
	root := t.TempDir()
	ca := filepath.Join(root, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")
	enrol := func(name string, roles ...string) (string, string) {
		dir := filepath.Join(root, name)
		cli(t, e, "init", "--dir", dir, "--name", name, "--staff-id", name, "--ca", filepath.Join(ca, "ca.crt"))
		args := []string{"ca", "sign", "--dir", ca, "--csr", filepath.Join(dir, "device.csr"), "--out", filepath.Join(dir, "device.crt")}
		if len(roles) > 0 {
			args = append(args, "--roles", strings.Join(roles, ","))
		}
		cli(t, e, args...)
		k, err := identity.LoadDeviceKey(dir, []byte("device-secret"))
		if err != nil {
			t.Fatal(err)
		}
		return dir, k.PeerID().String()
	}

	// Per site i (1, 2): a bridge namespace, an anchor on the LAN and the
	// WAN, a device on the LAN only.
	type siteNodes struct{ anchorNS, devNS, anchorDir, devDir, anchorID, devID, lanIP, wanIP string }
	var sites [3]siteNodes
	for i := 1; i <= 2; i++ {
		s := &sites[i]
		br := net.ns(fmt.Sprintf("br%d", i))
		net.ip("-n", br, "link", "add", "br0", "type", "bridge")
		net.ip("-n", br, "link", "set", "br0", "up")
		s.anchorNS, s.devNS = net.ns(fmt.Sprintf("a%d", i)), net.ns(fmt.Sprintf("d%d", i))
		s.lanIP, s.wanIP = sub(i, 1), sub(10+i, 2)
		net.link(s.anchorNS, "lan", s.lanIP+"/24", br, fmt.Sprintf("pa%d", i), "")
		net.link(s.devNS, "lan", sub(i, 2)+"/24", br, fmt.Sprintf("pd%d", i), "")
		for _, port := range []string{fmt.Sprintf("pa%d", i), fmt.Sprintf("pd%d", i)} {
			net.ip("-n", br, "link", "set", port, "master", "br0")
		}
		net.link(s.anchorNS, "wan", s.wanIP+"/24", wan, fmt.Sprintf("w%d", i), sub(10+i, 1)+"/24")
		s.anchorDir, s.anchorID = enrol(fmt.Sprintf("anchor%d", i), "anchor")
		s.devDir, s.devID = enrol(fmt.Sprintf("dev%d", i))
	}
	// WAN routes: anchor to anchor, and site B's LAN out through its
	// anchor (outbound only: site A's device has no route to it).
	net.ip("-n", sites[1].anchorNS, "route", "add", sub(12, 0)+"/24", "via", sub(11, 1))
	net.ip("-n", sites[1].anchorNS, "route", "add", sub(2, 0)+"/24", "via", sub(11, 1))
	net.ip("-n", sites[2].anchorNS, "route", "add", sub(11, 0)+"/24", "via", sub(12, 1))
	net.ip("-n", wan, "route", "add", sub(2, 0)+"/24", "via", sub(12, 2))
	net.ip("netns", "exec", sites[2].anchorNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	net.ip("-n", sites[2].devNS, "route", "add", "default", "via", sites[2].lanIP)

	start := func(ns, dir string, args ...string) *nsProc {
		p := &nsProc{ns: ns, dir: dir, buf: &bytes.Buffer{}}
		p.log = &lockedWriter{w: p.buf}
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin, "run", "--dir", dir, "--listen", "/ip4/0.0.0.0/tcp/4001",
			"--api", "127.0.0.1:7070", "--no-mdns"}, args...)...)
		p.cmd.Env = append(os.Environ(), "MEDMESH_PASSPHRASE=device-secret")
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stopProcess(p.cmd)
			if t.Failed() {
				p.log.mu.Lock()
				t.Logf("%s:\n%s", filepath.Base(dir), p.buf.String())
				p.log.mu.Unlock()
			}
		})
		return p
	}
	boot := func(ip, id string) string { return fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", ip, id) }
	var anchors, devs [3]*nsProc
	for i := 1; i <= 2; i++ {
		other := sites[3-i]
		anchors[i] = start(sites[i].anchorNS, sites[i].anchorDir, "--anchor", "--bootstrap", boot(other.wanIP, other.anchorID))
		args := []string{"--private", "--bootstrap", boot(sites[i].lanIP, sites[i].anchorID)}
		if i == 2 { // site B's device also keeps site A's anchor, across the WAN
			args = append(args, "--bootstrap", boot(sites[1].wanIP, sites[1].anchorID))
		}
		devs[i] = start(sites[i].devNS, sites[i].devDir, args...)
		devs[i].id = sites[i].devID
	}
	a, b := devs[1], devs[2]

	// The device at site A reaches the one at site B, which it has never
	// shared a LAN with, and both admit each other: through a relay.
	admittedVia := func(p *nsProc, other string) (bool, string) {
		code, body := p.api(t, "GET", "/api/v1/status", nil)
		if code != 200 {
			return false, ""
		}
		var st struct {
			Peers []struct {
				PeerID   string `json:"peer_id"`
				Admitted bool
				Addr     string
			}
		}
		json.Unmarshal(body, &st)
		for _, q := range st.Peers {
			if q.PeerID == other && q.Admitted {
				return true, q.Addr
			}
		}
		return false, ""
	}
	var addr string
	check.Eventually(t, 90*time.Second, "the devices at the two sites admit each other", func() bool {
		ok1, a1 := admittedVia(a, b.id)
		ok2, _ := admittedVia(b, a.id)
		addr = a1
		return ok1 && ok2
	})
	t.Logf("site A's device reaches site B's at %s", addr)
	if !strings.Contains(addr, "p2p-circuit") {
		t.Fatalf("a connection across sites with no route between them, not relayed: %s", addr)
	}

	var conv string
	check.Eventually(t, 60*time.Second, "a conversation across the sites is created", func() bool {
		code, body := a.api(t, "POST", "/api/v1/conversations", map[string]any{"title": "Transfer", "members": []string{b.id}})
		var c struct{ ID string }
		json.Unmarshal(body, &c)
		conv = c.ID
		return code == 201 && conv != ""
	})
	has := func(p *nsProc, text string) bool {
		code, body := p.api(t, "GET", "/api/v1/conversations/"+conv+"/messages", nil)
		return code == 200 && bytes.Contains(body, []byte(text))
	}
	send := func(p *nsProc, text string) {
		t.Helper()
		check.Eventually(t, 30*time.Second, "sent", func() bool {
			code, _ := p.api(t, "POST", "/api/v1/conversations/"+conv+"/messages", map[string]any{"text": text})
			return code/100 == 2
		})
	}
	sent := time.Now()
	send(a, "bed 5 transferred to your site")
	check.Eventually(t, 60*time.Second, "the message crosses the sites", func() bool { return has(b, "bed 5 transferred") })
	t.Logf("crossed the sites in %v", time.Since(sent).Round(time.Millisecond))

	// The WAN goes down; both sides write; it returns.
	net.ip("-n", wan, "link", "set", "w1", "down")
	send(a, "written at A during the cut")
	send(b, "written at B during the cut")
	if has(b, "written at A during the cut") || has(a, "written at B during the cut") {
		t.Fatal("a message crossed a cut WAN: the topology has another path")
	}
	net.ip("-n", wan, "link", "set", "w1", "up")
	healed := time.Now()
	check.Eventually(t, 120*time.Second, "both sides converge after the WAN returns", func() bool {
		return has(a, "written at B during the cut") && has(b, "written at A during the cut")
	})
	t.Logf("converged %v after the WAN returned", time.Since(healed).Round(time.Millisecond))
}

// stopProcess interrupts a node started by a test and waits for it to
// exit, killing it after 6 s (a clean stop takes about one).
func stopProcess(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(6 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
