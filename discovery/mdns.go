package discovery

import (
	"bytes"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ServiceName is the mDNS service medmesh announces and browses.
const ServiceName = "_medmesh._udp"

type mdnsNotifee struct {
	self peer.ID
	d    *Dialer
	log  *slog.Logger
}

// HandlePeerFound is called by the mDNS service for every announcement.
// Loopback addresses are never dialled. To avoid two simultaneous dials that
// would meet as one TCP simultaneous open, only the lower peer ID dials at
// once; the higher waits one backoff step, by which time the other side's
// dial has normally arrived and nothing more is needed.
func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.self {
		return
	}
	ai.Addrs = slices.DeleteFunc(ai.Addrs, func(a ma.Multiaddr) bool { return manet.IsIPLoopback(a) })
	if len(ai.Addrs) == 0 {
		return
	}
	m.log.Debug("mDNS found peer", "remote", ai.ID.String())
	if bytes.Compare([]byte(m.self), []byte(ai.ID)) < 0 {
		m.d.Try(ai)
		return
	}
	m.d.tryLater(ai)
}

// tryLater schedules ai after one backoff step.
func (d *Dialer) tryLater(ai peer.AddrInfo) {
	d.add(ai, false)
	d.mu.Lock()
	if t := d.targets[ai.ID]; t != nil && !t.dialing {
		t.next = time.Now().Add(3 * minBackoff)
	}
	d.mu.Unlock()
}

// StartMDNS announces h on the LAN and hands peers it finds to d.
func StartMDNS(h host.Host, d *Dialer, log *slog.Logger) (interface{ Close() error }, error) {
	s := mdns.NewMdnsService(h, ServiceName, &mdnsNotifee{self: h.ID(), d: d, log: log})
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}
