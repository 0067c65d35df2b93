package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestScorer: rejects count per peer, decay with a half-life, reach blockAt
// once, and the record stays bounded however many peers misbehave.
func TestScorer(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := newScorer(func() time.Time { return now })
	const bad = peer.ID("bad")
	for i := 1; i <= blockAt+3; i++ {
		_, crossed := s.add(bad)
		if crossed != (i == blockAt) {
			t.Fatalf("reject %d: crossed=%v", i, crossed)
		}
	}
	if got := s.appScore(bad); got != -(blockAt + 3) {
		t.Fatalf("app score %v", got)
	}
	now = now.Add(rejectHalfLife)
	if got := s.misdeeds(bad); math.Abs(got-float64(blockAt+3)/2) > 1e-9 {
		t.Fatalf("after one half-life: %v", got)
	}
	// Decayed below blockAt, a peer that starts again crosses again.
	now = now.Add(4 * rejectHalfLife)
	crossedAgain := false
	for range blockAt {
		_, c := s.add(bad)
		crossedAgain = crossedAgain || c
	}
	if !crossedAgain {
		t.Fatal("a peer back at it did not reach blockAt again")
	}
	if s.misdeeds("honest") != 0 || s.appScore("honest") != 0 {
		t.Fatal("a peer with no rejects scored down")
	}
	for i := range 10 * maxScored {
		s.add(peer.ID(fmt.Sprint("p", i)))
	}
	s.mu.Lock()
	n := len(s.peers)
	s.mu.Unlock()
	if n > maxScored {
		t.Fatalf("%d records kept, cap %d", n, maxScored)
	}
	if s.misdeeds(bad) < blockAt {
		t.Fatal("a flood of one-off peers evicted the worst offender")
	}
}

// TestScoreThresholdsOrder: the thresholds meet a peer sending invalid
// trust-topic messages in the order score.go documents: gossip cut, then
// publish, and the reject that reaches blockAt still validated (the score
// before it is above the graylist), so the block always comes.
func TestScoreThresholdsOrder(t *testing.T) {
	score := func(n float64) float64 { return -appWeight*n - n*n } // app + the trust topic's P4
	if !(score(2) < gossipThreshold && score(1)+topicScoreCap > gossipThreshold-topicScoreCap) {
		t.Fatalf("gossip threshold %v: 1 reject %v, 2 rejects %v", gossipThreshold, score(1), score(2))
	}
	if !(score(blockAt-1) > graylistThreshold && score(blockAt-1) < publishThreshold) {
		t.Fatalf("before the blocking reject: score %v, publish %v, graylist %v", score(blockAt-1), publishThreshold, graylistThreshold)
	}
	if !(score(blockAt+1)+topicScoreCap < graylistThreshold) {
		t.Fatalf("a peer one past blockAt is not graylisted: %v", score(blockAt+1)+topicScoreCap)
	}
	params, thresholds := scoreParams(func(peer.ID) float64 { return 0 })
	if params.AppSpecificWeight != appWeight || thresholds.GraylistThreshold != graylistThreshold ||
		params.Topics[TrustTopic].InvalidMessageDeliveriesWeight != -1 || params.IPColocationFactorWeight != 0 {
		t.Fatal("scoreParams disagree with the constants this test reasons with")
	}
}

// scores collects what gossipsub's peer-score inspector reports.
type scores struct {
	mu     sync.Mutex
	lowest map[peer.ID]float64
}

func (s *scores) inspect(m map[peer.ID]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, v := range m {
		if old, ok := s.lowest[id]; !ok || v < old {
			s.lowest[id] = v
		}
	}
}

func (s *scores) min(id peer.ID) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.lowest[id]
	return v, ok
}

// TestInvalidTrustFlood: an admitted colleague floods the trust topic with
// messages that do not decode. The victim scores it down in gossipsub
// below the publish threshold, disconnects it and keeps it out for a
// while; the honest colleague's CRLs still reach the victim over the
// topic, and the victim's goroutines stay bounded.
func TestInvalidTrustFlood(t *testing.T) {
	c := newCA(t, "General Hospital")
	seen := &scores{lowest: map[peer.ID]float64{}}
	inspect := func(cfg *Config) {
		cfg.PubSubOptions = append(cfg.PubSubOptions, pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(seen.inspect), 100*time.Millisecond))
	}
	mn, _, nodes := pxMesh(t, c, []nodeOpt{inspect}, "victim", "honest", "attacker")
	victim, honest, attacker := nodes[0], nodes[1], nodes[2]
	connect(t, mn, victim, honest)
	connect(t, mn, victim, attacker)
	eventually(t, 10*time.Second, "the attacker sees the victim on the trust topic", func() bool {
		for _, id := range attacker.topic.ListPeers() {
			if id == victim.ID() {
				return true
			}
		}
		return false
	})

	goroutines := runtime.NumGoroutine()
	sent := 0
	eventually(t, 20*time.Second, "the victim drops the attacker", func() bool {
		for range 10 {
			msg := binary.BigEndian.AppendUint64([]byte{0xff, 0xfe}, uint64(sent))
			sent++
			if err := attacker.topic.Publish(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
		}
		return victim.host.Network().Connectedness(attacker.ID()) != network.Connected
	})
	t.Logf("dropped after %d invalid messages", sent)
	// The record decays (a two-minute half-life) from the moment of the
	// block: 0.9 of the threshold allows 18 s of a slow machine.
	if m := victim.score.misdeeds(attacker.ID()); m < 0.9*blockAt {
		t.Errorf("attacker's record %.1f, block at %d", m, blockAt)
	}
	if !victim.isBlocked(attacker.ID()) {
		t.Error("the attacker is not blocked")
	}
	eventually(t, 5*time.Second, "gossipsub scores the attacker below the publish threshold", func() bool {
		v, ok := seen.min(attacker.ID())
		return ok && v < publishThreshold
	})

	// It comes straight back: refused.
	if _, err := mn.ConnectPeers(attacker.ID(), victim.ID()); err == nil {
		eventually(t, 5*time.Second, "the blocked attacker's new connection is closed", func() bool {
			return victim.host.Network().Connectedness(attacker.ID()) != network.Connected
		})
	}
	if victim.isAdmitted(attacker.ID()) {
		t.Error("the blocked attacker was admitted again")
	}

	// The honest colleague's CRLs still spread over the topic.
	before := victim.TrustMessages()
	number := int64(0)
	eventually(t, 10*time.Second, "a trust-topic CRL from the honest colleague reaches the victim", func() bool {
		number++
		if _, err := honest.SubmitCRL(context.Background(), c.crl(t, number)); err != nil {
			t.Fatal(err)
		}
		return victim.TrustMessages() > before
	})
	if victim.score.misdeeds(honest.ID()) != 0 || !victim.isAdmitted(honest.ID()) {
		t.Error("the honest colleague was scored down or dropped")
	}
	if v, ok := seen.min(honest.ID()); ok && v < 0 {
		t.Errorf("gossipsub scored the honest colleague %v", v)
	}
	if g := runtime.NumGoroutine() - goroutines; g > 200 {
		t.Errorf("%d goroutines more after the flood", g)
	}
}
