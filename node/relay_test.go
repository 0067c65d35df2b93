package node

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
)

// circuitAddr is a's address for c through the relay r, if c advertises one.
func circuitAddr(c *Node, r *Node) (ma.Multiaddr, bool) {
	for _, a := range c.host.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err != nil {
			continue
		}
		if id, err := a.ValueForProtocol(ma.P_P2P); err == nil && id == r.ID().String() {
			return a, true
		}
	}
	return nil, false
}

// A device no one can reach directly (it dials out only) reserves a slot
// on the anchor it is connected to; a colleague who cannot be reached
// either reaches it through the
// anchor's relay, both admit each other over the relayed connection, and
// it carries more than the default relay limit (128 KiB) — relayed
// connections are not "limited" for admitted peers. An outsider can
// neither reserve nor be relayed.
func TestRelayThroughAnchor(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	logs := logOnFailure(t)
	anchor := startNode(t, c, c.enrol(t, "anchor", now, RoleAnchor), logs("anchor"), func(cfg *Config) { cfg.Relay = true })
	hidden := startNode(t, c, c.enrol(t, "basement", now), bootstrap(anchor), logs("hidden"), func(cfg *Config) {
		cfg.NoListen, cfg.ForcePrivate = true, true
	})
	// Neither device listens: they can reach each other only through the
	// anchor (the colleague at another site, behind its own NAT).
	colleague := startNode(t, c, c.enrol(t, "ward", now), bootstrap(anchor), logs("colleague"), func(cfg *Config) { cfg.NoListen = true })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("colleague: connectedness to hidden %v, blocked %v, dialer %+v; hidden: blocked %v; anchor: reserved %v",
				colleague.host.Network().Connectedness(hidden.ID()), colleague.isBlocked(hidden.ID()), colleague.disc.Stats(),
				hidden.isBlocked(colleague.ID()), anchor.reservedHere(hidden.ID()))
		}
	})

	var via ma.Multiaddr
	eventually(t, 30*time.Second, "the hidden device advertises a relayed address through the anchor", func() bool {
		a, ok := circuitAddr(hidden, anchor)
		via = a
		return ok
	})
	const big = 1 << 20
	hidden.host.SetStreamHandler("/medmesh/test-echo/1", func(s network.Stream) {
		defer s.Close()
		io.Copy(s, io.LimitReader(s, big))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The anchor names the hidden device to the colleague at its relayed
	// address; the colleague dials it there by itself.
	eventually(t, 30*time.Second, "admitted both ways over the relayed connection", func() bool {
		return colleague.isAdmitted(hidden.ID()) && hidden.isAdmitted(colleague.ID())
	})
	for _, conn := range colleague.host.Network().ConnsToPeer(hidden.ID()) {
		if _, err := conn.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil {
			t.Fatalf("a direct connection to a device that does not listen: %s", conn.RemoteMultiaddr())
		}
		if conn.Stat().Limited {
			t.Fatal("the relayed connection is limited")
		}
	}
	s, err := colleague.host.NewStream(ctx, hidden.ID(), "/medmesh/test-echo/1")
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("relayed "), big/8)
	go func() { s.Write(payload); s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo over the relay: %d of %d bytes, %v", len(got), len(payload), err)
	}

	// An outsider: a plain libp2p host with no certificate of the trust.
	out, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Connect(ctx, peer.AddrInfo{ID: anchor.ID(), Addrs: anchor.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, out, peer.AddrInfo{ID: anchor.ID(), Addrs: anchor.host.Addrs()}); err == nil {
		t.Fatal("an outsider reserved a slot on the anchor's relay")
	}
	out.Peerstore().AddAddr(hidden.ID(), via.Decapsulate(ma.StringCast("/p2p/"+hidden.ID().String())), time.Hour)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := out.Connect(cctx, peer.AddrInfo{ID: hidden.ID()}); err == nil {
		t.Fatal("an outsider was relayed to a hidden device")
	}
}
