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

// TestSiteDirectoryForwardsCoalesced: the next try after junk entries —
// a colleague sends its anchor valid entries (colleagues enrolled by the
// trust), one new entry per exchange. Each changes the directory, yet the
// site peer gets at most one forward at a time and one per siteDirEvery,
// and every entry still crosses.
func TestSiteDirectoryForwardsCoalesced(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	const entries = 20
	var chains [][][]byte
	var ids []peer.ID
	for i := range entries {
		d := c.enrol(t, "colleague-"+string(rune('a'+i)), now)
		chains = append(chains, encodeChain(d.bundle))
		ids = append(ids, d.key.PeerID())
	}
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
	check.Eventually(t, 20*time.Second, "mallory's entry crossed", func() bool { return b.dir.has(m.ID()) })
	crossed.Store(0)
	start := time.Now()
	for _, ch := range chains {
		m.exchange(a.ID(), directoryMsg{Entries: []dirEntry{{Chain: ch}}}, nil)
	}
	check.Eventually(t, 60*time.Second, "every entry crossed the site link", func() bool {
		for _, id := range ids {
			if !b.dir.has(id) {
				return false
			}
		}
		return true
	})
	// One forward at once, then one per siteDirEvery: at most one plus the
	// time taken over siteDirEvery (and one for luck at the boundary).
	if n, most := crossed.Load(), int64(time.Since(start)/siteDirEvery)+2; n > most {
		t.Fatalf("%d new entries, one per exchange, made %d directory exchanges across the site link in %v (want at most %d)", entries, n, time.Since(start), most)
	}
}

// TestSiteDialPolicyBounds: a site peer is dialled at its configured
// address or a public one (a DNS name resolves to one), but a listing
// does not open the policy to anything else: not the same WAN address
// for another peer, not a reserved or unspecified address for the site
// peer (what its identify could claim).
func TestSiteDialPolicyBounds(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := c.enrol(t, "anchor-b", now, RoleAnchor)
	other := c.enrol(t, "other", now)
	wan := ma.StringCast("/ip4/203.0.113.7/tcp/4001")
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.key.PeerID(), Addrs: []ma.Multiaddr{wan}}}
	})
	g := (*gater)(a.adm)
	for _, tc := range []struct {
		p    peer.ID
		addr string
		want bool
	}{
		{b.key.PeerID(), "/ip4/203.0.113.7/tcp/4001", true},
		{b.key.PeerID(), "/ip4/203.0.113.7/tcp/4001/p2p/" + b.key.PeerID().String(), true},
		{b.key.PeerID(), "/ip4/8.8.8.8/tcp/4001", true}, // its DNS name, resolved
		{b.key.PeerID(), "/ip4/198.51.100.1/tcp/4001", false},
		{b.key.PeerID(), "/ip4/0.0.0.0/tcp/4001", false},
		{b.key.PeerID(), "/ip4/224.0.0.251/udp/5353/quic-v1", false},
		{other.key.PeerID(), "/ip4/203.0.113.7/tcp/4001", false},
		{other.key.PeerID(), "/ip4/8.8.8.8/tcp/4001", false},
	} {
		if got := g.InterceptAddrDial(tc.p, ma.StringCast(tc.addr)); got != tc.want {
			t.Errorf("dial %s at %s allowed %v, want %v", tc.p.ShortString(), tc.addr, got, tc.want)
		}
	}
}

// TestSiteWordOnlyFromAnchors: a colleague who is no anchor says it keeps
// a site link to its anchor (to be left out of peer exchange, or to be
// paced): refused, nothing recorded. The word of the listing anchor is
// taken.
func TestSiteWordOnlyFromAnchors(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := startNode(t, c, c.enrol(t, "anchor-b", now, RoleAnchor))
	m := startNode(t, c, c.enrol(t, "mallory", now), bootstrap(b))
	check.Eventually(t, 20*time.Second, "mallory admitted", func() bool { return b.isAdmitted(m.ID()) && m.isAdmitted(b.ID()) })
	m.announceSite(b.ID())
	if b.IsSitePeer(m.ID()) {
		t.Fatal("a colleague who is no anchor made itself a site peer by its word")
	}
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: b.host.Addrs()}}
	})
	check.Eventually(t, 20*time.Second, "the listing anchor's word taken", func() bool { return b.IsSitePeer(a.ID()) })
	if b.IsSitePeer(m.ID()) {
		t.Fatal("mallory became a site peer")
	}
}

// TestSitePeersBothSidesNotLeaked: both anchors list each other; neither
// site's devices meet the other site's anchor directly.
func TestSitePeersBothSidesNotLeaked(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	ka, kb := c.enrol(t, "anchor-a", now, RoleAnchor), c.enrol(t, "anchor-b", now, RoleAnchor)
	var bAddrs []ma.Multiaddr
	b := startNode(t, c, kb, func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: ka.key.PeerID(), Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}}}
	})
	bAddrs = b.host.Addrs()
	wardB := startNode(t, c, c.enrol(t, "ward-b", now), bootstrap(b))
	a := startNode(t, c, ka, func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: bAddrs}}
	})
	wardA := startNode(t, c, c.enrol(t, "ward-a", now), bootstrap(a))
	check.Eventually(t, 30*time.Second, "link and wards admitted", func() bool {
		return a.isAdmitted(b.ID()) && b.isAdmitted(a.ID()) && a.isAdmitted(wardA.ID()) && b.isAdmitted(wardB.ID())
	})
	deadline := time.Now().Add(siteAnnounceWait + 2*time.Second)
	for time.Now().Before(deadline) {
		for _, x := range []struct{ n, ward *Node }{{a, wardB}, {b, wardA}} {
			if x.n.host.Network().Connectedness(x.ward.ID()) == network.Connected {
				t.Fatal("a device of one site connected directly to the other site's anchor")
			}
		}
		if wardA.host.Network().Connectedness(wardB.ID()) == network.Connected {
			t.Fatal("devices of the two sites connected directly")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
