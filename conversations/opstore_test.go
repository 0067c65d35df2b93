package conversations

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/crdt/crdttest"
	"github.com/medmesh/medmesh/internal/detcbor"
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

// recorder is a batching datastore that logs the writes reaching it.
type recorder struct {
	ds.Batching
	log []string
}

func (r *recorder) Put(ctx context.Context, k ds.Key, v []byte) error {
	r.log = append(r.log, "put "+k.String())
	return r.Batching.Put(ctx, k, v)
}

func (r *recorder) Delete(ctx context.Context, k ds.Key) error {
	r.log = append(r.log, "delete "+k.String())
	return r.Batching.Delete(ctx, k)
}

func (r *recorder) Batch(ctx context.Context) (ds.Batch, error) { return recBatch{r}, nil }

func (r *recorder) Sync(ctx context.Context, k ds.Key) error {
	r.log = append(r.log, "sync "+k.String())
	return r.Batching.Sync(ctx, k)
}

type recBatch struct{ r *recorder }

func (b recBatch) Put(ctx context.Context, k ds.Key, v []byte) error { return b.r.Put(ctx, k, v) }
func (b recBatch) Delete(ctx context.Context, k ds.Key) error        { return b.r.Delete(ctx, k) }
func (b recBatch) Commit(context.Context) error                      { return nil }

// TestReplacedPlaintextDeletedFirst: a plaintext replaced by its
// tombstone (a deleted message) reaches the store as a delete and then a
// put — inside a transaction of this device's own ops, of a batch of
// others' ops, and outside one — so that the encrypted store purges the
// old text from disk (a put alone only shadows it). A first put is a put.
func TestReplacedPlaintextDeletedFirst(t *testing.T) {
	ctx := context.Background()
	var id crdt.OpID
	id[0] = 7
	for _, tx := range []string{"none", "ours", "others"} {
		inTx := tx != "none"
		rec := &recorder{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
		j := newJournal(rec)
		p := plainStore{j, ds.NewKey("/conv/x/plain")}
		if err := p.Put(id, []byte("bed 4 query sepsis")); err != nil {
			t.Fatal(err)
		}
		rec.log = nil
		switch tx {
		case "ours":
			j.begin()
		case "others":
			j.hold()
		}
		if err := p.Replace(id, []byte("tombstone")); err != nil {
			t.Fatal(err)
		}
		if inTx {
			if err := j.save(ctx, ds.NewKey("/conv/x"), []byte("keys")); err != nil {
				t.Fatal(err)
			}
		}
		k := "/conv/x/plain/" + id.String()
		if i := slices.Index(rec.log, "delete "+k); i < 0 || i+1 >= len(rec.log) || rec.log[i+1] != "put "+k {
			t.Fatalf("in a transaction %v: the store saw %v, want a delete then a put of %s", inTx, rec.log, k)
		}
		if v, _ := p.Get(id); string(v) != "tombstone" {
			t.Fatalf("in a transaction %v: stored %q", inTx, v)
		}
	}
}

// TestJournalSyncsOnlyOurs: a batch of others' ops (hold) reaches the
// store in one batch with the key record and no sync; once this device
// adds an op of its own (begin), save syncs the batch.
func TestJournalSyncsOnlyOurs(t *testing.T) {
	ctx := context.Background()
	prefix := ds.NewKey("/conv/x")
	for _, ours := range []bool{false, true} {
		rec := &recorder{Batching: dssync.MutexWrap(ds.NewMapDatastore())}
		j := newJournal(rec)
		j.hold()
		if err := j.Put(ctx, prefix.ChildString("op1"), []byte("theirs")); err != nil {
			t.Fatal(err)
		}
		if len(rec.log) != 0 {
			t.Fatalf("held write reached the store before save: %v", rec.log)
		}
		if v, err := j.Get(ctx, prefix.ChildString("op1")); err != nil || string(v) != "theirs" {
			t.Fatalf("held write not readable: %q %v", v, err)
		}
		if ours {
			j.begin()
			if err := j.Put(ctx, prefix.ChildString("receipt"), []byte("ours")); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.save(ctx, prefix, []byte("keys")); err != nil {
			t.Fatal(err)
		}
		synced := slices.Contains(rec.log, "sync "+prefix.String())
		if synced != ours || !slices.Contains(rec.log, "put /conv/x/op1") || !slices.Contains(rec.log, "put /conv/x/keys") {
			t.Fatalf("ours %v: the store saw %v", ours, rec.log)
		}
	}
}

// The hand encoder of a stored op gives detcbor's bytes, for every shape:
// no, empty or many deps, nil or empty author and body, heads of every
// width, negative clocks.
func TestStoredOpEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bytesOf := func(n int) []byte {
		if n < 0 {
			return nil
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	ints := []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64}
	lens := []int{-1, 0, 1, 23, 24, 255, 256, 1024, 65535, 65536}
	for i := range 2000 {
		so := storedOp{
			Author: bytesOf(lens[rng.IntN(6)]), Body: bytesOf(lens[rng.IntN(len(lens))]),
			Wall: int64(ints[rng.IntN(len(ints))]), Logical: uint32(ints[rng.IntN(9)]),
		}
		if i%2 == 0 {
			so.Wall = -so.Wall - int64(rng.IntN(2))
		}
		if i%7 == 0 {
			so.Wall = math.MinInt64
		}
		switch i % 3 {
		case 0:
			so.Deps = nil
		case 1:
			so.Deps = [][]byte{}
		default:
			for range 1 + rng.IntN(30) {
				so.Deps = append(so.Deps, bytesOf(32))
			}
		}
		want, err := detcbor.Marshal(so)
		if err != nil {
			t.Fatal(err)
		}
		if got := so.appendCBOR(nil); !bytes.Equal(got, want) {
			t.Fatalf("case %d: hand %x, detcbor %x", i, got, want)
		}
		if len(want) > so.size() {
			t.Fatalf("case %d: %d bytes, size bound %d", i, len(want), so.size())
		}
	}
}
