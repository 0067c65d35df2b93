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
