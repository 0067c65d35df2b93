package node

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Peer scoring. Gossipsub scores every peer (go-libp2p-pubsub's own
// scoring, parameters below) and the node adds an application-specific
// part: a record, per peer, of the messages our validators rejected from
// it (the trust topic's here; the mesh reports its conversation topics'
// through Penalise), decayed with a half-life of rejectHalfLife. A peer's
// application score is -misdeeds, weighted by appWeight.
//
// What a peer sending invalid messages meets, n recent rejects in a row
// (the trust topic's own invalid-message penalty, -n², included):
//
//	n = 2  score ≈ -24 < gossipThreshold:   no gossip to or from it
//	n = 4  score ≈ -56 < publishThreshold:  we do not flood-publish to it
//	n = 5  misdeeds ≥ blockAt:              disconnected and blocked for
//	                                        intruderBlock by admission
//	n = 6  score ≈ -96 < graylistThreshold: gossipsub ignores its RPCs
//
// The block is decided from our record alone, so positive score a peer
// earned (time in mesh, first deliveries: at most topicScoreCap) does not
// buy it more invalid messages; graylisting is the backstop when a peer
// cannot be disconnected (a mocknet host has no gater). An honest peer
// forwards only what its validators accepted, and validators answer
// "ignore", never "reject", for what is merely stale (an older CRL, an
// expired or revoked colleague's entry), so honest peers score 0 or more.
//
// IP colocation is not scored: devices behind one Wi-Fi gateway or NAT
// share an address, and every peer that can send us anything is admitted
// with a certificate, which is what bounds Sybils here.
const (
	rejectHalfLife = 2 * time.Minute
	blockAt        = 5    // decayed rejects at which a peer is blocked
	maxScored      = 1024 // peers with a record kept
	appWeight      = 10

	gossipThreshold   = -20
	publishThreshold  = -40
	graylistThreshold = -80
	topicScoreCap     = 10
)

// scorer is the per-peer record of rejected messages. mu guards peers;
// AppSpecificScore reads it from gossipsub's scoring under pubsub's own
// lock, so nothing here calls out while holding mu.
type scorer struct {
	now func() time.Time

	mu    sync.Mutex
	peers map[peer.ID]misdeeds
}

// misdeeds is a peer's decayed count of rejects as of at.
type misdeeds struct {
	count float64
	at    time.Time
}

func newScorer(now func() time.Time) *scorer {
	return &scorer{now: now, peers: map[peer.ID]misdeeds{}}
}

func (m misdeeds) decayed(now time.Time) float64 {
	dt := now.Sub(m.at)
	if dt <= 0 {
		return m.count
	}
	return m.count * math.Exp2(-dt.Seconds()/rejectHalfLife.Seconds())
}

// add records one reject from id and reports the decayed count and
// whether this reject took it to blockAt.
func (s *scorer) add(id peer.ID) (count float64, crossed bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.peers[id]
	if !ok && len(s.peers) >= maxScored {
		s.evictLocked(now)
	}
	before := m.decayed(now)
	m = misdeeds{count: before + 1, at: now}
	s.peers[id] = m
	return m.count, before < blockAt && m.count >= blockAt
}

// evictLocked makes room for one more record: it drops the records that
// have decayed below one reject, or else the smallest. Callers hold mu.
func (s *scorer) evictLocked(now time.Time) {
	var least peer.ID
	lowest := math.Inf(1)
	for id, m := range s.peers {
		c := m.decayed(now)
		if c < 1 {
			delete(s.peers, id)
			continue
		}
		if c < lowest {
			least, lowest = id, c
		}
	}
	if len(s.peers) >= maxScored {
		delete(s.peers, least)
	}
}

// misdeeds is id's decayed count of rejects now.
func (s *scorer) misdeeds(id peer.ID) float64 {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[id].decayed(now)
}

// appScore is gossipsub's AppSpecificScore.
func (s *scorer) appScore(id peer.ID) float64 { return -s.misdeeds(id) }

// Penalise records that id sent a message a validator rejected (the mesh
// calls it from its conversation-topic validators). A peer that keeps at
// it scores down in gossipsub and, at blockAt recent rejects, is
// disconnected and blocked for a while.
func (n *Node) Penalise(id peer.ID) {
	if id == "" || id == n.ID() {
		return
	}
	count, crossed := n.score.add(id)
	if !crossed {
		return
	}
	why := fmt.Errorf("%w: %.0f invalid messages", ErrMisbehaving, count)
	n.goOwned(func() { n.blockMisbehaving(id, why) })
}

// blockMisbehaving disconnects id and keeps it out for intruderBlock,
// through admission's block list (the gater and onConnected enforce it).
// Its admission is withdrawn at once, so no stream handler serves it
// while the connection closes.
func (n *Node) blockMisbehaving(id peer.ID, why error) {
	n.withdraw(id, why)
}

// scored wraps a topic validator so that what it rejects counts against
// the peer that sent it (the forwarder: gossipsub has no author here), if
// that peer is admitted: a message from a peer whose admission lapsed
// between its RPC and the validation (a quick reconnect, a revocation) is
// rejected, but is no misdeed of an admitted colleague.
func (n *Node) scored(v func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult) func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
	return func(ctx context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		r := v(ctx, from, m)
		if r == pubsub.ValidationReject && n.isAdmitted(from) {
			n.Penalise(from)
		}
		return r
	}
}

// scoreParams are the gossipsub peer-score parameters and thresholds: the
// trust topic scored, conversation and inbox topics (created by the mesh
// as conversations come and go) covered by app, the application score.
func scoreParams(app func(peer.ID) float64) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	trust := &pubsub.TopicScoreParams{
		TopicWeight: 1,
		// P1: up to +1 for ten minutes in the mesh.
		TimeInMeshWeight:  1.0 / 600,
		TimeInMeshQuantum: time.Second,
		TimeInMeshCap:     600,
		// P2: +1 per first delivery of a valid message, up to +5; CRLs
		// and entries are rare, so this stays small.
		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:    5,
		// P3, P3b off: the trust topic is quiet, so a mesh peer with
		// nothing to deliver is normal, not a fault.
		// P4: -n² for n invalid messages, n decaying to 1% in 15 minutes
		// (half-life about 2¼ minutes).
		InvalidMessageDeliveriesWeight: -1,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(15 * time.Minute),
	}
	params := &pubsub.PeerScoreParams{
		Topics:            map[string]*pubsub.TopicScoreParams{TrustTopic: trust},
		TopicScoreCap:     topicScoreCap,
		AppSpecificScore:  app,
		AppSpecificWeight: appWeight,
		// P6 off: see above.
		IPColocationFactorWeight: 0,
		// P7: broken gossip promises and grafts during backoff, beyond 6,
		// cost (excess)², decaying to 1% in 10 minutes.
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             pubsub.DefaultDecayInterval,
		DecayToZero:               pubsub.DefaultDecayToZero,
		// A peer that disconnects and comes back keeps its score.
		RetainScore: 10 * time.Minute,
	}
	thresholds := &pubsub.PeerScoreThresholds{
		GossipThreshold:   gossipThreshold,
		PublishThreshold:  publishThreshold,
		GraylistThreshold: graylistThreshold,
		// Gossipsub's peer exchange is off; a score no peer reaches.
		AcceptPXThreshold:           topicScoreCap + 1,
		OpportunisticGraftThreshold: 1,
	}
	return params, thresholds
}
