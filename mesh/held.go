package mesh

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// RoleAnchor is the certificate role of an always-on anchor. "Held by
// another node" counts only acknowledgements from a peer whose certificate
// grants it.
const RoleAnchor = "anchor"

// Bounds of the record of what this device sent to anchors (sentLog): the
// newest maxSentPerPeer op IDs of ours per anchor, for the maxSentPeers
// anchors most recently sent to; older entries are dropped (an ack for them
// is then ignored, and the op stays "queued" until another anchor acks it).
// 4,096 ops is days of one device's messages; 64 anchors is more than a
// trust's sites.
const (
	maxSentPerPeer = 4096
	maxSentPeers   = 64
)

// sentLog records, per anchor, the IDs of our ops this device sent it (by
// gossip to a topic it is subscribed to, or served in sync): an anchor's
// acknowledgement counts only for those. Guarded by Service.mu.
type sentLog struct {
	by   map[peer.ID]*sentTo
	tick uint64
}

type sentTo struct {
	ids   map[crdt.OpID]struct{}
	order []crdt.OpID // oldest first; may name IDs acknowledged since
	used  uint64
}

func (l *sentLog) add(p peer.ID, ids []crdt.OpID) {
	if len(ids) == 0 {
		return
	}
	if l.by == nil {
		l.by = map[peer.ID]*sentTo{}
	}
	l.tick++
	t := l.by[p]
	if t == nil {
		if len(l.by) >= maxSentPeers {
			var lru peer.ID
			for q, x := range l.by {
				if lru == "" || x.used < l.by[lru].used {
					lru = q
				}
			}
			delete(l.by, lru)
		}
		t = &sentTo{ids: map[crdt.OpID]struct{}{}}
		l.by[p] = t
	}
	t.used = l.tick
	for _, id := range ids {
		if _, ok := t.ids[id]; ok {
			continue
		}
		t.ids[id] = struct{}{}
		t.order = append(t.order, id)
	}
	// Drop the oldest beyond the bound (order may also name acknowledged
	// IDs, which go for free).
	for len(t.ids) > maxSentPerPeer || len(t.order) > 2*maxSentPerPeer {
		delete(t.ids, t.order[0])
		t.order = t.order[1:]
	}
}

// take returns the IDs among ids recorded as sent to p, and forgets them:
// each send is acknowledged once.
func (l *sentLog) take(p peer.ID, ids []crdt.OpID) []crdt.OpID {
	t := l.by[p]
	if t == nil {
		return nil
	}
	var out []crdt.OpID
	for _, id := range ids {
		if _, ok := t.ids[id]; ok {
			delete(t.ids, id)
			out = append(out, id)
		}
	}
	return out
}

// isAnchor reports whether p is admitted on a certificate with the anchor
// role.
func (s *Service) isAnchor(p peer.ID) bool { return s.cfg.Node.HasRole(p, RoleAnchor) }

// notePublished records ops of ours published on topic as sent to the
// anchors subscribed to it.
func (s *Service) notePublished(topic string, envs [][]byte) {
	t, err := s.topic(topic)
	if err != nil || len(envs) == 0 {
		return
	}
	var anchors []peer.ID
	for _, p := range t.ListPeers() {
		if s.isAnchor(p) {
			anchors = append(anchors, p)
		}
	}
	if len(anchors) == 0 {
		return
	}
	ids := make([]crdt.OpID, 0, len(envs))
	for _, raw := range envs {
		ids = append(ids, crdt.OpID(e2e.ID(raw)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range anchors {
		s.toAnchors.add(p, ids)
	}
}

// noteServed records the ops of ours among envelopes served to p in sync,
// if p is an anchor.
func (s *Service) noteServed(p peer.ID, envs [][]byte) {
	if len(envs) == 0 || !s.isAnchor(p) {
		return
	}
	self := s.cfg.Node.ID()
	var ids []crdt.OpID
	for _, raw := range envs {
		if e, err := e2e.Decode(raw); err == nil && peer.ID(e.Sender) == self {
			ids = append(ids, crdt.OpID(e2e.ID(raw)))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.toAnchors.add(p, ids)
}

// decodeHeld parses a held acknowledgement: a frame of kind want naming a
// tag and 1 to fetchBatch op IDs.
func decodeHeld(b []byte) (tag []byte, ids []crdt.OpID, err error) {
	f, err := decodeFrame(b)
	if err != nil {
		return nil, nil, err
	}
	if f.Kind != fWant || len(f.Tag) != tagLen || len(f.IDs) == 0 {
		return nil, nil, fmt.Errorf("%w: not a held acknowledgement", ErrProtocol)
	}
	for _, raw := range f.IDs {
		id, err := crdt.OpIDFromBytes(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		ids = append(ids, id)
	}
	return f.Tag, ids, nil
}

// handleHeld takes an acknowledgement that another node stored our ops.
func (s *Service) handleHeld(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	if !s.isAnchor(from) {
		s.log.Debug("held: acknowledgement from a peer without the anchor role ignored", "remote", from.String())
		st.Reset()
		return
	}
	st.SetReadDeadline(time.Now().Add(frameTimeout))
	r := msgio.NewVarintReaderSize(st, maxFrame)
	b, err := r.ReadMsg()
	if err != nil {
		return
	}
	defer r.ReleaseMsg(b)
	if !s.takeHeld(from, b) {
		st.Reset()
	}
}

// takeHeld applies an acknowledgement b from peer from: it counts only
// from an anchor, and only for ops this device sent to it (each once). It
// reports whether b was well formed.
func (s *Service) takeHeld(from peer.ID, b []byte) bool {
	tag, ids, err := decodeHeld(b)
	if err != nil {
		s.log.Debug("held: malformed acknowledgement", "remote", from.String(), "err", err)
		return false
	}
	if !s.isAnchor(from) {
		return true
	}
	s.mu.Lock()
	ids = s.toAnchors.take(from, ids)
	s.mu.Unlock()
	if len(ids) > 0 {
		s.h.Held(tag, ids, from)
	}
	return true
}

func (s *Service) ackHeld(to peer.ID, tag []byte, id crdt.OpID) {
	ctx, cancel := context.WithTimeout(s.ctx, frameTimeout)
	defer cancel()
	st, err := s.cfg.Node.Host().NewStream(ctx, to, ProtoHeld)
	if err != nil {
		return
	}
	defer st.Close()
	s.newConn(st).send(frame{Kind: fWant, Tag: tag, IDs: [][]byte{slices.Clone(id[:])}})
}
