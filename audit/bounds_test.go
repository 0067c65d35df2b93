package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

// TestTimesOutsideRangeAreClamped: a clock outside [MinTime, MaxTime]
// (far future, before 1970) never reaches an entry: it gets the previous
// entry's time + 1 ns, the log verifies, and once the clock is sane again
// entries carry it.
func TestTimesOutsideRangeAreClamped(t *testing.T) {
	ctx := context.Background()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	now := time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC) // before the range: the first entry gets MinTime
	l, err := Open(ctx, d, fixedKey(4), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	first, err := l.Append(ctx, Event{Kind: Sent})
	if err != nil {
		t.Fatal(err)
	}
	if !first[0].Time.Equal(MinTime) {
		t.Fatalf("first entry at %v, want %v", first[0].Time, MinTime)
	}
	now = t0
	appendN(t, l, 1)
	for _, far := range []time.Time{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), MaxTime.Add(time.Nanosecond), time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)} {
		now = far
		prev := l.Current().Time
		es, err := l.Append(ctx, Event{Kind: Received}, Event{Kind: Read})
		if err != nil {
			t.Fatal(err)
		}
		if want := prev.Add(time.Nanosecond); !es[0].Time.Equal(want) || !es[1].Time.Equal(want.Add(time.Nanosecond)) {
			t.Fatalf("clock at %v: entries at %v, %v; want %v and 1 ns later", far, es[0].Time, es[1].Time, want)
		}
	}
	now = t0.Add(time.Hour)
	es, err := l.Append(ctx, Event{Kind: Locked})
	if err != nil {
		t.Fatal(err)
	}
	if !es[0].Time.Equal(now) {
		t.Fatalf("sane clock again: entry at %v, want %v", es[0].Time, now)
	}
	s, err := NewReader(d, l.Reader.key).Verify(ctx, nil)
	if err != nil {
		t.Fatalf("an honest log with clock jumps does not verify: %v", err)
	}
	if s.Entries != 9 {
		t.Fatalf("%d entries verified, want 9", s.Entries)
	}
	if got, err := l.Since(ctx, t0.Add(time.Minute), 10); err != nil || len(got) != 1 || got[0].Kind != Locked {
		t.Fatalf("paging by time after the jumps: %v, %+v", err, got)
	}
}

// TestOrphanEntriesWithoutHead: with the head deleted, any stored entry
// is found (not only entry 1) and the missing ones are named.
func TestOrphanEntriesWithoutHead(t *testing.T) {
	ctx := context.Background()
	for _, del := range [][]uint64{nil, {1, 2, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
		l, d := newLog(t, fixedKey(5), 10)
		keys := []ds.Key{headKey}
		for _, seq := range del {
			keys = append(keys, entryKey(seq))
		}
		for _, k := range keys {
			if err := d.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		_, err := NewReader(d, l.Reader.key).Verify(ctx, nil)
		var be *BrokenError
		switch {
		case len(del) == 0:
			if !errors.Is(err, ErrBadHead) {
				t.Fatalf("head deleted: %v, want ErrBadHead", err)
			}
		case !errors.As(err, &be) || be.Seq != 1 || !errors.Is(err, ErrMissing):
			t.Fatalf("head and entries %v deleted: %v, want entry 1 missing", del, err)
		}
	}
	// An empty log verifies, empty.
	d := dssync.MutexWrap(ds.NewMapDatastore())
	if s, err := NewReader(d, fixedKey(5).Public().(ed25519.PublicKey)).Verify(ctx, nil); err != nil || s.Entries != 0 {
		t.Fatalf("empty log: %v, %+v", err, s)
	}
}

// TestEntryBeyondHeadFound: an entry stored past the head, not next to
// it, is found too.
func TestEntryBeyondHeadFound(t *testing.T) {
	ctx := context.Background()
	l, d := newLog(t, fixedKey(6), 5)
	if err := d.Put(ctx, entryKey(9), get(t, d, entryKey(2))); err != nil {
		t.Fatal(err)
	}
	_, err := l.Verify(ctx, nil)
	var be *BrokenError
	if !errors.As(err, &be) || be.Seq != 6 || !errors.Is(err, ErrSequence) {
		t.Fatalf("entry 9 stored past head 5: %v", err)
	}
}

// TestBoundID: identifiers up to MaxID pass unchanged; longer ones become
// a fixed-length digest that carries none of their bytes, and the event
// is valid.
func TestBoundID(t *testing.T) {
	short := strings.Repeat("a", MaxID)
	if BoundID(short) != short {
		t.Fatal("an identifier of MaxID bytes was changed")
	}
	long := strings.Repeat("\xfe<script>", 40)
	b := BoundID(long)
	if !strings.HasPrefix(b, DigestPrefix) || len(b) != len(DigestPrefix)+64 || strings.Contains(b, "script") {
		t.Fatalf("BoundID(long) = %q", b)
	}
	if BoundID(long+"x") == b {
		t.Fatal("two identifiers share a digest")
	}
	if !(Event{Kind: MemberRemoved, IDs: IDs{Peer: b}}).Valid() || (Event{Kind: MemberRemoved, IDs: IDs{Peer: long}}).Valid() {
		t.Fatal("Valid disagrees with the limits")
	}
}
