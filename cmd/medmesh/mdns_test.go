package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMDNSInNamespaces runs three real nodes in three network namespaces
// joined by a bridge (in a fourth namespace), all made by this test, with no
// bootstrap list: they must find each other by mDNS and admit each other.
// Nothing touches the machine's own interfaces.
func TestMDNSInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 || exec.Command("ip", "netns", "list").Run() != nil {
		if requireAll() {
			t.Fatal("needs root and iproute2 (MEDMESH_REQUIRE_ALL=1)")
		}
		t.Skip("needs root and iproute2")
	}
	bin := filepath.Join(t.TempDir(), "medmesh")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tag := fmt.Sprintf("mm%d", os.Getpid()%100000)
	sw := tag + "sw"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", sw)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sw).Run() })
	ip("-n", sw, "link", "add", "br0", "type", "bridge")
	ip("-n", sw, "link", "set", "br0", "up")

	dir := t.TempDir()
	var out bytes.Buffer
	e := testEnv(&out)
	ca := filepath.Join(dir, "ca")
	cli(t, e, "ca", "init", "--dir", ca, "--name", "General Hospital")

	type proc struct {
		cmd  *exec.Cmd
		mu   sync.Mutex
		seen map[string]bool
		id   string
	}
	var procs []*proc
	admitRe := regexp.MustCompile(`msg=admitted .*remote=(\S+)`)
	for i := 1; i <= 3; i++ {
		ns := fmt.Sprintf("%s%d", tag, i)
		ip("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ip("link", "add", "v"+ns, "netns", ns, "type", "veth", "peer", "name", fmt.Sprintf("p%d", i), "netns", sw)
		ip("-n", ns, "link", "set", "lo", "up")
		ip("-n", ns, "addr", "add", fmt.Sprintf("10.77.%d.%d/24", os.Getpid()%200, i), "dev", "v"+ns)
		ip("-n", ns, "link", "set", "v"+ns, "up")
		ip("-n", sw, "link", "set", fmt.Sprintf("p%d", i), "master", "br0")
		ip("-n", sw, "link", "set", fmt.Sprintf("p%d", i), "up")

		dev := filepath.Join(dir, fmt.Sprintf("dev%d", i))
		cli(t, e, "init", "--dir", dev, "--name", fmt.Sprintf("Dr %d", i), "--staff-id", fmt.Sprintf("S%d", i), "--ca", filepath.Join(ca, "ca.crt"))
		cli(t, e, "ca", "sign", "--dir", ca, "--csr", filepath.Join(dev, "device.csr"), "--out", filepath.Join(dev, "device.crt"))

		p := &proc{seen: map[string]bool{}}
		p.cmd = exec.Command("ip", "netns", "exec", ns, bin, "run", "--dir", dev, "--listen", "/ip4/0.0.0.0/tcp/4001", "--api", "127.0.0.1:7070")
		p.cmd.Env = append(os.Environ(), "MEDMESH_PASSPHRASE=device-secret")
		stderr, _ := p.cmd.StderrPipe()
		stdout, _ := p.cmd.StdoutPipe()
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopProcess(p.cmd) })
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "medmesh" && f[1] == "node" {
					p.mu.Lock()
					p.id = f[2]
					p.mu.Unlock()
				}
			}
		}()
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if m := admitRe.FindStringSubmatch(sc.Text()); m != nil {
					p.mu.Lock()
					p.seen[m[1]] = true
					p.mu.Unlock()
				}
			}
		}()
		procs = append(procs, p)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := true
		for _, p := range procs {
			p.mu.Lock()
			if len(p.seen) < 2 {
				all = false
			}
			p.mu.Unlock()
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			for i, p := range procs {
				t.Logf("node %d (%s) admitted %v", i+1, p.id, p.seen)
			}
			t.Fatal("nodes did not find and admit each other by mDNS within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
