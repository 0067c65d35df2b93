package node

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/medmesh/medmesh/discovery"
)

// gater keeps blocked peers (revoked, or recently refused) out at dial and
// right after the secure handshake, where the peer ID is proven; the
// decisions are the admission part's.
type gater admission

func (g *gater) InterceptPeerDial(p peer.ID) bool { return !(*admission)(g).isBlocked(p) }
func (g *gater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return (*admission)(g).dialAllowedTo(p, a)
}
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool                     { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.offline.Load() && !(*admission)(g).isBlocked(p)
}

// dialPolicy is the policy every outgoing dial is held to — whoever named
// the address: peer exchange, mDNS, or a peer's own identify answer, which
// the peerstore keeps and every later dial of that peer tries — and the
// configured bootstrap addresses, allowed as they are. It is discovery's:
// private and link-local addresses, the configured public hosts, loopback
// only when this node listens on loopback (one machine), relay paths only
// through an admitted anchor (Relay, set by newAdmission); and the
// bootstrap peers, dialled at any address.
func dialPolicy(cfg Config) (discovery.Policy, map[peer.ID][]ma.Multiaddr) {
	var hosts []ma.Multiaddr
	configured := map[peer.ID][]ma.Multiaddr{}
	loopback := false
	for _, s := range cfg.Listen {
		if a, err := ma.NewMultiaddr(s); err == nil {
			hosts = append(hosts, a)
			loopback = loopback || manet.IsIPLoopback(a)
		}
	}
	for _, ai := range cfg.Bootstrap {
		hosts = append(hosts, ai.Addrs...)
		configured[ai.ID] = append(configured[ai.ID], ai.Addrs...)
	}
	// Site peers are named by the operator like bootstrap peers: another
	// site's anchor is usually at a public (WAN) address or a DNS name.
	for _, ai := range cfg.SitePeers {
		configured[ai.ID] = append(configured[ai.ID], ai.Addrs...)
	}
	return discovery.Policy{Loopback: loopback, LinkLocal: true, Public: discovery.PublicAddrs(hosts)}, configured
}

// dialAllowedTo: what dialAllowed allows; and a configured bootstrap or
// site peer at an address the operator gave for it, or at any public
// address (a DNS name the operator gave resolves to whatever it resolves
// to; the gater sees the resolved address) — never at a loopback,
// private or reserved address the policy refuses, whatever the peer's
// identify claims.
func (a *admission) dialAllowedTo(p peer.ID, addr ma.Multiaddr) bool {
	if a.dialAllowed(addr) {
		return true
	}
	given, ok := a.configuredPeers[p]
	if !ok {
		return false
	}
	if bare, id := peer.SplitAddr(addr); bare != nil && id != "" {
		addr = bare
	}
	if slices.ContainsFunc(given, addr.Equal) {
		return true
	}
	pub := discovery.PublicAddrs([]ma.Multiaddr{addr})
	return len(pub) == 1 && discovery.Policy{Public: pub}.Allows(addr)
}

// dialAllowed: an address the dial policy allows; a
// relayed address (…/p2p/RELAY/p2p-circuit) only through an admitted
// anchor.
func (a *admission) dialAllowed(addr ma.Multiaddr) bool {
	if bare, id := peer.SplitAddr(addr); bare != nil && id != "" {
		addr = bare
	}
	for i, c := range addr {
		if c.Code() != ma.P_CIRCUIT {
			continue
		}
		if i == 0 || addr[i-1].Code() != ma.P_P2P {
			return false
		}
		r, err := peer.IDFromBytes(addr[i-1].RawValue())
		return err == nil && a.dial.Relay(r)
	}
	return a.dial.Allows(addr)
}

// SetOffline cuts the device off the network, as a basement or a lift does:
// every connection closes and the gater refuses new ones. Back online,
// discovery reconnects and sync catches up. For the demo and tests.
func (n *Node) SetOffline(off bool) {
	n.adm.offline.Store(off)
	if off {
		for _, p := range n.host.Network().Peers() {
			n.host.Network().ClosePeer(p)
		}
		return
	}
	n.disc.RetryNow()
}

// Offline reports whether SetOffline cut the device off.
func (n *Node) Offline() bool { return n.adm.offline.Load() }

// Admission stream limits (resource manager).
const (
	admitStreams        = 128
	admitStreamsPerPeer = 4
)

// newResourceManager sets explicit limits: a device talks to tens of
// colleagues, an anchor to a few hundred; a flood of peers or streams hits
// these before it hits memory.
//
// An unadmitted peer can reach only /medmesh/admit/2 (every other handler
// resets its streams; pubsub refuses it): at most admitStreamsPerPeer
// streams of it per peer, admitStreams in all, and the node reads one
// presentation of a peer at a time until it is admitted, no frame of it
// larger than maxChainFrame (about 25 KiB). So unadmitted peers cost at
// most ConnsInbound (256) × 25 KiB ≈ 6 MiB of frames in flight, and a
// peer at most 8 connections (PeerDefault), with streams before protocol
// negotiation bounded by Transient.
func newResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns: 512, ConnsInbound: 256, ConnsOutbound: 256,
			Streams: 8192, StreamsInbound: 4096, StreamsOutbound: 4096,
			FD: 512, Memory: 1 << 30,
		},
		Transient: rcmgr.ResourceLimits{
			Conns: 64, ConnsInbound: 32, ConnsOutbound: 32,
			Streams: 256, StreamsInbound: 128, StreamsOutbound: 128,
			FD: 64, Memory: 64 << 20,
		},
		PeerDefault: rcmgr.ResourceLimits{
			Conns: 8, ConnsInbound: 4, ConnsOutbound: 4,
			Streams: 512, StreamsInbound: 256, StreamsOutbound: 256,
			FD: 8, Memory: 64 << 20,
		},
		Protocol: map[protocol.ID]rcmgr.ResourceLimits{
			ProtoAdmit: {Streams: 2 * admitStreams, StreamsInbound: admitStreams, StreamsOutbound: admitStreams, Memory: 16 << 20},
		},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{
			ProtoAdmit: {Streams: 2 * admitStreamsPerPeer, StreamsInbound: admitStreamsPerPeer, StreamsOutbound: admitStreamsPerPeer, Memory: 1 << 20},
		},
	}.Build(rcmgr.DefaultLimits.AutoScale())
	// Per-IP connection limits (default 8 per IPv4 address) would cap the
	// colleagues a device reaches through one anchor — a relayed
	// connection's address is the anchor's — and a site's devices behind
	// one NAT address: the system limits above bound connections instead.
	perIP := rcmgr.WithLimitPerSubnet(
		[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: 256}},
		[]rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: 256}, {PrefixLength: 48, ConnCount: 512}})
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), perIP)
}
