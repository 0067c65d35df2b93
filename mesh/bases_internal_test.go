package mesh

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// idsHolder holds one tag's IDs and counts the key lookups a session
// build makes.
type idsHolder struct {
	fakeHolder
	ids      []crdt.OpID
	keyCalls int
}

func (h *idsHolder) IDs([]byte) []crdt.OpID { return slices.Clone(h.ids) }
func (h *idsHolder) Keys(_ []byte, ids []crdt.OpID) []uint64 {
	h.keyCalls++
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id[0])
	}
	return out
}

// drive runs a reconciliation from mine (initiator) against theirs and
// returns what mine needs.
func drive(t *testing.T, mine, theirs *Session) []crdt.OpID {
	t.Helper()
	msg, err := mine.Initiate()
	if err != nil {
		t.Fatal(err)
	}
	cur, other := theirs, mine
	for msg != nil {
		if msg, err = cur.Reply(msg); err != nil {
			t.Fatal(err)
		}
		cur, other = other, cur
	}
	return mine.Need()
}

// TestSessionItemsReused: while a tag's IDs stay the same, a session
// reuses the last one's items and keys (no new build), each session still
// reconciles on its own, and any change of the IDs — one more, or IDs out
// of order (carried ones appended) — builds afresh.
func TestSessionItemsReused(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ids := randomIDs(rng, 500)
	slices.SortFunc(ids, crdt.OpID.Compare)
	h := &idsHolder{ids: ids}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, &fakeNode{id: newPeerID(t)}, &fakeHolder{}, &now)
	s.h = h
	tag := make([]byte, 16)

	extra := randomIDs(rng, 40)
	theirs := union(ids[:450], extra)
	a := s.session(tag)
	b := s.session(tag)
	if h.keyCalls != 1 {
		t.Fatalf("two sessions over the same IDs built %d times", h.keyCalls)
	}
	if &a.items[0] != &b.items[0] || b.keys[7] != uint64(b.items[7][0]) {
		t.Fatal("the second session does not share the first's items and keys")
	}
	for i, sess := range []*Session{a, b} {
		need := drive(t, sess, NewSession(theirs))
		slices.SortFunc(extra, crdt.OpID.Compare)
		slices.SortFunc(need, crdt.OpID.Compare)
		if !slices.Equal(need, extra) {
			t.Fatalf("session %d needs %d IDs, want the %d extra", i, len(need), len(extra))
		}
	}

	h.ids = union(ids, extra[:1])
	c := s.session(tag)
	if h.keyCalls != 2 || len(c.items) != len(ids)+1 {
		t.Fatalf("after one more ID: %d builds, %d items", h.keyCalls, len(c.items))
	}
	// A holder giving its IDs out of order: sorted first, then built once.
	h.ids = append(slices.Clone(ids), extra[1])
	s.session(tag)
	d := s.session(tag)
	if h.keyCalls != 3 || !slices.IsSortedFunc(d.items, crdt.OpID.Compare) || len(d.items) != len(ids)+1 {
		t.Fatalf("IDs out of order: %d builds (want 3), %d items, sorted %v", h.keyCalls, len(d.items), slices.IsSortedFunc(d.items, crdt.OpID.Compare))
	}
	// Carried IDs join the ids ones, sorted and without repeats.
	s.carried[hex.EncodeToString(tag)] = &carrier{tag: tag, ops: map[crdt.OpID]held{extra[2]: {}, ids[0]: {}}}
	e := s.session(tag)
	if want := union(ids, extra[1:3]); !slices.Equal(e.items, want) || h.keyCalls != 4 {
		t.Fatalf("ids and carried: %d items (want %d), %d builds", len(e.items), len(want), h.keyCalls)
	}
	if f := s.session(tag); &f.items[0] != &e.items[0] {
		t.Fatal("ids and carried: the next session built again")
	}
}
