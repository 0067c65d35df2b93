package mesh_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/store"
)

// crashStore is an in-memory datastore that loses, in a crash, every write
// since its last Sync or batch commit — as the device's store (pebble with
// NoSync writes; a batch commit fsyncs) does when the process is killed.
type crashStore struct {
	ds.Batching
	failSync atomic.Bool
	mu       sync.Mutex
	synced   map[ds.Key][]byte
}

var errSyncFailed = errors.New("sync failed (test)")

func newCrashStore(t testing.TB, from map[ds.Key][]byte) *crashStore {
	m := dssync.MutexWrap(ds.NewMapDatastore())
	for k, v := range from {
		if err := m.Put(context.Background(), k, v); err != nil {
			t.Fatal(err)
		}
	}
	return &crashStore{Batching: m, synced: from}
}

func (c *crashStore) Sync(ctx context.Context, _ ds.Key) error {
	if c.failSync.Load() {
		return errSyncFailed
	}
	res, err := c.Batching.Query(ctx, query.Query{})
	if err != nil {
		return err
	}
	all, err := res.Rest()
	if err != nil {
		return err
	}
	snap := map[ds.Key][]byte{}
	for _, e := range all {
		snap[ds.RawKey(e.Key)] = e.Value
	}
	c.mu.Lock()
	c.synced = snap
	c.mu.Unlock()
	return nil
}

func (c *crashStore) Batch(ctx context.Context) (ds.Batch, error) {
	return &crashBatch{Batch: ds.NewBasicBatch(c.Batching), c: c}, nil
}

type crashBatch struct {
	ds.Batch
	c *crashStore
}

func (b *crashBatch) Commit(ctx context.Context) error {
	if err := b.Batch.Commit(ctx); err != nil {
		return err
	}
	return b.c.Sync(ctx, ds.NewKey("/"))
}

// crash returns the store as a restart after a crash finds it.
func (c *crashStore) crash(t testing.TB) *crashStore {
	c.mu.Lock()
	defer c.mu.Unlock()
	return newCrashStore(t, c.synced)
}

// TestCrashLosesNoSentMessage: a device that crashes right after Do
// returned keeps every op it made and the send chains' positions, so after
// the restart no message is sealed with a chain index already used, and
// every message Do returned reaches the recipient.
func TestCrashLosesNoSentMessage(t *testing.T) {
	c := testnet.NewCA(t)
	b := start(t, c, c.Enrol(t, "b"), false)
	adev := c.Enrol(t, "a")
	adev.Store = newCrashStore(t, nil)
	a := start(t, c, adev, false, b)
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for round := range 3 {
		for i := range 3 {
			text := fmt.Sprintf("round %d message %d", round, i)
			testnet.Send(t, a, id, text)
			want = append(want, text)
		}
		// b holds (and has used the keys of) this round's messages.
		testnet.Eventually(t, 10*time.Second, fmt.Sprintf("b has round %d", round), func() bool { return len(testnet.Texts(b, id)) == len(want) })
		a.Stop()
		adev.Store = adev.Store.(*crashStore).crash(t)
		a = start(t, c, adev, false, b)
	}
	testnet.Send(t, a, id, "after the last crash")
	want = append(want, "after the last crash")
	testnet.Eventually(t, 10*time.Second, "b has every message", func() bool {
		got := testnet.Texts(b, id)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return slices.Equal(got, w)
	})
}

// TestDoFailsWhenStoreCannotSync: an op that cannot be made durable is not
// reported as sent; its writes are kept and saved with the next op.
func TestDoFailsWhenStoreCannotSync(t *testing.T) {
	c := testnet.NewCA(t)
	b := start(t, c, c.Enrol(t, "b"), false)
	adev := c.Enrol(t, "a")
	st := newCrashStore(t, nil)
	adev.Store = st
	a := start(t, c, adev, false, b)
	testnet.Eventually(t, 10*time.Second, "a knows b", func() bool { _, err := a.N.Recipient(b.N.ID(), time.Now()); return err == nil })
	id, err := a.C.Create("t", []peer.ID{b.N.ID()})
	if err != nil {
		t.Fatal(err)
	}
	st.failSync.Store(true)
	op, err := a.C.Send(id, "unsaved", chat.SendOptions{})
	if !errors.Is(err, errSyncFailed) || !op.IsZero() {
		t.Fatalf("Do with a failing sync: op %v, err %v", op, err)
	}
	st.failSync.Store(false)
	testnet.Send(t, a, id, "saved")
	a.Stop()
	adev.Store = st.crash(t)
	a = start(t, c, adev, false, b)
	got := testnet.Texts(a, id)
	slices.Sort(got)
	if !slices.Equal(got, []string{"saved", "unsaved"}) {
		t.Fatalf("after the crash a holds %q", got)
	}
}

// BenchmarkSendPersisted: Do (seal, save, publish) on a device with its
// encrypted pebble store, where every send is made durable before it is
// published; beside the same sends on an in-memory store in the same run.
func BenchmarkSendPersisted(b *testing.B) {
	c := testnet.NewCA(b)
	rate := func(d *testnet.Identity) float64 {
		p := start(b, c, d, false)
		id, err := p.C.Create("bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for range b.N {
			testnet.Send(b, p, id, kib)
		}
		r := float64(b.N) / time.Since(t0).Seconds()
		p.Stop()
		return r
	}
	mem := rate(c.Enrol(b, "mem"))
	d := c.Enrol(b, "disk")
	st, err := store.Open(b.TempDir(), []byte("p"), store.WithKDF(keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d.Store = st
	b.ResetTimer()
	disk := rate(d)
	b.StopTimer()
	b.ReportMetric(disk, "sends/s")
	b.ReportMetric(mem, "mem_sends/s")
	b.ReportMetric(disk/mem, "ratio_vs_mem")
}
