package node

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	autonatpb "github.com/libp2p/go-libp2p/p2p/host/autonat/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/discovery"
)

// A malicious colleague (valid certificate, modified code) asks the
// anchor's relay for a reservation again and again. The relay accepts a
// refresh at any time, and AllowReserve runs announceRelayed on every
// request — refreshes, and requests the relay's constraints refuse next,
// included: each one makes the anchor open a directory stream to every
// other admitted peer (hundreds on an anchor), in a goroutine per peer,
// with no bound on the rate. One cheap request costs the anchor N streams
// and N peers a directory exchange and a dial decision. Announce a peer
// once per reservation it did not hold (or at most once per peer and
// interval), after the relay granted it — e.g. from the relay's
// reservation event rather than the ACL.
func TestRedteam8ReservationRefreshAmplified(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	anchor := startNode(t, c, c.enrol(t, "anchor", now, RoleAnchor), func(cfg *Config) { cfg.Relay = true })
	mallory := startNode(t, c, c.enrol(t, "mallory", now), bootstrap(anchor))
	var others []*Node
	for i := range 3 {
		others = append(others, startNode(t, c, c.enrol(t, fmt.Sprint("ward", i), now), bootstrap(anchor)))
	}
	eventually(t, 30*time.Second, "the anchor admits everyone", func() bool { return admittedCount(anchor) == 4 })
	for _, o := range others {
		eventually(t, 30*time.Second, "a colleague admits the anchor", func() bool { return o.isAdmitted(anchor.ID()) })
	}

	// Count the directory streams each colleague receives from the anchor
	// from now on.
	counts := make([]atomic.Int64, len(others))
	for i, o := range others {
		h := o.owned(o.gate(o.handleDirectory))
		o.host.SetStreamHandler(ProtoDirectory, func(s network.Stream) {
			if s.Conn().RemotePeer() == anchor.ID() {
				counts[i].Add(1)
			}
			h(s)
		})
	}

	const requests = 40
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ai := peer.AddrInfo{ID: anchor.ID(), Addrs: anchor.host.Addrs()}
	for i := range requests {
		if _, err := client.Reserve(ctx, mallory.host, ai); err != nil {
			t.Fatalf("reservation %d: %v", i, err)
		}
	}
	// An honest bound: a handful of announcements of one peer, whatever
	// the number of requests. Watch for 10 s whether the anchor exceeds it.
	const bound = 4
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		total := int64(0)
		for i := range counts {
			n := counts[i].Load()
			total += n
			if n > bound {
				t.Fatalf("%d reservation requests by one colleague made the anchor open %d directory streams to one other colleague (%d so far to %d colleagues)",
					requests, n, total, len(others))
			}
		}
		<-time.After(10 * time.Millisecond) // polling, as check.Eventually does
	}
}

// The resource manager (newResourceManager, on rcmgr's defaults) also
// limits connections per IP address: at most 8 at once from one IPv4
// address (/56 for IPv6), and 16 in a burst then one per 5 s; only
// loopback is exempt, so no test on 127.0.0.1 meets it. Two uses of the
// relay hit it:
//   - a relayed connection's remote address begins with the relay's, so
//     every colleague reaching a device behind NAT through anchor A
//     counts against A's IP at the device: with its own connection to A,
//     at most 7 colleagues reach it through A at once;
//   - the devices of a site behind one NAT share one IP at another site's
//     anchor (RelayReservations allows 1,024 reservations per IP for that
//     reason), but at most 8 of them can connect to it.
//
// Both silently cap "Several sites" at a handful of devices. Exempt relayed
// connections from the per-IP limits (rcmgr.WithLimitPerSubnet / a
// network prefix limit for the anchors, or OpenConnectionNoIP semantics),
// and raise the per-IP limit for admitted anchors' sites.
func TestRedteam8PerIPLimitCapsRelayedColleagues(t *testing.T) {
	rm, err := newResourceManager()
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	anchor := randomID(t)
	const colleagues = 16 // a ward's worth
	// At a device behind NAT: inbound relayed connections through anchor
	// 10.1.0.1, as the circuit transport's listener opens them.
	relayed := ma.StringCast("/ip4/10.1.0.1/tcp/4001/p2p/" + anchor.String() + "/p2p-circuit")
	for i := range colleagues {
		sc, err := rm.OpenConnection(network.DirInbound, true, relayed)
		if err != nil {
			t.Fatalf("relayed colleague %d through one anchor refused: %v", i+1, err)
		}
		defer sc.Done()
	}
	// At an anchor: devices of another site behind one NAT.
	for i := range colleagues {
		sc, err := rm.OpenConnection(network.DirInbound, true, ma.StringCast(fmt.Sprintf("/ip4/172.20.0.1/tcp/%d", 40000+i)))
		if err != nil {
			t.Fatalf("device %d of a site behind one NAT refused: %v", i+1, err)
		}
		defer sc.Done()
	}
}

// discovery.Policy is applied to the addresses peer exchange names, but
// the dialer then calls host.Connect, which dials every address the
// peerstore holds for the peer — including those the peer itself
// advertised over identify (up to 500 of them, any host, /dns*, relayed
// through any relay; identify drops only loopback ones on a LAN). A
// malicious colleague advertises such addresses while connected; once it
// is gone, each time a colleague names it (afterAdmission,
// announceRelayed) every device that tries it dials them: the third-party
// dial the policy exists to prevent ("never a host a third party named"),
// amplified by the number of devices. Here the colleague advertises a
// relayed address through a relay that is no admitted anchor, at a
// canary listener. Sanitise identify's addresses (a peerstore wrapper or
// an identify address filter applying the Policy) or dial learnt peers
// with their filtered addresses only (swarm.DialPeer on a fresh
// peerstore entry, or the gater's InterceptAddrDial applying the Policy).
func TestRedteam8IdentifyAddrsBypassDialPolicy(t *testing.T) {
	canary, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := canary.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			c.Close()
		}
	}()
	defer func() { canary.Close(); <-done }()
	evil := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s/p2p-circuit", canary.Addr().(*net.TCPAddr).Port, randomID(t)))

	c := newCA(t, "General Hospital")
	now := time.Now()
	victim := startNode(t, c, c.enrol(t, "ward", now))
	d := c.enrol(t, "mallory", now)
	priv, err := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
	if err != nil {
		t.Fatal(err)
	}
	mh, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.AddrsFactory(func(as []ma.Multiaddr) []ma.Multiaddr { return append(as, evil) }))
	if err != nil {
		t.Fatal(err)
	}
	mallory := startNode(t, c, d, func(cfg *Config) { cfg.Host = mh }, bootstrap(victim))
	eventually(t, 30*time.Second, "admitted both ways", func() bool {
		return victim.isAdmitted(mallory.ID()) && mallory.isAdmitted(victim.ID())
	})
	eventually(t, 10*time.Second, "identify gave the victim mallory's addresses", func() bool {
		return slices.ContainsFunc(victim.host.Peerstore().Addrs(mallory.ID()), evil.Equal)
	})
	var at ma.Multiaddr // mallory's real address
	for _, a := range mh.Addrs() {
		if !a.Equal(evil) {
			at = a
		}
	}
	mallory.Close()
	eventually(t, 10*time.Second, "mallory is gone", func() bool {
		return victim.host.Network().Connectedness(mallory.ID()) != network.Connected
	})
	// A colleague names mallory at its real address (peer exchange).
	victim.disc.Try(peer.AddrInfo{ID: mallory.ID(), Addrs: []ma.Multiaddr{at}}, discovery.Source{From: randomID(t), Loopback: true})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if hits.Load() > 0 {
			t.Fatalf("the victim dialled %s, an address only mallory named (over identify), which the dial policy refuses", evil)
		}
		<-time.After(10 * time.Millisecond) // polling, as check.Eventually does
	}
}

// The relay bounds circuits per peer (RelayCircuits, 16) — counted for the
// source and for the destination alike. One malicious colleague opens 16
// circuits to a device behind NAT (raw CONNECT requests; it need not even
// finish the secure handshake over them, the device's upgrader gives each
// 15 s) and every honest colleague is refused a circuit to that device
// (RESOURCE_LIMIT_EXCEEDED) for as long as it keeps them up. The bound
// meant for "an abusive colleague" is what lets it cut a colleague off
// (on a real network the device's per-IP limit, see above, lets it do so
// with 8). Bound circuits per (source, destination) pair (a couple; a
// relayed connection carries every protocol), so that no single source
// can take a destination's slots, and count a destination's slots per
// source.
func TestRedteam8OneColleagueTakesAllCircuitsToADevice(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	anchor := startNode(t, c, c.enrol(t, "anchor", now, RoleAnchor), func(cfg *Config) { cfg.Relay = true })
	hidden := startNode(t, c, c.enrol(t, "basement", now), bootstrap(anchor), func(cfg *Config) {
		cfg.NoListen, cfg.ForcePrivate = true, true
	})
	mallory := startNode(t, c, c.enrol(t, "mallory", now), bootstrap(anchor))
	eventually(t, 30*time.Second, "the hidden device holds a slot on the anchor", func() bool {
		_, ok := circuitAddr(hidden, anchor)
		return ok
	})
	eventually(t, 30*time.Second, "the anchor admits mallory", func() bool { return anchor.isAdmitted(mallory.ID()) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	granted := 0
	for range RelayCircuits {
		s, err := mallory.host.NewStream(ctx, anchor.ID(), proto.ProtoIDv2Hop)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		if err := util.NewDelimitedWriter(s).WriteMsg(&pbv2.HopMessage{
			Type: pbv2.HopMessage_CONNECT.Enum(), Peer: &pbv2.Peer{Id: []byte(hidden.ID())},
		}); err != nil {
			t.Fatal(err)
		}
		var resp pbv2.HopMessage
		if err := util.NewDelimitedReader(s, 4096).ReadMsg(&resp); err == nil && resp.GetStatus() == pbv2.Status_OK {
			granted++
		}
	}
	if granted > RelayCircuitsPerSource {
		t.Fatalf("one colleague holds %d circuits at once, bound %d", granted, RelayCircuitsPerSource)
	}
	// An honest colleague, admitted, connected to the anchor only.
	colleague := startNode(t, c, c.enrol(t, "ward", now), bootstrap(anchor), func(cfg *Config) { cfg.NoListen = true })
	eventually(t, 20*time.Second, "the anchor and the colleague admit each other", func() bool {
		return anchor.isAdmitted(colleague.ID()) && colleague.isAdmitted(anchor.ID())
	})
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if err := colleague.host.Connect(cctx, peer.AddrInfo{ID: hidden.ID(), Addrs: []ma.Multiaddr{discovery.Circuit(anchor.ID())}}); err != nil {
		t.Fatalf("while mallory holds %d circuits to the hidden device, a colleague cannot reach it: %v", RelayCircuits, err)
	}
}

// README ("Several sites") and Config.Relay say an anchor answers AutoNAT
// dial-back requests for admitted peers only, but libp2p.EnableNATService
// starts go-libp2p's AutoNAT v1 service with no admission check: any
// outsider that connects gets its request served (here E_DIAL_REFUSED,
// because it asks from loopback; from a public address the anchor dials
// it back). The impact is small — AutoNAT v1 dials back only the
// requester's observed IP, rate-limited — but the claim is wrong. (Also:
// the service refuses private addresses, and the client ignores them, so
// on RFC 1918 networks AutoNAT never finds a device private: devices
// behind NAT between private sites need run --private.) Wrap the service
// (or register it only for admitted peers: a stream handler that
// awaits admission, then hands over), or correct the claim.
func TestRedteam8AutoNATAnswersOutsiders(t *testing.T) {
	c := newCA(t, "General Hospital")
	anchor := startNode(t, c, c.enrol(t, "anchor", time.Now(), RoleAnchor), func(cfg *Config) { cfg.Relay = true })
	out, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := out.Connect(ctx, peer.AddrInfo{ID: anchor.ID(), Addrs: anchor.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := out.NewStream(ctx, anchor.ID(), autonat.AutoNATProto)
	if err != nil {
		return // the anchor runs no AutoNAT service (a hospital network is private: devices say so, run --private)
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	var addrs [][]byte
	for _, a := range out.Addrs() {
		addrs = append(addrs, a.Bytes())
	}
	req := &autonatpb.Message{Type: autonatpb.Message_DIAL.Enum(), Dial: &autonatpb.Message_Dial{
		Peer: &autonatpb.Message_PeerInfo{Id: []byte(out.ID()), Addrs: addrs},
	}}
	if err := pbio.NewDelimitedWriter(s).WriteMsg(req); err != nil {
		t.Fatal(err)
	}
	var res autonatpb.Message
	if err := pbio.NewDelimitedReader(s, 4096).ReadMsg(&res); err == nil {
		t.Fatalf("the anchor answered an outsider's AutoNAT request: %v %q", res.GetDialResponse().GetStatus(), res.GetDialResponse().GetStatusText())
	}
}
