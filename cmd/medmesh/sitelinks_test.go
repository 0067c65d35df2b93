package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/node"
)

// siteLinkView is one entry of GET /api/v1/sites.
type siteLinkView struct {
	Peer          string    `json:"peer"`
	Addrs         []string  `json:"addrs"`
	Up            bool      `json:"up"`
	Since         time.Time `json:"since"`
	QueuedBytes   int64     `json:"queued_bytes"`
	SentBytes     int64     `json:"sent_bytes"`
	ReceivedBytes int64     `json:"received_bytes"`
	LastSync      time.Time `json:"last_sync"`
}

// TestSiteLinksInNamespaces: two sites, each a LAN (a bridge) with a
// device and an anchor, joined by a WAN namespace that routes between the
// anchors only. The anchors list each other in --site-peers (no
// --bootstrap across the WAN); each device knows its own anchor only, so
// everything between the sites crosses the site link. Site B is behind
// masquerade NAT (nftables in its anchor's namespace). In turn:
//   - a message crosses within 10 s; GET /api/v1/sites shows the link up;
//   - the WAN is cut: the link shows down; both sides write; the WAN
//     returns and both converge within 30 s (time logged);
//   - the WAN is shaped (tc tbf: 1 mbit; the kernel here has no netem) and the anchors' budget
//     is small: a backlog of routine messages queued at site A (queued
//     bytes show in /api/v1/sites), then one urgent message in another
//     conversation reaches site B before the backlog has all crossed;
//   - a device at site B that has never been on A's LAN, behind the NAT,
//     reaches site A's anchor across the WAN and holds a relay slot there;
//     site A's device opens a connection to it — relayed (neither has a
//     public address, so go-libp2p attempts no hole punching).
func TestSiteLinksInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 || exec.Command("ip", "netns", "list").Run() != nil {
		if requireAll() {
			t.Fatal("needs root and iproute2 (MEDMESH_REQUIRE_ALL=1)")
		}
		t.Skip("needs root and iproute2")
	}
	for _, tool := range []string{"curl", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			if requireAll() {
				t.Fatalf("needs %s (MEDMESH_REQUIRE_ALL=1)", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
	bin := filepath.Join(t.TempDir(), "medmesh")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	pid := (os.Getpid() + 100) % 200
	net := &nsNet{t: t, tag: fmt.Sprintf("sl%d", os.Getpid()%100000)}
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

	type siteNodes struct{ anchorNS, devNS, anchorDir, devDir, anchorID, devID, lanIP, wanIP, br string }
	var sites [3]siteNodes
	for i := 1; i <= 2; i++ {
		s := &sites[i]
		s.br = net.ns(fmt.Sprintf("br%d", i))
		net.ip("-n", s.br, "link", "add", "br0", "type", "bridge")
		net.ip("-n", s.br, "link", "set", "br0", "up")
		s.anchorNS, s.devNS = net.ns(fmt.Sprintf("a%d", i)), net.ns(fmt.Sprintf("d%d", i))
		s.lanIP, s.wanIP = sub(i, 1), sub(10+i, 2)
		net.link(s.anchorNS, "lan", s.lanIP+"/24", s.br, fmt.Sprintf("pa%d", i), "")
		net.link(s.devNS, "lan", sub(i, 2)+"/24", s.br, fmt.Sprintf("pd%d", i), "")
		for _, port := range []string{fmt.Sprintf("pa%d", i), fmt.Sprintf("pd%d", i)} {
			net.ip("-n", s.br, "link", "set", port, "master", "br0")
		}
		net.link(s.anchorNS, "wan", s.wanIP+"/24", wan, fmt.Sprintf("w%d", i), sub(10+i, 1)+"/24")
		s.anchorDir, s.anchorID = enrol(fmt.Sprintf("anchor%d", i), "anchor")
		s.devDir, s.devID = enrol(fmt.Sprintf("dev%d", i))
	}
	// WAN routes: anchor to anchor only. Site B's anchor routes its LAN
	// out through masquerade NAT; nothing routes into site B's LAN.
	net.ip("-n", sites[1].anchorNS, "route", "add", sub(12, 0)+"/24", "via", sub(11, 1))
	net.ip("-n", sites[2].anchorNS, "route", "add", sub(11, 0)+"/24", "via", sub(12, 1))
	net.ip("netns", "exec", sites[2].anchorNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	nat := exec.Command("ip", "netns", "exec", sites[2].anchorNS, "nft", "-f", "-")
	nat.Stdin = strings.NewReader("table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"wan\" masquerade\n }\n}\n")
	if out, err := nat.CombinedOutput(); err != nil {
		t.Fatalf("masquerade NAT in site B's namespace: %v: %s", err, out)
	}

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
	const budget = 16 << 10 // bytes per second: the backlog below takes ~20 s
	var anchors, devs [3]*nsProc
	for i := 1; i <= 2; i++ {
		other := sites[3-i]
		file := filepath.Join(root, fmt.Sprintf("sites%d.txt", i))
		body := fmt.Sprintf("# the other site's anchor, across the WAN\n\n%s\n", boot(other.wanIP, other.anchorID))
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		anchors[i] = start(sites[i].anchorNS, sites[i].anchorDir, "--anchor", "--site-peers", file, "--site-budget", fmt.Sprint(budget))
		devs[i] = start(sites[i].devNS, sites[i].devDir, "--bootstrap", boot(sites[i].lanIP, sites[i].anchorID))
		devs[i].id = sites[i].devID
	}
	a, b := devs[1], devs[2]
	links := func(p *nsProc) []siteLinkView {
		code, body := p.api(t, "GET", "/api/v1/sites", nil)
		var v []siteLinkView
		if code != 200 || json.Unmarshal(body, &v) != nil {
			return nil
		}
		return v
	}
	linkUp := func() (bool, siteLinkView) {
		v := links(anchors[1])
		if len(v) != 1 || v[0].Peer != sites[2].anchorID {
			return false, siteLinkView{}
		}
		return v[0].Up, v[0]
	}

	// Two conversations between the sites: a ward's (the backlog) and an
	// urgent one.
	conv := func(title string) string {
		var id string
		check.Eventually(t, 90*time.Second, "a conversation across the sites is created: "+title, func() bool {
			code, body := a.api(t, "POST", "/api/v1/conversations", map[string]any{"title": title, "members": []string{b.id}})
			var c struct{ ID string }
			json.Unmarshal(body, &c)
			id = c.ID
			return code == 201 && id != ""
		})
		return id
	}
	ward, urgentConv := conv("Ward 7"), conv("Bleep")
	messages := func(p *nsProc, conv string) []byte {
		code, body := p.api(t, "GET", "/api/v1/conversations/"+conv+"/messages", nil)
		if code != 200 {
			return nil
		}
		return body
	}
	has := func(p *nsProc, conv, text string) bool { return bytes.Contains(messages(p, conv), []byte(text)) }
	send := func(p *nsProc, conv, text string, urgent bool) {
		t.Helper()
		check.Eventually(t, 30*time.Second, "sent", func() bool {
			code, _ := p.api(t, "POST", "/api/v1/conversations/"+conv+"/messages", map[string]any{"text": text, "urgent": urgent})
			return code/100 == 2
		})
	}
	check.Eventually(t, 60*time.Second, "site B's device holds both conversations", func() bool {
		code, body := b.api(t, "GET", "/api/v1/conversations", nil)
		return code == 200 && bytes.Contains(body, []byte(ward)) && bytes.Contains(body, []byte(urgentConv))
	})

	// 1. A message crosses the site link within 10 s.
	sent := time.Now()
	send(a, ward, "bed 5 transferred to your site", false)
	check.Eventually(t, 10*time.Second, "the message crosses the sites", func() bool { return has(b, ward, "bed 5 transferred") })
	t.Logf("crossed the site link in %v", time.Since(sent).Round(time.Millisecond))
	check.Eventually(t, 10*time.Second, "/api/v1/sites shows the link up, with traffic and a sync", func() bool {
		up, l := linkUp()
		return up && l.SentBytes > 0 && l.ReceivedBytes > 0 && !l.LastSync.IsZero() && len(l.Addrs) == 1
	})
	if v := links(a); v == nil || len(v) != 0 {
		t.Fatalf("a device that is no anchor reports site links: %+v", v)
	}

	// 2. The WAN is cut; the link shows down; both sides write; the WAN
	// returns and both sides converge.
	net.ip("-n", wan, "link", "set", "w1", "down")
	check.Eventually(t, 30*time.Second, "/api/v1/sites shows the link down", func() bool {
		up, l := linkUp()
		return !up && l.Peer != ""
	})
	send(a, ward, "written at A during the cut", false)
	send(b, ward, "written at B during the cut", false)
	if has(b, ward, "written at A during the cut") || has(a, ward, "written at B during the cut") {
		t.Fatal("a message crossed a cut WAN: the topology has another path")
	}
	net.ip("-n", wan, "link", "set", "w1", "up")
	healed := time.Now()
	check.Eventually(t, 30*time.Second, "both sides converge after the WAN returns", func() bool {
		return has(a, ward, "written at B during the cut") && has(b, ward, "written at A during the cut")
	})
	t.Logf("converged %v after the WAN returned", time.Since(healed).Round(time.Millisecond))

	// 3. A slow WAN and a small budget: a backlog of routine messages,
	// then one urgent message in another conversation.
	for _, w := range []string{"w1", "w2"} {
		// tbf: this kernel has no netem (no added delay), so the link is
		// shaped to 1 mbit only.
		net.ip("netns", "exec", wan, "tc", "qdisc", "add", "dev", w, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms")
	}
	const backlog = 120
	filler := strings.Repeat("routine observations, ", 120) // ≈2.6 KB a message: the backlog takes ~20 s of the budget
	sawQueued := false
	for i := range backlog {
		send(a, ward, fmt.Sprintf("backlog %03d %s", i, filler), false)
		if !sawQueued && i%10 == 9 {
			_, l := linkUp()
			sawQueued = l.QueuedBytes > 0
		}
	}
	if n := bytes.Count(messages(b, ward), []byte("backlog ")); n == backlog {
		t.Fatalf("the whole backlog crossed while it was being written: nothing left to overtake (machine too slow?)")
	}
	send(a, urgentConv, "crash call: resus team to bay 3", true)
	urgentAt := time.Now()
	check.Eventually(t, 60*time.Second, "the urgent message crosses", func() bool {
		if !sawQueued {
			_, l := linkUp()
			sawQueued = l.QueuedBytes > 0
		}
		return has(b, urgentConv, "crash call")
	})
	crossed := bytes.Count(messages(b, ward), []byte("backlog "))
	t.Logf("urgent message crossed in %v, with %d of %d backlog messages across", time.Since(urgentAt).Round(time.Millisecond), crossed, backlog)
	if crossed >= backlog {
		t.Fatalf("the urgent message crossed only after the whole backlog (%d of %d)", crossed, backlog)
	}
	if !sawQueued {
		t.Error("/api/v1/sites never showed bytes queued on the link during the backlog")
	}
	check.Eventually(t, 120*time.Second, "the backlog crosses too", func() bool {
		return bytes.Count(messages(b, ward), []byte("backlog ")) == backlog
	})
	t.Logf("the backlog crossed %v after the urgent message", time.Since(urgentAt).Round(time.Millisecond))
	for _, w := range []string{"w1", "w2"} {
		net.ip("netns", "exec", wan, "tc", "qdisc", "del", "dev", w, "root")
	}

	// 4. NAT: a device at site B, behind the masquerade, that has never
	// been on A's LAN, reaches A's anchor across the WAN and reserves a
	// relay slot there; site A's device reaches it through that relay.
	devB2NS := net.ns("d3")
	net.link(devB2NS, "lan", sub(2, 3)+"/24", sites[2].br, "pd3", "")
	net.ip("-n", sites[2].br, "link", "set", "pd3", "master", "br0")
	net.ip("-n", devB2NS, "route", "add", "default", "via", sites[2].lanIP)
	b2Dir, b2ID := enrol("dev3")
	b2 := start(devB2NS, b2Dir, "--private", "--bootstrap", boot(sites[2].lanIP, sites[2].anchorID),
		"--bootstrap", boot(sites[1].wanIP, sites[1].anchorID))
	b2.id = b2ID
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
	check.Eventually(t, 60*time.Second, "site B's new device is admitted by site A's anchor, from behind the NAT", func() bool {
		ok, _ := admittedVia(anchors[1], b2.id)
		return ok
	})
	var addr string
	check.Eventually(t, 60*time.Second, "site A's device and site B's new one admit each other", func() bool {
		ok1, a1 := admittedVia(a, b2.id)
		ok2, _ := admittedVia(b2, a.id)
		addr = a1
		return ok1 && ok2
	})
	t.Logf("site A's device reaches site B's new device at %s", addr)
	if !strings.Contains(addr, "/p2p/"+sites[1].anchorID+"/p2p-circuit") {
		t.Fatalf("a device behind NAT reached other than through site A's anchor's relay: %s", addr)
	}
	// Outsiders at site A cannot dial into site B: nothing routes there.
	if err := exec.Command("ip", "netns", "exec", sites[1].anchorNS, "timeout", "3", "bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/4001", sub(2, 3))).Run(); err == nil {
		t.Fatal("site A's anchor reached a device behind site B's NAT directly")
	}
}

// TestReadSitePeers: --site-peers needs --anchor and a positive budget; a
// bad line is named in the error.
func TestReadSitePeers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	os.WriteFile(good, []byte("# B\n/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWGRUVh2WPBiVYJ2yGXpECC5aaeYfrCY9VDrLXHfSr3uZb\n"), 0o600)
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("# B\n\nanchor-b.example:4001\n"), 0o600)
	if peers, err := readSitePeers(good, true, node.MinSiteBudget); err != nil || len(peers) != 1 {
		t.Fatalf("good file: %d peers, %v", len(peers), err)
	}
	for _, tc := range []struct {
		file   string
		anchor bool
		budget int64
		want   string
	}{
		{good, false, node.MinSiteBudget, "needs --anchor"},
		{good, true, 0, "--site-budget"},
		{good, true, node.MinSiteBudget - 1, "at least"},
		{bad, true, node.MinSiteBudget, "line 3"},
		{filepath.Join(dir, "missing.txt"), true, node.MinSiteBudget, "--site-peers"},
	} {
		if _, err := readSitePeers(tc.file, tc.anchor, tc.budget); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s (anchor %v, budget %d): %v, want an error with %q", filepath.Base(tc.file), tc.anchor, tc.budget, err, tc.want)
		}
	}
}
