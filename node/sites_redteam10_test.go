package node

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/internal/check"
)

// TestRedteam10JunkDirectoryBridged: a malicious admitted colleague sends
// its anchor directory offers whose entries are junk (no valid chain).
// Nothing is taken into the directory, yet each offer makes the anchor
// open a directory exchange (unpaced, carrying the addresses of every
// admitted peer) to each of its site peers: bridgeDirectory counts
// "fresh" entries before verifying them. One small stream from the
// colleague buys one WAN exchange per site peer, without bound.
func TestRedteam10JunkDirectoryBridged(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := startNode(t, c, c.enrol(t, "anchor-b", now, RoleAnchor))
	var crossed atomic.Int64
	b.host.SetStreamHandler(ProtoDirectory, func(s network.Stream) {
		crossed.Add(1)
		b.owned(b.gate(b.handleDirectory))(s)
	})
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: b.host.Addrs()}}
	})
	m := startNode(t, c, c.enrol(t, "mallory", now), bootstrap(a))
	check.Eventually(t, 20*time.Second, "site peer and colleague admitted", func() bool {
		return a.isAdmitted(b.ID()) && a.isAdmitted(m.ID()) && m.isAdmitted(a.ID())
	})
	// Let the directory exchanges of admission settle: mallory's entry
	// crossed, and no forward to b running or due (one may follow the
	// first by up to DirEvery), then no stream for 2 s.
	check.Eventually(t, 30*time.Second, "admission's directory forwards over", func() bool {
		a.sites.mu.Lock()
		busy := a.siteLink(b.ID()).dirBusy
		a.sites.mu.Unlock()
		return b.dir.has(m.ID()) && !busy
	})
	quiet := func() {
		for {
			before := crossed.Load()
			time.Sleep(2 * time.Second)
			if crossed.Load() == before {
				return
			}
		}
	}
	quiet()
	seqBefore := func() uint64 { a.dir.mu.Lock(); defer a.dir.mu.Unlock(); return a.dir.seq }()
	crossed.Store(0)

	const offers = 20
	for i := range offers {
		junk := dirEntry{Chain: [][]byte{{0xde, 0xad, byte(i)}}}
		m.exchange(a.ID(), directoryMsg{Entries: []dirEntry{junk}}, nil)
	}
	quiet()
	seqAfter := func() uint64 { a.dir.mu.Lock(); defer a.dir.mu.Unlock(); return a.dir.seq }()
	if seqAfter != seqBefore {
		t.Fatalf("junk entries changed the anchor's directory (seq %d -> %d)", seqBefore, seqAfter)
	}
	if n := crossed.Load(); n > 0 {
		t.Fatalf("%d junk directory offers from a colleague made the anchor open %d directory exchanges across the site link (want 0: nothing new was taken in)", offers, n)
	}
}

// TestRedteam10SitePeerPublicAddressRefused: a site peer is another
// site's anchor across a WAN, listed at its public address. The gater's
// dial policy allows private, link-local and configured public hosts
// (listen and bootstrap addresses) only; site peers' addresses are not
// added, so every dial of a site peer at a public address is refused by
// InterceptAddrDial and the "kept" link never comes up.
func TestRedteam10SitePeerPublicAddressRefused(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := c.enrol(t, "anchor-b", now, RoleAnchor)
	wan := ma.StringCast("/ip4/203.0.113.7/tcp/4001")
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.key.PeerID(), Addrs: []ma.Multiaddr{wan}}}
	})
	if !(*gater)(a.adm).InterceptAddrDial(b.key.PeerID(), wan) {
		t.Fatal("the gater refuses to dial a listed site peer at its public (WAN) address: the site link can never come up")
	}
}

// TestRedteam10SitePeerLeakedToLANDevices: anchor B admits its site peer
// A and, as after any admission, names A to every peer admitted at B (and
// bridges A's directory, with A's devices' addresses, to B's devices);
// B's devices dial A directly. They are no site peers of A: conversation
// gossip and unpaced sync then cross the WAN outside the site link, and
// neither the pubsub filter nor --site-budget applies. (On loopback every
// address is reachable; on a routed site-to-site VPN, the one deployment
// the dial policy lets a site link work in, so are A's.)
func TestRedteam10SitePeerLeakedToLANDevices(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := startNode(t, c, c.enrol(t, "anchor-b", now, RoleAnchor))
	wardB := startNode(t, c, c.enrol(t, "ward-b", now), bootstrap(b))
	check.Eventually(t, 20*time.Second, "ward B admitted at anchor B", func() bool { return b.isAdmitted(wardB.ID()) })
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: b.host.Addrs()}}
	})
	check.Eventually(t, 20*time.Second, "the site link is admitted", func() bool { return a.isAdmitted(b.ID()) })
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if a.host.Network().Connectedness(wardB.ID()) == network.Connected && a.isAdmitted(wardB.ID()) &&
			a.gossipsWith(wardB.ID(), "/medmesh/conv/00112233445566778899aabbccddeeff") {
			t.Fatal("a device of site B connected directly to site A's anchor, admitted, conversation gossip on: gossip and sync cross the WAN unpaced, outside the site link")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
