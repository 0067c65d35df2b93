package mesh

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestInflightClaims: two sessions needing the same ops fetch each once —
// the second leaves to the first what it is fetching and counts it — and
// once the first is done, a later claim takes what is still not held.
func TestInflightClaims(t *testing.T) {
	var f inflight
	tag := []byte("0123456789abcdef")
	need := randomIDs(rand.New(rand.NewPCG(5, 5)), 10)
	first, others, release1 := f.claim(tag, need, nil)
	if len(first) != 10 || others != 0 {
		t.Fatalf("first claim took %d, left %d", len(first), others)
	}
	second, others, release2 := f.claim(tag, need, nil)
	if len(second) != 0 || others != 10 {
		t.Fatalf("second claim took %d, left %d to the first", len(second), others)
	}
	release2()
	if got, _, release := f.claim(tag, need, nil); len(got) != 0 {
		release()
		t.Fatalf("a release of nothing freed %d", len(got))
	} else {
		release()
	}
	release1() // applied 4 of them
	third, others, release3 := f.claim(tag, need, need[:4])
	defer release3()
	if !slices.Equal(third, need[4:]) || others != 0 {
		t.Fatalf("after the first: took %d, left %d; want the 6 not held", len(third), others)
	}
	other, _, release4 := f.claim([]byte("fedcba9876543210"), need, nil)
	defer release4()
	if len(other) != 10 {
		t.Fatalf("another tag's claim took %d", len(other))
	}
}

// TestInflightClaimLapses: a claim not renewed within claimTTL is taken
// over; a renewed one is not; a release wakes whoever waits on it.
func TestInflightClaimLapses(t *testing.T) {
	var f inflight
	tag := []byte("0123456789abcdef")
	need := randomIDs(rand.New(rand.NewPCG(6, 6)), 4)
	now := time.Unix(1_000_000, 0)
	stall, live := f.open(tag, now), f.open(tag, now)
	if got, _, _, _ := f.take(stall, need[:2], nil, now); len(got) != 2 {
		t.Fatalf("first claim took %d", len(got))
	}
	if got, _, _, _ := f.take(live, need[2:], nil, now); len(got) != 2 {
		t.Fatalf("second claim took %d", len(got))
	}
	later := now.Add(claimTTL - time.Second)
	f.renew(live, later)
	c := f.open(tag, later)
	mine, busy, wake, changed := f.take(c, need, nil, later)
	if len(mine) != 0 || len(busy) != 4 || !wake.Equal(now.Add(claimTTL)) {
		t.Fatalf("before the lapse: took %d, busy %d, wake %v", len(mine), len(busy), wake)
	}
	lapsed := now.Add(claimTTL + time.Second)
	mine, busy, _, _ = f.take(c, busy, nil, lapsed)
	if !slices.Equal(mine, need[:2]) || !slices.Equal(busy, need[2:]) {
		t.Fatalf("after the lapse: took %d, busy %d; want the stalled claim's 2 taken over, the renewed 2 left", len(mine), len(busy))
	}
	f.release(stall) // taken over: must not free c's claims
	f.renew(c, lapsed)
	d := f.open(tag, lapsed)
	if got, others, _, _ := f.take(d, need[:2], nil, lapsed); len(got) != 0 || len(others) != 2 {
		t.Fatalf("a lapsed owner's release freed %d of the claims taken over", len(got))
	}
	f.release(d)
	f.release(live)
	select {
	case <-changed:
	default:
		t.Fatal("a release did not wake a waiter")
	}
	f.release(c)
}
