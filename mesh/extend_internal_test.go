package mesh

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

// keyCounter is an idsHolder that also counts the IDs it was asked to key.
type keyCounter struct {
	idsHolder
	keyed int
}

func (h *keyCounter) Keys(_ []byte, ids []crdt.OpID) []uint64 {
	h.keyed += len(ids)
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = 1 + uint64(id[0]) // never 0: a key 0 is asked again
	}
	return out
}

// TestSessionExtended: a tag that gained ops since its last session gets
// a session whose items and keys are exactly a fresh build's, for which
// the holder keyed only the new ops; it reconciles as a fresh one does.
// IDs that lost one of the last session's items are built afresh.
func TestSessionExtended(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ids := randomIDs(rng, 800)
	slices.SortFunc(ids, crdt.OpID.Compare)
	h := &keyCounter{idsHolder: idsHolder{ids: ids}}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, &fakeNode{id: newPeerID(t)}, &fakeHolder{}, &now)
	s.h = h
	tag := make([]byte, 16)
	s.session(tag)
	if h.keyed != len(ids) {
		t.Fatalf("first build keyed %d IDs, want %d", h.keyed, len(ids))
	}
	added := randomIDs(rng, 25)
	h.ids = union(ids, added)
	h.keyed = 0
	got := s.session(tag)
	if h.keyed != len(added) {
		t.Fatalf("after %d new ops the holder keyed %d IDs", len(added), h.keyed)
	}
	want := NewKeyedSession(h.ids, h.Keys(tag, h.ids))
	if !slices.Equal(got.items, want.items) || !slices.Equal(got.keys, want.keys) || !slices.Equal(got.order, want.order) {
		t.Fatal("an extended session differs from a fresh build")
	}
	theirs := union(ids[:700], randomIDs(rng, 30))
	a, b := drive(t, got, NewSession(theirs)), drive(t, want, NewSession(theirs))
	slices.SortFunc(a, crdt.OpID.Compare)
	slices.SortFunc(b, crdt.OpID.Compare)
	if !slices.Equal(a, b) || len(a) != 30 {
		t.Fatalf("extended session needs %d IDs, fresh one %d (want 30)", len(a), len(b))
	}
	// One of the last session's IDs gone (a carrier dropped it): afresh.
	h.ids = slices.Delete(slices.Clone(h.ids), 10, 11)
	h.keyed = 0
	if c := s.session(tag); h.keyed != len(h.ids) || !slices.Equal(c.items, h.ids) {
		t.Fatalf("after an ID went: keyed %d of %d, %d items", h.keyed, len(h.ids), len(c.items))
	}
	// Not ascending: no extension.
	base := NewKeyedSession(ids, nil)
	bad := union(ids, added)
	bad[3], bad[4] = bad[4], bad[3]
	if base.extend(bad, func(x []crdt.OpID) []uint64 { return make([]uint64, len(x)) }) != nil {
		t.Fatal("extended over IDs out of order")
	}
}
