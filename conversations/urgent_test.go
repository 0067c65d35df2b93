package conversations

import (
	"slices"
	"sync"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// marking is a publisher that records the ops it is told are urgent.
type marking struct {
	published
	mu     sync.Mutex
	urgent []crdt.OpID
}

func (m *marking) MarkUrgent(ids ...crdt.OpID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.urgent = append(m.urgent, ids...)
}

// An urgent message is marked urgent with the mesh (carriers hand it first
// and evict it last); a routine one is not.
func TestUrgentSendMarkedForCarriers(t *testing.T) {
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	s, err := Open(Config{Device: alice.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub := &marking{}
	s.Attach(pub)
	id, err := s.Create("ward", []peer.ID{bob.id})
	if err != nil {
		t.Fatal(err)
	}
	routine, err := s.Send(id, "bed 4 stable", chat.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	urgent, err := s.Send(id, "bed 4 arrest", chat.SendOptions{Urgent: true})
	if err != nil {
		t.Fatal(err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if !slices.Contains(pub.urgent, urgent) || slices.Contains(pub.urgent, routine) {
		t.Fatalf("marked urgent %v; want the urgent message %s only", pub.urgent, urgent)
	}
}
