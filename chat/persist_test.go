package chat

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/crdt"
)

type mapPlain map[crdt.OpID][]byte

func (m mapPlain) Put(id crdt.OpID, p []byte) error     { m[id] = slices.Clone(p); return nil }
func (m mapPlain) Replace(id crdt.OpID, p []byte) error { return m.Put(id, p) }
func (m mapPlain) Get(id crdt.OpID) ([]byte, bool)      { p, ok := m[id]; return p, ok }
func (m mapPlain) Delete(id crdt.OpID) error            { delete(m, id); return nil }

// TestRestore: a replica rebuilt from its op store, key state and
// plaintexts shows the same conversation and keeps working.
func TestRestore(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	store, plain := crdt.NewMemStore(), mapPlain{}
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	ok := must[crdt.OpID](t)
	m1, id1 := ok(split(ra.Send("one", SendOptions{})))
	m2, _ := ok(split(ra.Send("two", SendOptions{})))
	deliver(t, slices.Concat(envs, m1, m2), rb)
	mine, _ := ok(split(rb.Send("bob's", SendOptions{})))
	del, _ := ok(split(ra.Delete(id1)))
	deliver(t, slices.Concat(mine, del), ra)
	deliver(t, del, rb)
	if p, err := decodePayload(plain[id1]); err != nil || p.Text != "" {
		t.Fatal("deleted message's plaintext kept")
	}
	keys, err := rb.Keys()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Restore(bob, w, keys, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(canon(back.State()), canon(rb.State())) {
		t.Fatalf("restored %q, want %q", texts(back.State()), texts(rb.State()))
	}
	m3, _ := ok(split(ra.Send("after restart", SendOptions{})))
	deliver(t, m3, back)
	if got := texts(back.State()); !slices.Equal(got, []string{"", "two", "bob's", "after restart"}) {
		t.Fatalf("after restore: %q", got)
	}
	out, _ := ok(split(back.Send("bob again", SendOptions{})))
	deliver(t, out, ra)
	if got := texts(ra.State()); got[len(got)-1] != "bob again" {
		t.Fatalf("alice reads %q", got)
	}
}

// FuzzRestore: any key record either fails to restore with an error or
// restores a replica whose own record restores to the same bytes again
// (the record is canonical once written). Ops and plaintexts are those of
// a real conversation, so accepted records replay a real DAG.
func FuzzRestore(f *testing.F) {
	w := newWorld(f)
	alice, bob := w.device("alice"), w.device("bob")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs := w.create(alice, "t", bob)
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	msg, _, _ := split(ra.Send("hi", SendOptions{}))
	for _, e := range append(envs, msg...) {
		rb.Receive(e)
	}
	good, err := rb.Keys()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Restore(bob, w, data, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
		if err != nil {
			return
		}
		_ = r.State()
		once, err := r.Keys()
		if err != nil {
			t.Fatalf("a restored replica cannot write its keys: %v", err)
		}
		again, err := Restore(bob, w, once, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
		if err != nil {
			t.Fatalf("a written key record does not restore: %v", err)
		}
		twice, _ := again.Keys()
		if !bytes.Equal(once, twice) {
			t.Fatal("key record not stable across a restore")
		}
	})
}
