package mesh_test

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// TestSiteLinkState: site A's anchor lists site B's as a site peer; with
// the anti-entropy period at a minute, the two anchors sync as soon as the
// link is admitted, and the link reports it (up, bytes received, last
// sync). An anchor with no site peers reports none. (The crossing of
// messages through the link alone is TestSiteLinksInNamespaces in
// cmd/medmesh: on loopback, devices of both "sites" meet directly.)
func TestSiteLinkState(t *testing.T) {
	c := testnet.NewCA(t)
	slow := device.WithTimers(time.Minute, 0)
	y := testnet.Start(t, c, c.Enrol(t, "anchor-b", mesh.RoleAnchor), device.WithAnchor(0, 0), slow)
	x := testnet.Start(t, c, c.Enrol(t, "anchor-a", mesh.RoleAnchor), device.WithAnchor(0, 0), slow,
		device.WithSitePeers(64<<10, peer.AddrInfo{ID: y.ID, Addrs: y.N.Host().Addrs()}))
	testnet.Eventually(t, 20*time.Second, "the link is up and synced", func() bool {
		links := x.N.SiteLinks()
		return len(links) == 1 && links[0].Up && links[0].ReceivedBytes > 0 && !links[0].LastSync.IsZero()
	})
	if got := y.N.SiteLinks(); len(got) != 0 {
		t.Fatalf("an anchor with no site peers reports links: %+v", got)
	}
	y.Stop()
	testnet.Eventually(t, 20*time.Second, "the link shows down", func() bool {
		links := x.N.SiteLinks()
		return len(links) == 1 && !links[0].Up
	})
}
