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

// TestHasOnlyRecentlyApplied: the mesh skips the signature and delivery
// of a copy only where Has says so. Has is true for an op taken in and
// applied; false for one waiting for a missing dependency (sync must
// fetch it again, to learn what it waits for), for a conversation not
// held, and for an op that fell out of the bounded recent set.
func TestHasOnlyRecentlyApplied(t *testing.T) {
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: dssync.MutexWrap(ds.NewMapDatastore())})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ra, out, err := chat.Create(alice.dev, dir, "ward", []peer.ID{bob.id})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Deliver(ra.Tag(), rt6Checked(t, out.Envelopes), alice.id) {
		t.Fatal("bob did not join")
	}
	send := func() []byte {
		o, err := ra.Send("obs", chat.SendOptions{})
		if err != nil || len(o.Envelopes) != 1 {
			t.Fatalf("send: %v, %d envelopes", err, len(o.Envelopes))
		}
		return o.Envelopes[0]
	}
	idOf := func(raw []byte) crdt.OpID { return crdt.OpID(e2e.ID(raw)) }
	first, second := send(), send() // second depends on first
	s.Deliver(ra.Tag(), rt6Checked(t, [][]byte{second}), alice.id)
	if s.Has(ra.Tag(), idOf(second)) {
		t.Fatal("an op waiting for its dependency counts as applied")
	}
	s.Deliver(ra.Tag(), rt6Checked(t, [][]byte{first}), alice.id)
	if !s.Has(ra.Tag(), idOf(first)) {
		t.Fatal("an applied op is not known")
	}
	other := make([]byte, len(ra.Tag()))
	if s.Has(other, idOf(first)) {
		t.Fatal("an op known under a conversation not held")
	}
	var later [][]byte
	for range recentOps {
		later = append(later, send())
	}
	s.Deliver(ra.Tag(), rt6Checked(t, later), alice.id)
	if !s.Has(ra.Tag(), idOf(later[len(later)-1])) {
		t.Fatal("the latest op is not known")
	}
	if s.Has(ra.Tag(), idOf(first)) {
		t.Fatalf("more than %d ops remembered", recentOps)
	}
}
