package discovery

import (
	"bytes"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// ServiceName is the mDNS service medmesh announces and browses.
const ServiceName = "_medmesh._udp"

type mdnsNotifee struct {
	self peer.ID
	d    *Dialer
	log  *slog.Logger
}

// HandlePeerFound is called by the mDNS service for every announcement.
// Announcements are unauthenticated: what they name is dialled under the
// Policy for the local link (never loopback) and within the bounds of Try,
// all mDNS finds counting as one source. To avoid two simultaneous dials that
// would meet as one TCP simultaneous open, only the lower peer ID dials at
// once; the higher waits one backoff step, by which time the other side's
// dial has normally arrived and nothing more is needed.
func (m *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.self {
		return
	}
	m.log.Debug("mDNS found peer", "remote", ai.ID.String())
	var delay time.Duration
	if bytes.Compare([]byte(m.self), []byte(ai.ID)) >= 0 {
		delay = 3 * minBackoff
	}
	m.d.try(ai, Source{}, delay)
}

// StartMDNS announces h on the LAN and hands peers it finds to d.
func StartMDNS(h host.Host, d *Dialer, log *slog.Logger) (interface{ Close() error }, error) {
	s := mdns.NewMdnsService(h, ServiceName, &mdnsNotifee{self: h.ID(), d: d, log: log})
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}
