package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/check"
)

func TestParseSitePeers(t *testing.T) {
	const id = "12D3KooWGRUVh2WPBiVYJ2yGXpECC5aaeYfrCY9VDrLXHfSr3uZb"
	good := "/ip4/10.0.0.1/tcp/4001/p2p/" + id
	for _, tc := range []struct {
		name, in string
		peers    int
		errLine  int // 0: no error
	}{
		{"one", good + "\n", 1, 0},
		{"comments and blanks", "# site B\n\n  " + good + "  # anchor\n\n", 1, 0},
		{"two addresses of one peer", good + "\n/ip4/10.0.0.2/udp/4001/quic-v1/p2p/" + id + "\n", 1, 0},
		{"empty", "# nothing\n", 0, 0},
		{"not a multiaddr", "# x\nanchor.site-b:4001\n", 0, 2},
		{"no peer ID", good + "\n\n/ip4/10.0.0.3/tcp/4001\n", 0, 3},
		{"peer ID only", "/p2p/" + id + "\n", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers, err := ParseSitePeers(strings.NewReader(tc.in))
			if tc.errLine != 0 {
				if !errors.Is(err, ErrSitePeer) || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tc.errLine)) {
					t.Fatalf("want an error naming line %d, got %v", tc.errLine, err)
				}
				return
			}
			if err != nil || len(peers) != tc.peers {
				t.Fatalf("got %d peers, %v; want %d", len(peers), err, tc.peers)
			}
		})
	}
}

// TestPacerUrgentFirst: with the budget spent, an urgent frame queued
// after routine ones goes first, and the budget holds over time.
func TestPacerUrgentFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(1000, 1000, time.Now())
		ctx := context.Background()
		if err := p.wait(ctx, 1000, false); err != nil { // the burst
			t.Fatal(err)
		}
		start := time.Now()
		done := make(chan string, 4)
		for i := range 3 {
			go func() {
				p.wait(ctx, 500, false)
				done <- fmt.Sprint("routine", i)
			}()
			synctest.Wait() // queued, in this order
		}
		go func() {
			p.wait(ctx, 500, true)
			done <- "urgent"
		}()
		synctest.Wait()
		if q, _ := p.stats(); q != 2000 {
			t.Fatalf("queued %d bytes, want 2000", q)
		}
		var order []string
		for range 4 {
			order = append(order, <-done)
		}
		if order[0] != "urgent" || order[1] != "routine0" || order[3] != "routine2" {
			t.Fatalf("order %v: want urgent first, then routine in arrival order", order)
		}
		// 3,000 bytes at 1,000 B/s after the first 1,000 of burst: 2 s.
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("2,000 bytes over budget took %v, want 2s", d)
		}
		if q, s := p.stats(); q != 0 || s != 3000 {
			t.Fatalf("queued %d, sent %d; want 0, 3000", q, s)
		}
		// A waiter whose context ends leaves the queue.
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := p.wait(cctx, 5000, false); err == nil {
			t.Fatal("a wait past its deadline succeeded")
		}
		if q, _ := p.stats(); q != 0 {
			t.Fatalf("a cancelled waiter left %d bytes queued", q)
		}
	})
}

// freePort is a loopback TCP port free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSiteLinkKept: an anchor keeps its site peer connected (protected in
// the connection manager), shows the link down when the peer goes and up
// again once it is back (re-dialled with backoff); a listed peer that is
// no colleague is dialled but never admitted nor served. Close leaves no
// goroutine behind.
func TestSiteLinkKept(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	c := newCA(t, "General Hospital")
	now := time.Now()
	dB := c.enrol(t, "anchor-b", now, RoleAnchor)
	port := freePort(t)
	listenB := func(cfg *Config) { cfg.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)} }
	b := startNode(t, c, dB, listenB)

	// An outsider listed as a site peer: a plain libp2p host.
	out, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var dialled atomic.Bool
	out.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		dialled.Store(true)
	}})
	sites := []peer.AddrInfo{
		{ID: b.ID(), Addrs: []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))}},
		{ID: out.ID(), Addrs: out.Addrs()},
	}
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) { cfg.SitePeers = sites })
	up := func(n *Node, id peer.ID) bool {
		for _, l := range n.SiteLinks() {
			if l.Peer == id.String() {
				return l.Up
			}
		}
		t.Fatalf("no link to %s", id)
		return false
	}
	check.Eventually(t, 20*time.Second, "the site link comes up and its peer is admitted", func() bool {
		return up(a, b.ID()) && a.isAdmitted(b.ID())
	})
	if !a.host.ConnManager().IsProtected(b.ID(), "medmesh-site") {
		t.Fatal("the site peer's connection is not protected")
	}
	if got := b.SiteLinks(); len(got) != 0 {
		t.Fatalf("a node with no site peers reports links: %+v", got)
	}

	// The outsider was dialled, but is neither admitted nor served.
	check.Eventually(t, 20*time.Second, "the outsider is dialled", func() bool {
		return dialled.Load()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out.Peerstore().AddAddrs(a.ID(), a.host.Addrs(), time.Hour)
	pctx, pcancel := context.WithCancel(ctx)
	results := ping.Ping(pctx, out, a.ID())
	r := <-results
	pcancel()
	for range results {
	}
	if r.Error == nil {
		t.Fatal("an outsider listed as a site peer was answered")
	}
	if a.isAdmitted(out.ID()) {
		t.Fatal("an outsider listed as a site peer was admitted")
	}
	if err := a.PaceSite(ctx, b.ID(), 100, false); err != nil {
		t.Fatal(err)
	}

	// Site B goes away: down. It comes back at the same address: up.
	b.Close()
	check.Eventually(t, 20*time.Second, "the link shows down", func() bool { return !up(a, b.ID()) })
	b2 := startNode(t, c, dB, listenB)
	check.Eventually(t, 30*time.Second, "the link is re-dialled and up", func() bool {
		return up(a, b2.ID()) && a.isAdmitted(b2.ID())
	})
	for _, l := range a.SiteLinks() {
		if l.Peer == b.ID().String() && l.SentBytes != 100 {
			t.Fatalf("sent %d bytes on the link, want 100", l.SentBytes)
		}
	}
	a.Close()
	b2.Close()
	out.Close()
	goleak.VerifyNone(t, check.LeakOptions(leaks)...)
}

// TestSitePeerGossipFilter: with a site peer only the trust topic is
// gossiped; other admitted peers get every topic; a peer not admitted
// none, listed or not.
func TestSitePeerGossipFilter(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := startNode(t, c, c.enrol(t, "anchor-b", now, RoleAnchor))
	d := startNode(t, c, c.enrol(t, "ward", now))
	stranger := c.enrol(t, "stranger", now).key.PeerID()
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), bootstrap(d), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: b.host.Addrs()}, {ID: stranger, Addrs: b.host.Addrs()}}
	})
	check.Eventually(t, 20*time.Second, "both admitted", func() bool { return a.isAdmitted(b.ID()) && a.isAdmitted(d.ID()) })
	conv := "/medmesh/conv/00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		id    peer.ID
		topic string
		want  bool
	}{
		{b.ID(), TrustTopic, true},
		{b.ID(), conv, false},
		{b.ID(), RotaTopic, false},
		{d.ID(), conv, true},
		{d.ID(), TrustTopic, true},
		{stranger, TrustTopic, false},
	} {
		if got := a.gossipsWith(tc.id, tc.topic); got != tc.want {
			t.Errorf("gossip with %s on %s: %v, want %v", tc.id, tc.topic, got, tc.want)
		}
	}
}

// TestSitePeerSubscriptionsFiltered: a site peer's subscriptions to any
// topic but the trust topic are dropped, so gossipsub never counts it as
// a subscriber — its flood of a message this node publishes itself (an
// anchor republishing what crossed in sync) would otherwise cross the
// link, past the peer filter and the budget. Other peers' are kept.
func TestSitePeerSubscriptionsFiltered(t *testing.T) {
	c := newCA(t, "General Hospital")
	now := time.Now()
	b := startNode(t, c, c.enrol(t, "anchor-b", now, RoleAnchor))
	d := startNode(t, c, c.enrol(t, "ward", now))
	a := startNode(t, c, c.enrol(t, "anchor-a", now, RoleAnchor), func(cfg *Config) {
		cfg.SitePeers = []peer.AddrInfo{{ID: b.ID(), Addrs: b.host.Addrs()}}
	})
	conv := "/medmesh/conv/00112233445566778899aabbccddeeff"
	sub := func(topic string) *pb.RPC_SubOpts {
		on := true
		return &pb.RPC_SubOpts{Subscribe: &on, Topicid: &topic}
	}
	topics := func(subs []*pb.RPC_SubOpts) []string {
		var out []string
		for _, s := range subs {
			out = append(out, s.GetTopicid())
		}
		return out
	}
	for _, tc := range []struct {
		from peer.ID
		want []string
	}{
		{b.ID(), []string{TrustTopic}},
		{d.ID(), []string{TrustTopic, conv, RotaTopic}},
	} {
		got, err := siteSubs{a}.FilterIncomingSubscriptions(tc.from, []*pb.RPC_SubOpts{sub(TrustTopic), sub(conv), sub(RotaTopic)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(topics(got), tc.want) {
			t.Errorf("subscriptions kept from %s: %v, want %v", tc.from, topics(got), tc.want)
		}
	}
}

// FuzzParseSitePeers: any file parses or fails with an error naming a
// line; every peer parsed has an ID and an address.
func FuzzParseSitePeers(f *testing.F) {
	f.Add([]byte("# site B\n/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWGRUVh2WPBiVYJ2yGXpECC5aaeYfrCY9VDrLXHfSr3uZb\n"))
	f.Add([]byte("/ip4/10.0.0.1/tcp/4001\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, err := ParseSitePeers(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, p := range peers {
			if p.ID == "" || len(p.Addrs) == 0 {
				t.Fatalf("a peer without ID or address: %+v", p)
			}
		}
	})
}
