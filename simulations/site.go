package simulations

import (
	"context"
	"fmt"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/node"
)

// The full engine's bridges are site anchors, as `medmesh run --anchor
// --site-peers FILE --site-budget N` makes them: each lists every other
// bridge as a site peer, with the scenario's link bandwidth as the budget.
// The engine makes and cuts the WAN's mocknet links only; the bridges'
// site links dial, probe, notice a cut and redial by themselves (node's
// sites.go), and what crosses, crosses in their paced sync (mesh's
// sites.go), never in conversation gossip.
//
// The site links' timers shrink by the scale like the mesh's, down to a
// floor of wall time each: a probe's silence on a machine running other
// work must not take a link down that is up (with a 200 ms floor, under
// the race detector on a busy machine, the link flapped every few
// minutes of scenario time, and each flap cut the sync sessions on it).
// The probe timeout's floor is the one that shows: at scale 480 a cut is
// seen about 16 minutes of scenario time after it, not 5 s (the WAN
// carries nothing meanwhile either way). The frame timeout (a minute:
// what a stalled link costs) is not scaled.

// SiteLinkChange is a bridge's site link going up or down (full engine),
// at scenario time At.
type SiteLinkChange struct {
	At     float64
	Bridge string
	Up     bool
}

// Floors of the scaled site-link timers, in wall time.
const (
	siteProbeFloor = 2 * time.Second
	siteEveryFloor = 100 * time.Millisecond
	siteTickFloor  = 5 * time.Millisecond
)

// deviceAddr is device i's address on the mocknet.
func deviceAddr(i int) ma.Multiaddr {
	return ma.StringCast(fmt.Sprintf("/ip4/100.64.%d.%d/tcp/4242", i/250, i%250+1))
}

// bridgeKeys makes the bridges' keys ahead of their devices (each lists
// the others as site peers) and returns them by device, with the bridges'
// peer IDs.
func (f *full) bridgeKeys() ([]*identity.DeviceKey, map[peer.ID]int, error) {
	keys := make([]*identity.DeviceKey, len(f.w.Devices))
	bridges := map[peer.ID]int{}
	for i, d := range f.w.Devices {
		if !d.Bridge {
			continue
		}
		k, err := identity.GenerateDeviceKey()
		if err != nil {
			return nil, nil, err
		}
		keys[i], bridges[k.PeerID()] = k, i
	}
	if len(bridges) < 2 {
		return keys, nil, nil
	}
	return keys, bridges, nil
}

// tracer counts device i's gossip RPC bytes, and a bridge's conversation
// gossip to the other bridges.
func (f *full) tracer(i int, bridges map[peer.ID]int) pubsub.RawTracer {
	t := tracer{n: &f.gossp, msg: &f.wanGossip}
	if bridges != nil && f.w.Devices[i].Bridge {
		t.wan = func(to peer.ID) bool { _, ok := bridges[to]; return ok }
	}
	return t
}

// siteOptions make bridge i a site anchor linked to the other bridges.
func (f *full) siteOptions(i int, bridges map[peer.ID]int) []device.Option {
	if bridges == nil {
		return nil
	}
	var peers []peer.AddrInfo
	for id, j := range bridges {
		if j != i {
			peers = append(peers, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{deviceAddr(j)}})
		}
	}
	budget := int64(f.w.S.LinkBytesPerSecond() * f.opt.Scale)
	// A sync session's bound (2 min) shrinks too, to a floor of 5 s wall:
	// a mocknet stream ignores deadlines, and one that a close left half
	// made (the mock adds a stream opened in the instant its connection
	// closes to the closed one, never reset) would otherwise hold the
	// conversation on the link (mesh busyTag) for 2 wall minutes — under
	// the race detector, the rest of the run after a cut.
	session := max(5*time.Second, time.Duration(float64(2*time.Minute)/f.opt.Scale))
	return []device.Option{device.WithSitePeers(budget, peers...), device.WithSiteTiming(f.siteTiming()), device.WithSessionTimeout(session)}
}

// siteTiming is the product's site-link timing on the compressed clock.
func (f *full) siteTiming() node.SiteTiming {
	sc := func(d, floor time.Duration) time.Duration {
		return max(floor, time.Duration(float64(d)/f.opt.Scale))
	}
	return node.SiteTiming{
		Check:         sc(time.Second, siteTickFloor),
		ProbeEvery:    sc(5*time.Second, siteEveryFloor),
		ProbeTimeout:  sc(5*time.Second, siteProbeFloor),
		BackoffMin:    sc(time.Second, time.Millisecond),
		BackoffMax:    sc(time.Minute, siteTickFloor),
		FirstDialWait: sc(3*time.Second, time.Millisecond),
		DirEvery:      sc(5*time.Second, siteTickFloor),
		Burst:         sc(time.Second, time.Millisecond),
		// DialTimeout: the product's (a dial to a cut WAN fails at once).
	}
}

// sited reports whether the bridges run site links (two or more bridges).
func (f *full) sited() bool {
	n := 0
	for _, d := range f.w.Devices {
		if d.Bridge {
			n++
		}
	}
	return n >= 2
}

// wanOptions are the WAN's link options: its latency, the scenario's
// bandwidth, scaled.
func (f *full) wanOptions() mocknet.LinkOptions {
	return mocknet.LinkOptions{Latency: time.Duration(f.w.S.WANMS / f.opt.Scale * float64(time.Millisecond)),
		Bandwidth: f.w.S.LinkBytesPerSecond() * f.opt.Scale}
}

// cutLatency is a cut WAN's: a link that has gone silent. What is written
// on its connections never arrives; the site link's probe notices and
// closes them, and a redial fails until the WAN heals.
const cutLatency = 1000 * time.Hour

// wan links the bridges whose site no cut isolates, and cuts the others'
// links (time t). With site links the engine only makes and cuts the
// mocknet links: a cut link goes silent, a healed one is made anew, and
// the site links notice and dial by themselves. Without (one bridge),
// bridges are connected as any two devices.
func (f *full) wan(t float64) {
	var up []int
	for i, d := range f.w.Devices {
		if !d.Bridge {
			continue
		}
		if f.w.wanUp(f.devs[i].place, t) {
			up = append(up, i)
			continue
		}
		for j, o := range f.w.Devices {
			if o.Bridge && j != i {
				f.cutWAN(i, j)
			}
		}
	}
	for i, a := range up {
		for _, b := range up[i+1:] {
			f.linkWAN(a, b)
		}
	}
}

func (f *full) linkWAN(a, b int) {
	if !f.sited() {
		f.connect(a, b)
		if l := f.conns[[2]int{min(a, b), max(a, b)}]; l != nil {
			l.SetOptions(f.wanOptions())
		}
		return
	}
	k := [2]int{min(a, b), max(a, b)}
	if _, ok := f.wanLinks[k]; ok {
		return
	}
	l, err := f.mn.LinkPeers(f.devs[a].n.ID(), f.devs[b].n.ID())
	if err != nil {
		f.fail("WAN %s–%s: %v", f.w.Devices[a].Name, f.w.Devices[b].Name, err)
		return
	}
	l.SetOptions(f.wanOptions())
	f.wanLinks[k] = l
}

func (f *full) cutWAN(a, b int) {
	if !f.sited() {
		f.disconnect(a, b)
		return
	}
	k := [2]int{min(a, b), max(a, b)}
	l, ok := f.wanLinks[k]
	if !ok {
		return
	}
	delete(f.wanLinks, k)
	f.mn.Unlink(l) // no new connection over it
	o := l.Options()
	o.Latency = cutLatency // and silence on the ones made
	l.SetOptions(o)
}

// settleSites waits (up to the setup bound) until every bridge's site
// links are up and admitted both ways.
func (f *full) settleSites() {
	if !f.sited() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.opt.Setup)
	defer cancel()
	err := waitFor(ctx, func() bool {
		for i, d := range f.w.Devices {
			if !d.Bridge {
				continue
			}
			n := f.devs[i].n
			for _, l := range n.SiteLinks() {
				id, err := peer.Decode(l.Peer)
				if err != nil || !l.Up || !n.IsAdmitted(id) {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		f.fail("start: site links not all up before time 0")
	}
}

// watchSites records every change of the bridges' site links (polled:
// the engine watches them as GET /api/v1/sites would).
func (f *full) watchSites(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	last := map[[2]string]bool{}
	for {
		for i, d := range f.w.Devices {
			if !d.Bridge {
				continue
			}
			for _, l := range f.devs[i].n.SiteLinks() {
				k := [2]string{d.Name, l.Peer}
				if was, seen := last[k]; !seen || was != l.Up {
					last[k] = l.Up
					at := f.now()
					f.mu.Lock()
					f.links = append(f.links, SiteLinkChange{At: at, Bridge: d.Name, Up: l.Up})
					f.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// siteBytes is what each bridge sent on its site links.
func (f *full) siteBytes() map[string]int64 {
	out := map[string]int64{}
	for i, d := range f.w.Devices {
		if !d.Bridge {
			continue
		}
		for _, l := range f.devs[i].n.SiteLinks() {
			out[d.Name] += l.SentBytes
		}
	}
	return out
}
