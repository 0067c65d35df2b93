package discovery

import (
	"net/netip"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestPolicy(t *testing.T) {
	public := netip.MustParseAddr("81.2.69.160")
	remote := Policy{Public: []netip.Addr{public}}
	local := Policy{Loopback: true}
	lan := Policy{LinkLocal: true}
	const anchor, stranger = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf", "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"
	viaAnchor := Policy{Relay: func(r peer.ID) bool { return r.String() == anchor }}
	cases := []struct {
		addr string
		pol  Policy
		want bool
	}{
		{"/ip4/10.1.2.3/tcp/4001", remote, true},
		{"/ip4/172.16.0.9/udp/4001/quic-v1", remote, true},
		{"/ip4/192.168.1.20/tcp/4001", remote, true},
		{"/ip4/100.64.0.7/tcp/4242", remote, true},
		{"/ip6/fd00::1/tcp/4001", remote, true},
		{"/ip6/::ffff:10.0.0.1/tcp/4001", remote, true},
		{"/ip4/81.2.69.160/tcp/4001", remote, true},       // a configured public host
		{"/ip4/81.2.69.161/tcp/4001", remote, false},      // a public host not configured
		{"/ip4/8.8.8.8/tcp/53", remote, false},            // the internet
		{"/ip6/2606:4700::1111/tcp/443", remote, false},   // the internet, IPv6
		{"/ip4/127.0.0.1/tcp/4001", remote, false},        // loopback from a remote peer
		{"/ip4/127.0.0.1/tcp/4001", local, true},          // loopback from a peer on this machine
		{"/ip6/::1/udp/4001/quic-v1", local, true},        //
		{"/ip6/::ffff:127.0.0.1/tcp/4001", remote, false}, // mapped loopback
		{"/ip4/169.254.3.4/tcp/4001", remote, false},      // link-local from a remote peer
		{"/ip4/169.254.3.4/tcp/4001", lan, true},          // link-local found on the link (mDNS)
		{"/ip6/fe80::1/tcp/4001", remote, false},
		{"/ip4/224.0.0.1/tcp/4001", local, false}, // multicast
		{"/ip4/239.255.255.250/udp/1900/quic-v1", lan, false},
		{"/ip6/ff02::1/tcp/4001", lan, false},
		{"/ip4/255.255.255.255/tcp/4001", lan, false}, // broadcast
		{"/ip4/0.0.0.0/tcp/4001", local, false},       // unspecified
		{"/ip6/::/tcp/4001", local, false},
		{"/ip4/0.1.2.3/tcp/4001", local, false},    // "this network"
		{"/ip4/240.0.0.1/tcp/4001", remote, false}, // reserved
		{"/ip4/10.0.0.1/tcp/0", remote, false},     // no port
		{"/ip4/10.0.0.1/udp/4001", remote, false},  // bare UDP: not a transport we use
		{"/ip4/10.0.0.1/udp/4001/quic", remote, false},
		{"/ip4/10.0.0.1/tcp/4001/ws", remote, false},
		{"/ip4/10.0.0.1/udp/4001/quic-v1/webtransport", remote, false},
		{"/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf", remote, false},
		{"/ip4/10.0.0.1/tcp/4001/p2p-circuit", remote, false},
		{"/p2p/" + anchor + "/p2p-circuit", viaAnchor, true},                        // through an admitted anchor we hold a connection to
		{"/p2p/" + anchor + "/p2p-circuit", remote, false},                          // no relays allowed
		{"/p2p/" + stranger + "/p2p-circuit", viaAnchor, false},                     // through anyone else
		{"/ip4/10.0.0.1/tcp/4001/p2p/" + anchor + "/p2p-circuit", viaAnchor, false}, // a host a third party named
		{"/p2p/" + anchor + "/p2p-circuit/p2p/" + stranger, viaAnchor, false},
		{"/p2p/" + anchor, viaAnchor, false},
		{"/dns4/example.com/tcp/4001", local, false}, // a peer must not make us resolve names
		{"/dns/localhost/tcp/4001", local, false},
		{"/dnsaddr/example.com", local, false},
		{"/ip6zone/eth0/ip6/fe80::1/tcp/4001", lan, false},
		{"/unix/tmp/socket", local, false},
		{"/ip4/10.0.0.1", remote, false},
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			a, err := ma.NewMultiaddr(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.pol.Allows(a); got != tc.want {
				t.Fatalf("Allows(%s) with %+v = %v, want %v", tc.addr, tc.pol, got, tc.want)
			}
		})
	}
}

func TestPolicyFilter(t *testing.T) {
	var addrs []ma.Multiaddr
	for _, s := range []string{
		"/ip4/8.8.8.8/tcp/1", "/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1",
		"/dns4/example.com/tcp/1", "/ip4/10.0.0.3/tcp/1", "/ip4/10.0.0.4/tcp/1", "/ip4/10.0.0.5/tcp/1",
	} {
		addrs = append(addrs, ma.StringCast(s))
	}
	got := Policy{}.Filter(addrs, 3)
	want := []string{"/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1"}
	if len(got) != len(want) {
		t.Fatalf("Filter = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("Filter = %v, want %v", got, want)
		}
	}
}

func TestPublicAddrs(t *testing.T) {
	var addrs []ma.Multiaddr
	for _, s := range []string{
		"/ip4/0.0.0.0/tcp/0", "/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1", "/ip4/81.2.69.160/tcp/4001",
		"/ip4/81.2.69.160/udp/4001/quic-v1", "/dns4/anchor.example/tcp/4001", "/ip6/2a00:1450::1/tcp/1",
	} {
		addrs = append(addrs, ma.StringCast(s))
	}
	got := PublicAddrs(addrs)
	if len(got) != 2 || got[0] != netip.MustParseAddr("81.2.69.160") || got[1] != netip.MustParseAddr("2a00:1450::1") {
		t.Fatalf("PublicAddrs = %v", got)
	}
}

// FuzzPolicy: any bytes a peer sends as an address are judged without a
// panic, and what is allowed has the one shape the policy dials.
func FuzzPolicy(f *testing.F) {
	for _, s := range []string{"/ip4/10.0.0.1/tcp/4001", "/ip6/::1/udp/1/quic-v1", "/dns4/example.com/tcp/1", "/ip4/8.8.8.8/tcp/53"} {
		f.Add(ma.StringCast(s).Bytes())
	}
	all := Policy{Loopback: true, LinkLocal: true, Public: []netip.Addr{netip.MustParseAddr("81.2.69.160")}}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return
		}
		wide := all.Allows(a)
		if (Policy{}).Allows(a) && !wide {
			t.Fatalf("a narrower policy allows %s", a)
		}
		if n := len(a); wide && n != 2 && n != 3 {
			t.Fatalf("allowed %s of %d parts", a, n)
		}
	})
}
