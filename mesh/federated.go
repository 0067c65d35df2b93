package mesh

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/e2e"
)

// Federated peers (devices of another trust, admitted under a federation
// record our root signed, scope "invited"; node/federated_peers.go).
//
// They are never gossip peers: the node's pubsub refuses them (peer
// filter, RPC inspector) and the topic validator takes nothing from a peer
// that is not our own staff. What reaches them and comes from them moves
// by sync only, and only for the tags Config.Shares allows — the
// conversations they are current members of — plus two inboxes:
//
//   - theirs (inboxTag(p)): the welcomes this device keeps for them;
//   - ours, one way: offered to them with an empty set (the fingerprint
//     of nothing, a session of no items), so we fetch the welcomes they
//     hold for us and they learn none of the op IDs in our inbox and can
//     want nothing of it.
//
// A session with a federated peer offers only those tags, never says it
// carries, ignores a carry flag or carried-only tags in the peer's offer,
// and refuses a hand phase (ErrProtocol): federated peers are never
// carriers, either way. Anchors neither serve nor initiate sessions with
// them. Every session asks Shares afresh, so a member removed from a
// conversation (or a peer whose record was withdrawn: Federated turns
// false) gets nothing more of it from the next session on. Because gossip
// never reaches them, publishing (and gossiping receipts) into a tag a
// connected federated peer shares starts a sync with it at once.
//
// Envelopes signed by a federated device (checkSender): accepted when
// Config.FederatedSender knows the device (met, its record and
// certificate admitting it now) and either Shares says it is a current
// member of the envelope's conversation, or — fetched by sync, which
// others' ops may depend on — this device holds that conversation, whose
// DAG then authorises it (chat), or it is a welcome into our own inbox.
// A revoked federated sender's fresh pushes are refused like a
// colleague's.

// federated reports whether p is a federated peer this device syncs with.
func (s *Service) federated(p peer.ID) bool {
	return s.cfg.Federated != nil && s.cfg.Shares != nil && !s.cfg.Anchor && !s.cfg.Node.IsAdmitted(p) && s.cfg.Federated(p)
}

// syncable reports whether sync runs with p: our own staff, or a
// federated peer.
func (s *Service) syncable(p peer.ID) bool {
	return s.cfg.Node.IsAdmitted(p) || s.federated(p)
}

// sharedWith reports whether tag may be synced with federated peer p.
func (s *Service) sharedWith(p peer.ID, tag []byte) bool {
	return bytes.Equal(tag, inboxTag(s.cfg.Node.ID())) || bytes.Equal(tag, inboxTag(p)) || s.cfg.Shares(p, tag)
}

// hiddenFrom reports whether tag is offered to p with an empty set (our
// own inbox, to a federated peer).
func (s *Service) hiddenFrom(p peer.ID, tag []byte) bool {
	return bytes.Equal(tag, inboxTag(s.cfg.Node.ID())) && s.federated(p)
}

// offerFor is what this device offers p: everything to our own staff;
// to a federated peer only the tags shared with it, carrying nothing. keep,
// if not nil, limits it to the tags it holds (an urgent session's).
func (s *Service) offerFor(p peer.ID, keep func(tag []byte) bool) offer {
	if !s.federated(p) {
		return s.offer(p, keep)
	}
	var o offer
	for _, t := range s.tags() {
		if keep != nil && !keep(t) || !s.sharedWith(p, t) {
			continue
		}
		o.tags = append(o.tags, t)
		if s.hiddenFrom(p, t) {
			o.fps = append(o.fps, Fingerprint(nil))
		} else {
			o.fps = append(o.fps, Fingerprint(s.IDsOf(t)))
		}
	}
	if s.cfg.Introduce != nil {
		s.cfg.Introduce(p, o.tags)
	}
	return o
}

// offerFrom normalises what p offered: a federated peer never carries.
func (s *Service) offerFrom(p peer.ID, o offer) offer {
	if s.federated(p) {
		o.carry, o.only = false, nil
	}
	return o
}

// sessionFor is the reconciliation session of tag with p (see hiddenFrom).
func (s *Service) sessionFor(p peer.ID, tag []byte) *Session {
	if s.hiddenFrom(p, tag) {
		return NewKeyedSession(nil, nil)
	}
	return s.session(tag)
}

// federatedSender reports whether sender, not our staff, is a federated
// device whose envelope e may be taken (see the comment above), and
// whether its trust revoked it.
func (s *Service) federatedSender(e *e2e.Envelope, sender peer.ID, viaSync bool) (ok, revoked bool) {
	if s.cfg.FederatedSender == nil || s.cfg.Shares == nil {
		return false, false
	}
	known, revoked := s.cfg.FederatedSender(sender)
	if !known {
		return false, false
	}
	switch {
	case s.cfg.Shares(sender, e.Tag):
	case viaSync && s.holds(e.Tag):
	case inboxOf(e, inboxTag(s.cfg.Node.ID())):
	default:
		return false, false
	}
	return true, revoked
}

// SyncFederated starts a sync round with federated peer p (the device
// calls it for every peer the node admits as federated).
func (s *Service) SyncFederated(p peer.ID) {
	s.goOwned(func() {
		if s.federated(p) {
			s.syncRound(p, true)
		}
	})
}

// kickFederated syncs at once with the connected federated peers that
// share tag: gossip never reaches them.
func (s *Service) kickFederated(tag []byte) {
	if s.cfg.Federated == nil || s.cfg.Shares == nil || s.cfg.Anchor {
		return
	}
	for _, p := range s.cfg.Node.Host().Network().Peers() {
		if s.federated(p) && s.cfg.Shares(p, tag) {
			s.goOwned(func() { s.syncRound(p, true) })
		}
	}
}

// gateSync serves our own staff and federated peers (ProtoSync).
func (s *Service) gateSync(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		if !s.enter() {
			st.Reset()
			return
		}
		defer s.wg.Done()
		p := st.Conn().RemotePeer()
		ctx, cancel := context.WithTimeout(s.ctx, 7*time.Second)
		defer cancel()
		if !s.cfg.Node.AwaitAdmitted(ctx, p) && !s.federated(p) {
			st.Reset()
			return
		}
		h(st)
	}
}

// errHandFederated: a federated peer opened a hand phase.
var errHandFederated = fmt.Errorf("%w: a federated peer never carries", ErrProtocol)
