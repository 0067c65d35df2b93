package node

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/discovery"
)

// Peer exchange: the other admitted peers a colleague names on
// /medmesh/directory/2 are dialled if not connected. The names are a
// colleague's claims, so what one exchange can make us dial is bounded
// here, and what any source can is bounded by the dialer (discovery.Try:
// the address policy, MaxLearntAddrs per peer, SourceQuota peers per
// source and minute, a bounded queue and few dials at once).
const (
	// maxPXPeers peers are taken from one exchange; an honest device names
	// the tens of colleagues it is connected to, an anchor a few hundred,
	// and the rest are met on later exchanges.
	maxPXPeers = 64
	// maxPXScan entries of one exchange are looked at, so a long list of
	// junk costs little.
	maxPXScan = 4 * maxPXPeers
)

// learntPeers turns the peers an exchange names into dial targets: each
// peer once, never self, at most maxPXPeers of them out of the first
// maxPXScan entries. An address naming a peer ID (/p2p/...) is kept, bare,
// only when it names the peer it is listed for: the dial is always to the
// claimed ID, whose key the secure handshake checks, never to whatever
// another ID in the address would reach. malformed reports an entry whose
// peer ID does not parse, which no honest device sends.
func learntPeers(peers []peerAddrs, self peer.ID) (out []peer.AddrInfo, malformed bool) {
	for i, p := range peers {
		if i == maxPXScan || len(out) == maxPXPeers {
			break
		}
		ai, err := toAddrInfo(p)
		if err != nil {
			malformed = true
			continue
		}
		if ai.ID == self || slices.ContainsFunc(out, func(o peer.AddrInfo) bool { return o.ID == ai.ID }) {
			continue
		}
		addrs := ai.Addrs[:0]
		for _, a := range ai.Addrs {
			bare, id := peer.SplitAddr(a)
			if bare == nil || (id != "" && id != ai.ID) {
				continue
			}
			if _, err := bare.ValueForProtocol(ma.P_CIRCUIT); err == nil {
				// A relay path: kept only as /p2p/RELAY/p2p-circuit, which
				// the dialer's policy allows through admitted anchors.
				if r, err := bare.ValueForProtocol(ma.P_P2P); err == nil {
					if rid, err := peer.Decode(r); err == nil && rid != ai.ID {
						if c := discovery.Circuit(rid); !slices.ContainsFunc(addrs, c.Equal) {
							addrs = append(addrs, c)
						}
					}
				}
				continue
			}
			if _, err := bare.ValueForProtocol(ma.P_P2P); err == nil {
				continue // another peer inside: not a bare address
			}
			addrs = append(addrs, bare)
		}
		if ai.Addrs = addrs; len(addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out, malformed
}

// tryPeers hands the peers colleague from told us about to the dialer,
// but those connected or blocked. viaLoopback: from is on this machine, so
// loopback addresses it names are ours too. An exchange naming a malformed
// peer ID counts against from (Penalise), once.
func (n *Node) tryPeers(from peer.ID, peers []peerAddrs, viaLoopback bool) {
	src := discovery.Source{From: from, Loopback: viaLoopback}
	learnt, malformed := learntPeers(peers, n.ID())
	if malformed {
		n.Penalise(from)
	}
	for _, ai := range learnt {
		if n.isBlocked(ai.ID) || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		n.disc.Try(ai, src)
	}
}

// dialerOptions configure the node's dialer: learnt peers may be dialled
// at the public hosts among this node's bootstrap and listen addresses
// (see discovery.Policy).
func (n *Node) dialerOptions() []discovery.Option {
	var addrs []ma.Multiaddr
	for _, s := range n.cfg.Listen {
		if a, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, a)
		}
	}
	for _, ai := range n.cfg.Bootstrap {
		addrs = append(addrs, ai.Addrs...)
	}
	// Colleagues in the directory, not revoked, are dialled first.
	known := func(id peer.ID) bool {
		if !n.dir.has(id) {
			return false
		}
		_, revoked := n.KnownStaff(id)
		return !revoked
	}
	// Through an anchor admitted now (so connected): a colleague behind
	// NAT, or at another site, is reached on the relay it reserved on.
	relay := func(r peer.ID) bool { return n.HasRole(r, RoleAnchor) }
	return []discovery.Option{discovery.WithPublic(discovery.PublicAddrs(addrs)...), discovery.WithKnown(known), discovery.WithRelays(relay)}
}
