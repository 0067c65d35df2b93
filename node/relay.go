package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/medmesh/medmesh/discovery"
)

// Reaching devices behind NAT, on go-libp2p's own parts:
//
//   - An anchor (Config.Relay) runs a circuit relay v2 service, for
//     admitted peers only: a reservation waits for the peer's admission and
//     is refused without it; a circuit needs both ends admitted. Its
//     circuits have no duration or data limit, so relayed connections are
//     not "limited" and admission, sync and pubsub run on them exactly as on
//     direct ones (a limited connection would need every protocol, pubsub's
//     included, to opt in, and 128 KiB does not carry one photo). What bounds
//     an abusive colleague instead: RelayReservations reservations, one per
//     peer, RelayCircuits circuits per peer, the resource manager's stream
//     and memory limits, and a certificate that names it and can be
//     revoked.
//   - Every device runs the relay client and hole punching (DCUtR). When it
//     is private — Config.ForcePrivate (`run --private`), or AutoNAT's
//     verdict, which go-libp2p's AutoNAT reaches only for public addresses
//     (its servers refuse to dial private ones, so anchors run none: a
//     hospital network is private) — it reserves a slot on admitted anchors
//     it is connected to (keepRelays),
//     advertises the relayed addresses, and a colleague that dials it there
//     is upgraded to a direct connection when hole punching succeeds.
//     go-libp2p runs hole punching only for hosts that have public
//     addresses; between private sites the relayed connection carries the
//     traffic.
const (
	RelayReservations      = 1024 // a site's devices behind one NAT share an IP
	RelayCircuits          = 64   // per peer, source or destination, at once
	RelayCircuitsPerSource = 4    // a source's circuits at once (AllowConnect)
	relayAnnounceEvery     = 10 * time.Minute
	relayReservationTTL    = time.Hour // go-libp2p's relay default (Resources.ReservationTTL)
	relaysKept             = 2         // anchors a private device holds a slot on
	relayCheck             = 5 * time.Second
	relayRenew             = 10 * time.Minute // renew a reservation this long before it expires (they last an hour)
	relayTimeout           = 10 * time.Second
)

// relayOptions configures an anchor's relay service.
func relayOptions(n *Node) []relayv2.Option {
	res := relayv2.DefaultResources()
	res.Limit = nil // see above: relayed connections are not limited
	res.MaxReservations = RelayReservations
	res.MaxReservationsPerIP = RelayReservations
	res.MaxReservationsPerASN = RelayReservations
	res.MaxCircuits = RelayCircuits
	return []relayv2.Option{
		relayv2.WithResources(res),
		relayv2.WithACL(relayACL{n}),
		// A hospital network is private: reservations carry the anchor's
		// LAN addresses (the default keeps public ones only).
		relayv2.WithReservationAddressFilter(func(a ma.Multiaddr) bool {
			ip, err := manet.ToIP(a)
			return err == nil && !ip.IsUnspecified() && !ip.IsLinkLocalUnicast() && !ip.IsMulticast()
		}),
	}
}

// relayACL admits reservations and circuits of admitted peers only.
type relayACL struct{ n *Node }

// AllowReserve waits for the peer's admission (a reservation comes right
// after connecting), and refuses without it. A peer that reserves is named
// to the other admitted peers at its relayed address through this anchor
// (peer exchange), so colleagues elsewhere can reach it.
func (a relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	ctx, cancel := context.WithTimeout(a.n.ctx, a.n.cfg.AdmitTimeout)
	defer cancel()
	if !a.n.awaitAdmitted(ctx, p) {
		return false
	}
	a.n.relayMu.Lock()
	if a.n.reserved == nil {
		a.n.reserved = map[peer.ID]time.Time{}
	}
	now := time.Now()
	if len(a.n.reserved) >= RelayReservations {
		for q, at := range a.n.reserved {
			if now.Sub(at) > relayReservationTTL {
				delete(a.n.reserved, q)
			}
		}
	}
	a.n.reserved[p] = now
	a.n.relayMu.Unlock()
	if a.n.announceDue(p) {
		a.n.goOwned(func() { a.n.announceRelayed(p) })
	}
	return true
}

// reservedHere reports whether p asked for a reservation on this anchor's
// relay within the reservation lifetime: peer exchange then names it at
// its relayed address through this anchor too, so a colleague admitted
// after the reservation (and its announcement) learns the path.
func (n *Node) reservedHere(p peer.ID) bool {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	at, ok := n.reserved[p]
	if ok && time.Since(at) > relayReservationTTL {
		delete(n.reserved, p)
		return false
	}
	return ok
}

// announceDue: p was not announced within relayAnnounceEvery (a
// reservation request, refreshes included, costs the anchor one stream
// per admitted peer only that often). The record is pruned as it goes.
func (n *Node) announceDue(p peer.ID) bool {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	now := time.Now()
	if n.announced == nil {
		n.announced = map[peer.ID]time.Time{}
	}
	if at, ok := n.announced[p]; ok && now.Sub(at) < relayAnnounceEvery {
		return false
	}
	for q, at := range n.announced {
		if now.Sub(at) >= relayAnnounceEvery {
			delete(n.announced, q)
		}
	}
	n.announced[p] = now
	return true
}

// announceRelayed tells the other admitted peers that p is reachable
// through this anchor's relay.
func (n *Node) announceRelayed(p peer.ID) {
	pa := peerAddrs{ID: []byte(p), Addrs: [][]byte{discovery.Circuit(n.ID()).Bytes()}}
	for _, o := range n.adm.admittedPeers(p) {
		n.goOwned(func() { n.exchange(o, directoryMsg{Peers: []peerAddrs{pa}}, nil) })
	}
}

// AllowConnect: both ends admitted now (the destination holds a
// reservation, so it was), and the source holds at most
// RelayCircuitsPerSource circuits (this one included): the relay's own
// bound (RelayCircuits) counts a destination's circuits from every source
// together, so without this one colleague could take them all and cut a
// device behind NAT off from everyone else.
func (a relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dest peer.ID) bool {
	return a.n.isAdmitted(src) && a.n.isAdmitted(dest) && a.n.hopStreams(src) <= RelayCircuitsPerSource
}

// hopStreams counts p's open relay hop streams to us: each circuit of p
// keeps one open, and so does the request being decided.
func (n *Node) hopStreams(p peer.ID) int {
	count := 0
	for _, c := range n.host.Network().ConnsToPeer(p) {
		for _, s := range c.GetStreams() {
			if s.Protocol() == proto.ProtoIDv2Hop && s.Stat().Direction == network.DirInbound {
				count++
			}
		}
	}
	return count
}

// keepRelays is the device side, owned by the node: while the host is
// private (AutoNAT's verdict, or Config.ForcePrivate) it holds a
// reservation (client.Reserve) on up to relaysKept admitted anchors it is
// connected to, renews each before it expires, drops those whose anchor
// left or stopped being admitted, and advertises the relayed addresses
// (circuitAddrs, through the host's address factory). go-libp2p's
// autorelay does this for the internet, but it advertises relayed
// addresses only through relays with public addresses; a hospital
// network is private.
func (n *Node) keepRelays() {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		n.log.Warn("relay reservations off", "err", err)
		return
	}
	defer sub.Close()
	tick := time.NewTicker(relayCheck)
	defer tick.Stop()
	private := n.cfg.ForcePrivate
	held := map[peer.ID]relayHeld{}
	for {
		select {
		case <-n.ctx.Done():
			return
		case e := <-sub.Out():
			private = n.cfg.ForcePrivate || e.(event.EvtLocalReachabilityChanged).Reachability == network.ReachabilityPrivate
		case <-tick.C:
		}
		n.reserve(held, private)
	}
}

type relayHeld struct {
	expires time.Time
	addrs   []ma.Multiaddr // relayed addresses through this anchor
}

// reserve brings held up to date (see keepRelays) and publishes its
// addresses.
func (n *Node) reserve(held map[peer.ID]relayHeld, private bool) {
	now := time.Now()
	for p, r := range held {
		if !private || !n.HasRole(p, RoleAnchor) || now.After(r.expires) {
			delete(held, p)
		}
	}
	if private {
		for _, p := range n.host.Network().Peers() {
			r, ok := held[p]
			if (ok && r.expires.Sub(now) > relayRenew) || (!ok && len(held) >= relaysKept) || !n.HasRole(p, RoleAnchor) {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, relayTimeout)
			rsvp, err := client.Reserve(ctx, n.host, peer.AddrInfo{ID: p, Addrs: n.host.Peerstore().Addrs(p)})
			cancel()
			if err != nil {
				n.log.Debug("relay reservation refused", "anchor", p, "err", err)
				continue
			}
			r = relayHeld{expires: rsvp.Expiration}
			for _, a := range rsvp.Addrs {
				r.addrs = append(r.addrs, a.Encapsulate(circuit))
			}
			held[p] = r
			n.log.Debug("relay slot reserved", "anchor", p, "until", rsvp.Expiration)
		}
	}
	var addrs []ma.Multiaddr
	for _, r := range held {
		addrs = append(addrs, r.addrs...)
	}
	n.circuit.Store(&addrs)
}

// circuitAddrs adds the relayed addresses of the reservations held to the
// host's own (its address factory).
func (n *Node) circuitAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	if c := n.circuit.Load(); c != nil {
		return append(addrs, *c...)
	}
	return addrs
}

var circuit = ma.StringCast("/p2p-circuit")

// RoleAnchor is the certificate role of an always-on anchor (mesh uses the
// same name for "held").
const RoleAnchor = "anchor"
