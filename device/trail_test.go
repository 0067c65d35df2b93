package device

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/audit"
)

// stuckStore is a datastore whose batches wait for release, or fail.
type stuckStore struct {
	ds.Batching
	release chan struct{}
	fail    atomic.Bool
}

func (s *stuckStore) Batch(ctx context.Context) (ds.Batch, error) {
	<-s.release
	if s.fail.Load() {
		return nil, errors.New("disk full")
	}
	return s.Batching.Batch(ctx)
}

func newStuckTrail(t *testing.T) (*Trail, *stuckStore) {
	t.Helper()
	st := &stuckStore{Batching: dssync.MutexWrap(ds.NewMapDatastore()), release: make(chan struct{})}
	l, err := audit.Open(context.Background(), st, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	tr := startTrail(l, func(string, ...any) {})
	t.Cleanup(tr.close)
	return tr, st
}

// TestTrailNeverBlocks: with the store stuck, recording returns at once;
// what does not fit the queue is dropped and counted; once the store
// moves, the rest is written.
func TestTrailNeverBlocks(t *testing.T) {
	tr, st := newStuckTrail(t)
	// More than the queue and what the writer holds; Record would hang
	// here if it waited for the store.
	const n = 2 * AuditQueue
	for range n {
		tr.Record(audit.Event{Kind: audit.Received, IDs: audit.IDs{Conversation: "c"}})
	}
	close(st.release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := tr.Stats()
	if s.Dropped == 0 || s.Entries+s.Dropped != n || s.Failed != 0 {
		t.Fatalf("stats %+v, recorded %d", s, n)
	}
	if _, err := tr.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// TestTrailCountsFailures: an append the store refuses is counted, with
// its error in the stats, and recording goes on.
func TestTrailCountsFailures(t *testing.T) {
	tr, st := newStuckTrail(t)
	st.fail.Store(true)
	close(st.release)
	tr.Record(audit.Event{Kind: audit.Sent}, audit.Event{Kind: audit.Read})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := tr.Stats(); s.Failed != 2 || s.LastError == "" || s.Entries != 0 {
		t.Fatalf("stats %+v", s)
	}
	st.fail.Store(false)
	tr.Record(audit.Event{Kind: audit.Sent})
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := tr.Stats(); s.Entries != 1 {
		t.Fatalf("after the store recovered: %+v", s)
	}
}

// TestTrailEnds: after the wipe's entry nothing more is written.
func TestTrailEnds(t *testing.T) {
	tr, st := newStuckTrail(t)
	close(st.release)
	tr.Record(audit.Event{Kind: audit.Received})
	tr.end(audit.Event{Kind: audit.Wiped})
	tr.Record(audit.Event{Kind: audit.Received})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr.Flush(ctx)
	es, err := tr.Since(ctx, time.Time{}, 10)
	if err != nil || len(es) != 2 || es[1].Kind != audit.Wiped {
		t.Fatalf("%v, %v", kindsOf(es), err)
	}
}

func kindsOf(es []audit.Entry) []audit.Kind {
	var out []audit.Kind
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

// TestTrailRefusesOneInvalidEventAlone: an invalid event among valid ones
// is refused and counted; the others are written.
func TestTrailRefusesOneInvalidEventAlone(t *testing.T) {
	tr, st := newStuckTrail(t)
	close(st.release)
	tr.Record(audit.Event{Kind: audit.Received, IDs: audit.IDs{Conversation: "c"}},
		audit.Event{Kind: audit.MemberRemoved, IDs: audit.IDs{Peer: string(bytes.Repeat([]byte{0xfe}, audit.MaxID+1))}},
		audit.Event{Kind: "nope"},
		audit.Event{Kind: audit.Sent, IDs: audit.IDs{Conversation: "c"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := tr.Stats(); s.Entries != 2 || s.Refused != 2 || s.Failed != 0 {
		t.Fatalf("stats %+v, want 2 entries, 2 refused", s)
	}
}
