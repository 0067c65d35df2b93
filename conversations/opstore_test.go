package conversations

import (
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/crdt/crdttest"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

// The persisted op store passes the same conformance suite as the in-memory
// one, over the encrypted store on pebble and on a map.
func TestOpStoreConformance(t *testing.T) {
	crdttest.Run(t, func(t *testing.T) crdt.Store {
		return NewOpStore(dssync.MutexWrap(ds.NewMapDatastore()), ds.NewKey("/conv/x/op"))
	})
	crdttest.Run(t, func(t *testing.T) crdt.Store {
		s, err := store.Open(t.TempDir(), []byte("p"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return NewOpStore(s, ds.NewKey("/conv/x/op"))
	})
}

// FuzzDecodeOp: a stored op read back from disk — damaged, truncated or
// crafted bytes — decodes to an error or to an op that stores back to the
// same bytes; never a panic.
func FuzzDecodeOp(f *testing.F) {
	mem := dssync.MutexWrap(ds.NewMapDatastore())
	s := NewOpStore(mem, ds.NewKey("/conv/x/op"))
	op := crdt.Op{ID: crdt.OpID{1}, Author: "author", Time: crdt.Timestamp{Wall: 1700000000000, Logical: 3}, Deps: []crdt.OpID{{2}, {3}}, Body: []byte("sealed")}
	if err := s.Put(op); err != nil {
		f.Fatal(err)
	}
	raw, err := mem.Get(f.Context(), s.key(op.ID))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x01, 0x81, 0x41, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeOp(crdt.OpID{9}, b)
		if err != nil {
			return
		}
		m := dssync.MutexWrap(ds.NewMapDatastore())
		again := NewOpStore(m, ds.NewKey("/p"))
		if err := again.Put(got); err != nil {
			t.Fatalf("decoded op does not store again: %v", err)
		}
		back, _ := m.Get(t.Context(), again.key(got.ID))
		if string(back) != string(b) {
			t.Fatal("stored op does not round-trip")
		}
	})
}
