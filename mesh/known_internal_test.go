package mesh

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// dupLog records what Observe is told of duplicates.
type dupLog struct {
	mu   sync.Mutex
	dups []crdt.OpID
}

func (l *dupLog) observe(id crdt.OpID, _ peer.ID, dup bool) {
	if dup {
		l.mu.Lock()
		l.dups = append(l.dups, id)
		l.mu.Unlock()
	}
}

// TestHeldCopiesSkipChecks: a copy of an op the holder applied — the same
// bytes, since an op's ID is their hash — is neither verified nor
// delivered again, on gossip or in a sync answer, and counts as a
// duplicate. The envelope here carries no valid signature, so a copy that
// was verified would be refused: only what the holder vouches for skips
// the signature, and everything else is checked as before — a copy on
// another conversation's topic, or pushed fresh by a revoked sender, is
// still refused.
func TestHeldCopiesSkipChecks(t *testing.T) {
	alice := newPeerID(t)
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{alice: nil}, revoked: map[peer.ID]bool{}}
	h := &fakeHolder{has: map[crdt.OpID]bool{}}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, n, h, &now)
	var log dupLog
	s.cfg.Observe = log.observe
	tag := make([]byte, tagLen)
	tag[0] = 1
	_, raw := sprayEnv(t, tag, alice, now, 100) // zero signature
	id := crdt.OpID(e2e.ID(raw))
	push := func(topic string) (pubsub.ValidationResult, any) {
		m := &pubsub.Message{Message: &pb.Message{Data: raw, Topic: &topic}}
		return s.validate(context.Background(), alice, m), m.ValidatorData
	}

	if r, _ := push(convTopic(tag)); r != pubsub.ValidationReject {
		t.Fatal("an envelope not held was accepted without a valid signature")
	}
	ok, complete, err := s.checkAnswer([][]byte{raw}, []crdt.OpID{id}, tag, true, alice)
	if err != nil || len(ok) != 0 || !complete {
		t.Fatalf("an envelope not held, fetched: ok %d, complete %v, err %v", len(ok), complete, err)
	}

	h.has[id] = true
	n.penalised = nil
	r, data := push(convTopic(tag))
	if r != pubsub.ValidationAccept || data != nil {
		t.Fatalf("a held op's gossip copy: %v with validator data %v, want accepted (forwarded) and not delivered", r, data)
	}
	ok, complete, err = s.checkAnswer([][]byte{raw}, []crdt.OpID{id}, tag, true, alice)
	if err != nil || len(ok) != 0 || !complete {
		t.Fatalf("a held op fetched again: ok %d, complete %v, err %v; want nothing to deliver, complete", len(ok), complete, err)
	}
	if len(n.penalised) != 0 {
		t.Fatal("a colleague was penalised for a copy of an op we hold")
	}
	if !slices.Equal(log.dups, []crdt.OpID{id, id}) {
		t.Fatalf("duplicates observed %d, want the gossip copy and the fetched one", len(log.dups))
	}

	other := make([]byte, tagLen)
	other[0] = 2
	if r, _ := push(convTopic(other)); r != pubsub.ValidationReject {
		t.Fatal("a held op pushed on another conversation's topic was accepted")
	}
	n.revoked[alice] = true
	if r, _ := push(convTopic(tag)); r != pubsub.ValidationReject {
		t.Fatal("a revoked sender's fresh push was accepted because we hold the op")
	}
	if len(log.dups) != 2 {
		t.Fatalf("%d duplicates observed: a refused copy counted as one", len(log.dups))
	}
}
