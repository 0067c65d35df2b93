package mesh_test

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// TestRedteam10SiteBudgetExceededByOffers: --site-budget is "bytes per
// second of sync sent to each site peer", but only envelope frames are
// paced. Every new envelope the anchor takes in (a colleague posting one
// message every KickDelay is enough) starts a sync round with each site
// peer, and each round opens with an unpaced offer listing every tag the
// anchor holds or carries with its fingerprint. An anchor of a trust with
// a few thousand conversations sends many times its budget across the WAN
// while nothing at all needs to cross.
func TestRedteam10SiteBudgetExceededByOffers(t *testing.T) {
	const budget = 4 << 10 // bytes per second
	c := testnet.NewCA(t)
	slow := device.WithTimers(time.Hour, 0)
	y := testnet.Start(t, c, c.Enrol(t, "anchor-b", mesh.RoleAnchor), device.WithAnchor(0, 0), slow)
	x := testnet.Start(t, c, c.Enrol(t, "anchor-a", mesh.RoleAnchor), device.WithAnchor(0, 0), slow,
		device.WithSitePeers(budget, peer.AddrInfo{ID: y.ID, Addrs: y.N.Host().Addrs()}))
	testnet.Eventually(t, 20*time.Second, "the link is up and synced", func() bool {
		links := x.N.SiteLinks()
		return len(links) == 1 && links[0].Up && !links[0].LastSync.IsZero()
	})
	x.M.AddCarriers(3000) // conversations of the trust the anchor keeps
	time.Sleep(time.Second)
	before, start := x.M.SyncBytes(), time.Now()
	const window = 10 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		x.M.KickSitesRedteam10() // a colleague's new message, kept by the anchor
	}
	// The budget over the time that passed between the two readings (a
	// loaded machine stretches the window), and one second's burst.
	sent, took := x.M.SyncBytes()-before, time.Since(start)
	if limit := int64(float64(budget) * (took.Seconds() + 1)); sent > limit {
		t.Fatalf("anchor sent %d bytes of sync to its site peer in %v, budget %d B/s (at most %d): offers are not paced", sent, took, budget, limit)
	}
}
