package conversations

import (
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// An urgent message is published with the urgency bit in its signed
// header (carriers and anchors move it first); a routine one without.
func TestUrgentSendMarkedInHeader(t *testing.T) {
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	s, err := Open(Config{Device: alice.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub := &published{}
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
	seen := map[crdt.OpID]bool{}
	for _, raw := range pub.take() {
		e, err := e2e.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		seen[crdt.OpID(e2e.ID(raw))] = e.Urgent
		if e.Urgent && crdt.OpID(e2e.ID(raw)) != urgent {
			t.Fatalf("an op other than the urgent message is urgent (kind %d)", e.Kind)
		}
	}
	if u, ok := seen[urgent]; !ok || !u {
		t.Fatalf("urgent message published %v, urgent %v", ok, u)
	}
	if u, ok := seen[routine]; !ok || u {
		t.Fatalf("routine message published %v, urgent %v", ok, u)
	}
}
