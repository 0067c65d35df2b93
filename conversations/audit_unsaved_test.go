package conversations

import (
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
)

// TestAuditSentOnceAfterFailedSaves: messages whose saves failed are
// recorded as sent by the save that persists them, each exactly once,
// however many saves follow.
func TestAuditSentOnceAfterFailedSaves(t *testing.T) {
	alice, bob := rtNewDev(t), rtNewDev(t)
	dir := rtDir{alice.id: alice, bob.id: bob}
	st := &rt6FlakyStore{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
	v := &rt6Victim{}
	s, err := Open(Config{Device: bob.dev, Directory: dir, Store: st, Audit: v.record})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Create("ward", []peer.ID{alice.id})
	if err != nil {
		t.Fatal(err)
	}
	st.set(true)
	for _, text := range []string{"one", "two"} {
		if _, err := s.Send(id, text, chat.SendOptions{}); err == nil {
			t.Fatal("setup: a send saved")
		}
	}
	for _, ev := range v.take() {
		if ev.Kind == audit.Sent {
			t.Fatalf("unsaved messages recorded as sent: %+v", ev)
		}
	}
	st.set(false)
	for _, text := range []string{"three", "four"} {
		if _, err := s.Send(id, text, chat.SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sent := map[string]int{}
	for _, ev := range v.take() {
		if ev.Kind == audit.Sent {
			for _, o := range ev.IDs.Ops {
				sent[o]++
			}
		}
	}
	state, err := s.State(id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range state.Messages {
		if m.Sender == bob.id {
			n++
			if sent[m.ID.String()] != 1 {
				t.Fatalf("message %s recorded as sent %d times", m.ID, sent[m.ID.String()])
			}
		}
	}
	if n != 4 || len(sent) != 4 {
		t.Fatalf("%d messages of bob's, %d recorded as sent; want 4", n, len(sent))
	}
}
