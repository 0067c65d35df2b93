package audit

// Red-team round 6: verification of the stored log.

import (
	"context"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

// TestRedteam6HeadAndFirstEntryDeletedVerifiesClean
//
// Attack: someone who can write the device's store (at rest: the raw
// records, told apart by diffing two copies — the head is the one value
// rewritten on every append, entry 1 the first audit record ever written;
// no device key needed) deletes the head and entry 1 and leaves entries
// 2..N in place.
//
// Impact: Verify, finding no head, only looks for entry 1; finding none
// it reports a clean, empty log ("0 entries verify") although N-1 signed
// entries of this device are still there, proving the log existed. The
// deletion is neither detected nor named without a head kept elsewhere —
// though the store itself shows it.
func TestRedteam6HeadAndFirstEntryDeletedVerifiesClean(t *testing.T) {
	l, d := newLog(t, fixedKey(1), 10)
	ctx := context.Background()
	for _, k := range []ds.Key{headKey, entryKey(1)} {
		if err := d.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := NewReader(d, l.Reader.key).Verify(ctx, nil); err == nil {
		t.Fatalf("head and entry 1 deleted, entries 2..10 present: verifies clean (%d entries)", s.Entries)
	}
}

// TestRedteam6FarFutureClockBreaksChain
//
// Attack: the device's clock is pushed past 2262-04-11 (a spoofed network
// time, a user fiddling with settings: "clocks lie on phones"). Entry and
// head times are int64 Unix nanoseconds; time.Time.UnixNano is undefined
// past that date and in practice wraps to 1677.
//
// Impact: Append compares time.Time values (2300 is after 2026, so no
// correction), but stores the wrapped value; the honest log then fails
// its own verification ("entry time not after the one before it") — a
// false tamper alarm on every audit verify from then on, which also lets
// a real tamper hide among "known clock problems" — and the since-paging
// of export and GET /api/v1/audit (binary search on time) goes wrong.
func TestRedteam6FarFutureClockBreaksChain(t *testing.T) {
	d := dssync.MutexWrap(ds.NewMapDatastore())
	now := t0
	l, err := Open(context.Background(), d, fixedKey(2), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 2)
	now = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	appendN(t, l, 2)
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatalf("an honest log, written by this package, does not verify: %v", err)
	}
}
