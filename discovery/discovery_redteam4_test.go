package discovery

// Red-team round 4: LAN discovery against an outsider on the hospital
// Wi-Fi.

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestRedteam4MDNSFloodHidesColleagues: attack — an outsider on the LAN,
// no certificate, answers mDNS for _medmesh._udp with made-up peers at LAN
// addresses (192.168/16: allowed for mDNS) that accept TCP and never
// finish a handshake. Every mDNS find counts as one source, so the first
// SourceQuota (64) of each minute are the attacker's; their dials hang
// for dialTimeout, three tries each, two at a time (maxSourceDials of the
// one mDNS source), and the queue fills towards maxLearntPending, after
// which peers named by admitted colleagues are refused too. A real
// colleague announcing itself over mDNS meanwhile is refused or queued
// behind the attacker's targets for many minutes. Impact: in a basement or
// plant room with no anchor — the case mDNS exists for — one unauthenticated
// device stops colleagues from finding each other: the offline mesh does
// not form.
func TestRedteam4MDNSFloodHidesColleagues(t *testing.T) {
	h := newHost(t)
	honest := peer.ID("\xff honest colleague")
	hd := &hangingDials{release: make(chan struct{}), pass: map[peer.ID]bool{honest: true}}
	// The colleague is in this device's directory (entries spread on the
	// trust topic and by directory sync): known colleagues go first, on
	// slots of their own. (A stranger never met — its entry not yet here —
	// still waits behind the flood: the documented limit.)
	d := NewDialer(context.Background(), h, slog.New(slog.DiscardHandler), withConnect(hd.connect),
		WithKnown(func(id peer.ID) bool { return id == honest }))
	t.Cleanup(func() { close(hd.release); d.Close() })
	m := &mdnsNotifee{self: h.ID(), d: d, log: slog.New(slog.DiscardHandler)}
	for i := range 200 { // one burst of mDNS answers
		m.HandlePeerFound(peer.AddrInfo{ID: peer.ID(fmt.Sprintf("\xff fake %d", i)),
			Addrs: []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/192.168.1.%d/tcp/4001", 10+i%200))}})
	}
	// The colleague at the next desk announces itself.
	m.HandlePeerFound(peer.AddrInfo{ID: honest, Addrs: []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.250/tcp/4001")}})
	waitFor(t, 15*time.Second, "a colleague found by mDNS dialled within 15 s of an outsider's mDNS burst (the attacker's 64 hanging targets are ahead of it)",
		func() bool { return hd.dialledPeer(honest) })
}
