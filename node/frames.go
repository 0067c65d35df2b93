package node

import (
	"context"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/internal/streams"
)

// sendMessages writes raws (the first max of them) as length-prefixed
// messages on a new stream of proto to p, half-closes it and waits, within
// dirTimeout, for p to close: the one-way exchanges of federation records,
// the book of federated devices and introductions. name labels the stream
// (limited connections allowed) and the log. It reports whether every
// message was written.
func (n *Node) sendMessages(p peer.ID, proto protocol.ID, name string, raws [][]byte, max int) bool {
	ctx, cancel := context.WithTimeout(n.ctx, dirTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, name), p, proto)
	if err != nil {
		n.log.Debug(name+": cannot open stream", "remote", p.String(), "err", err)
		return false
	}
	defer streams.Bound(ctx, s, dirTimeout)()
	w := msgio.NewVarintWriter(s)
	for _, raw := range raws[:min(len(raws), max)] {
		if err := w.WriteMsg(raw); err != nil {
			s.Reset()
			return false
		}
	}
	s.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(s, 1))
	s.Close()
	return true
}
