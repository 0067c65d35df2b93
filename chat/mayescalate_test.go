package chat

import (
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// TestMayEscalate: a conversation of plain messages, edits and receipts
// says there is nothing for the escalation loop; one urgent message makes
// every replica that reads it say there may be — the sender's, a
// recipient's and a recipient's restored from its store. Whenever it says
// nothing, State has no urgent message and nothing expired unread.
func TestMayEscalate(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	store, plain := crdt.NewMemStore(), mapPlain{}
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	deliver(t, envs, rb)
	ok := must[crdt.OpID](t)
	consistent := func(name string, r *Replica) {
		t.Helper()
		if r.MayEscalate() {
			return
		}
		st := r.State()
		if len(st.ExpiredUnread) > 0 || slices.ContainsFunc(st.Messages, func(m Message) bool { return m.Urgent || len(m.Escalations) > 0 }) {
			t.Fatalf("%s: MayEscalate false with urgent or expired messages in the state", name)
		}
	}
	m1, id1 := ok(split(ra.Send("one", SendOptions{})))
	deliver(t, m1, rb)
	rc, _ := ok(split(rb.Receipt(Read, id1)))
	ed, _ := ok(split(ra.Edit(id1, "one, edited")))
	deliver(t, rc, ra)
	deliver(t, ed, rb)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		consistent(name, r)
		if r.MayEscalate() {
			t.Fatalf("%s: MayEscalate with no urgent message", name)
		}
	}
	u, _ := urgent(t, ra, "bed 4 desaturating", time.Minute)
	if !ra.MayEscalate() {
		t.Fatal("alice: MayEscalate false after sending an urgent message")
	}
	consistent("bob before", rb)
	deliver(t, u, rb)
	if !rb.MayEscalate() {
		t.Fatal("bob: MayEscalate false after reading an urgent message")
	}
	keys, err := rb.Keys()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Restore(bob, w, keys, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	if !back.MayEscalate() {
		t.Fatal("bob restored: MayEscalate false with an urgent message in its store")
	}
}
