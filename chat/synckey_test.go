package chat

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// TestSyncKeyOfGoneOpSurvivesRestart: a message deleted by retention keeps
// the sync key of its signed clock (less the urgency bit) after the
// replica is restored — the same as on a device that did not restart, so
// reconciliation (mesh: ranges in clock order) places it alike on both
// (red team of sync/8: it became 0 after a restart, and every such op cost
// lists of its neighbours in every session).
func TestSyncKeyOfGoneOpSurvivesRestart(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs, err := splitCreate(Create(alice, w, "t", []peer.ID{bob.ID}, WithClock(w.clock), WithStore(store), WithPlaintexts(plain)))
	if err != nil {
		t.Fatal(err)
	}
	rb := w.join(bob, ra.Tag())
	deliver(t, envs, rb)
	ok := must[crdt.OpID](t)
	ret, _ := ok(split(ra.SetRetention(time.Hour)))
	deliver(t, ret, rb)
	one, id := ok(split(ra.Send("one", SendOptions{})))
	deliver(t, one, rb)
	running := rb.SyncKeys([]crdt.OpID{id})[0]
	w.now = w.now.Add(2 * time.Hour)
	if ra.Expire(w.now) == 0 || rb.Expire(w.now) == 0 {
		t.Fatal("retention deleted nothing")
	}
	keys, _ := ra.Keys()
	back, err := Restore(alice, w, keys, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	if running == 0 {
		t.Fatal("no key before retention")
	}
	for name, k := range map[string]uint64{"bob, gone, running": rb.SyncKeys([]crdt.OpID{id})[0], "alice, gone, restored": back.SyncKeys([]crdt.OpID{id})[0]} {
		if k != e2e.CausalKey(running) {
			t.Errorf("%s: key %#x, want %#x", name, k, e2e.CausalKey(running))
		}
	}
}
