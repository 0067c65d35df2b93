package discovery

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Policy says which addresses of a peer that others told us about (peer
// exchange, mDNS) this node may dial. Such addresses are claims by a third
// party: dialling them costs a TCP connect or a QUIC handshake to whatever
// they name before Noise can refuse a wrong key, so a hostile colleague or
// a LAN neighbour could otherwise aim our dials at any host. Allows is a
// pure function of the policy and the address.
//
// An address is dialled only if it is, exactly,
//
//	/ip4|ip6/ADDR/tcp/PORT   or   /ip4|ip6/ADDR/udp/PORT/quic-v1
//
// (the transports a node listens on; no /dns* — a peer must not make us
// resolve names —, no relay, websocket or /p2p part: the caller strips and
// checks the peer ID), PORT is not 0, and ADDR is
//   - private (10/8, 172.16/12, 192.168/16, 100.64/10 shared, fc00::/7),
//   - loopback only when Loopback is set (the address came from a peer on
//     this machine),
//   - link-local only when LinkLocal is set (it came from the local link:
//     mDNS),
//   - public only when it is one of Public (the bootstrap and listen
//     addresses this node was configured with on a public network),
//
// and never unspecified, multicast, broadcast, "this network" (0/8),
// reserved (240/4) or documentation ranges. IPv4-mapped IPv6 addresses are
// judged as IPv4.
//
// A relayed address is dialled only as exactly /p2p/R/p2p-circuit, and
// only when Relay(R) holds (the node: R is an admitted anchor it is
// connected to): the dial goes over the connection to R this node already
// has, never to a host a third party named.
type Policy struct {
	Loopback  bool
	LinkLocal bool
	Public    []netip.Addr
	Relay     func(peer.ID) bool
}

// Circuit is the relayed address through relay r, as the policy allows it.
func Circuit(r peer.ID) ma.Multiaddr {
	return ma.StringCast("/p2p/" + r.String() + "/p2p-circuit")
}

// relayOf is the relay R of a, if a is exactly /p2p/R/p2p-circuit.
func relayOf(a ma.Multiaddr) (peer.ID, bool) {
	if len(a) != 2 || a[0].Code() != ma.P_P2P || a[1].Code() != ma.P_CIRCUIT {
		return "", false
	}
	r, err := peer.IDFromBytes(a[0].RawValue())
	return r, err == nil
}

var (
	privatePrefixes = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"), // shared (carrier-grade NAT), used by some sites
		netip.MustParsePrefix("fc00::/7"),
	}
	neverPrefixes = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("240.0.0.0/4"), // reserved, and 255.255.255.255
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("2001:db8::/32"),
	}
)

// Allows reports whether a may be dialled under p.
func (p Policy) Allows(a ma.Multiaddr) bool {
	if r, ok := relayOf(a); ok {
		return p.Relay != nil && p.Relay(r)
	}
	ip, ok := dialShape(a)
	if !ok {
		return false
	}
	switch {
	case !ip.IsValid(), ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast(),
		slices.ContainsFunc(neverPrefixes, func(n netip.Prefix) bool { return n.Contains(ip) }):
		return false
	case ip.IsLoopback():
		return p.Loopback
	case ip.IsLinkLocalUnicast():
		return p.LinkLocal
	case slices.ContainsFunc(privatePrefixes, func(n netip.Prefix) bool { return n.Contains(ip) }):
		return true
	}
	return slices.Contains(p.Public, ip)
}

// Filter returns the addresses of addrs p allows, each once, at most max of
// them, in the order given.
func (p Policy) Filter(addrs []ma.Multiaddr, max int) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if len(out) == max {
			break
		}
		if p.Allows(a) && !slices.ContainsFunc(out, a.Equal) {
			out = append(out, a)
		}
	}
	return out
}

// dialShape checks that a is an IP address, then TCP, or UDP and QUIC v1,
// with a non-zero port and nothing after; it returns the IP.
func dialShape(a ma.Multiaddr) (netip.Addr, bool) {
	if len(a) < 2 {
		return netip.Addr{}, false
	}
	var ip netip.Addr
	switch a[0].Code() {
	case ma.P_IP4, ma.P_IP6:
		var ok bool
		if ip, ok = netip.AddrFromSlice(a[0].RawValue()); !ok {
			return netip.Addr{}, false
		}
		ip = ip.Unmap()
	default:
		return netip.Addr{}, false
	}
	port := a[1].RawValue()
	if len(port) != 2 || binary.BigEndian.Uint16(port) == 0 {
		return netip.Addr{}, false
	}
	switch {
	case a[1].Code() == ma.P_TCP && len(a) == 2:
		return ip, true
	case a[1].Code() == ma.P_UDP && len(a) == 3 && a[2].Code() == ma.P_QUIC_V1:
		return ip, true
	}
	return netip.Addr{}, false
}

// PublicAddrs lists the public IPs among addrs (bootstrap and listen
// addresses a node was configured with), for Policy.Public: a node set up
// on a public network may dial those hosts when colleagues name them.
func PublicAddrs(addrs []ma.Multiaddr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if len(a) == 0 || (a[0].Code() != ma.P_IP4 && a[0].Code() != ma.P_IP6) {
			continue
		}
		ip, ok := netip.AddrFromSlice(a[0].RawValue())
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() || ip.IsPrivate() ||
			slices.ContainsFunc(privatePrefixes, func(n netip.Prefix) bool { return n.Contains(ip) }) ||
			slices.ContainsFunc(neverPrefixes, func(n netip.Prefix) bool { return n.Contains(ip) }) {
			continue
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}
