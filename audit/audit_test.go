package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/internal/detcbor"
)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func fixedKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// stepClock advances a second on every reading.
func stepClock() func() time.Time {
	var mu sync.Mutex
	t := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

// newLog makes a log of n events in a fresh in-memory datastore.
func newLog(t *testing.T, key ed25519.PrivateKey, n int) (*Log, ds.Batching) {
	t.Helper()
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l, err := Open(context.Background(), d, key, WithClock(stepClock()))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, n)
	return l, d
}

func appendN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		ev := Event{Kind: Kinds[i%len(Kinds)], IDs: IDs{Conversation: "conv-1", Ops: []string{fmt.Sprintf("op-%d", i)}, Peer: "12D3KooPeer"}}
		if _, err := l.Append(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

func get(t *testing.T, d ds.Batching, k ds.Key) []byte {
	t.Helper()
	v, err := d.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func put(t *testing.T, d ds.Batching, k ds.Key, v []byte) {
	t.Helper()
	if err := d.Put(context.Background(), k, v); err != nil {
		t.Fatal(err)
	}
}

// resealBody re-encodes entry seq's body after f changed it, keeping
// the old signature (sign nil) or signing with sign.
func resealBody(t *testing.T, d ds.Batching, seq uint64, f func(*body), sign ed25519.PrivateKey) {
	t.Helper()
	var r record
	if err := detcbor.Unmarshal(get(t, d, entryKey(seq)), &r, maxRecord); err != nil {
		t.Fatal(err)
	}
	var b body
	if err := detcbor.Unmarshal(r.Body, &b, maxRecord); err != nil {
		t.Fatal(err)
	}
	f(&b)
	raw, err := detcbor.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	r.Body = raw
	if sign != nil {
		r.Sig = ed25519.Sign(sign, sigMessage(hashBody(EntryDomain, raw)))
	}
	rec, err := detcbor.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, entryKey(seq), rec)
}

func TestAppendVerify(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 20)
	s, err := l.Verify(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries != 20 || s.Hash != l.Current().Hash || !s.Last.After(s.First) {
		t.Fatalf("summary %+v, head %+v", s, l.Current())
	}
	// Reopened, the log goes on from its head.
	l2, err := Open(context.Background(), l.d, fixedKey(1), WithClock(stepClock()))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l2, 1)
	if s, err := l2.Verify(context.Background(), nil); err != nil || s.Entries != 21 {
		t.Fatalf("after reopen: %+v, %v", s, err)
	}
}

func TestEmptyLogVerifies(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 0)
	if s, err := l.Verify(context.Background(), nil); err != nil || s.Entries != 0 {
		t.Fatalf("%+v, %v", s, err)
	}
}

// TestTamper is the attacker's view: each change to a log of 10 entries
// is caught, at the entry it touched.
func TestTamper(t *testing.T) {
	key, other := fixedKey(1), fixedKey(2)
	cases := []struct {
		name   string
		tamper func(t *testing.T, d ds.Batching)
		seq    uint64
		reason error
	}{
		{"edit a field, signature kept", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.Kind = string(Deleted) }, nil)
		}, 5, ErrSignature},
		{"edit an ID, signature kept", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.IDs.Peer = "someone else" }, nil)
		}, 5, ErrSignature},
		{"edit the time, signature kept", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.Time-- }, nil)
		}, 5, ErrSignature},
		{"edit, re-signed with another key", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.Kind = string(Deleted) }, other)
		}, 5, ErrSignature},
		{"edit, re-signed with another key that it names", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.Key = other.Public().(ed25519.PublicKey) }, other)
		}, 5, ErrForeign},
		{"edit, re-signed with the device key", func(t *testing.T, d ds.Batching) {
			resealBody(t, d, 5, func(b *body) { b.Kind = string(Deleted) }, key)
		}, 6, ErrChain},
		{"flip a byte of the signature", func(t *testing.T, d ds.Batching) {
			rec := get(t, d, entryKey(5))
			rec[len(rec)-1] ^= 1
			put(t, d, entryKey(5), rec)
		}, 5, ErrSignature},
		{"reorder two entries", func(t *testing.T, d ds.Batching) {
			a, b := get(t, d, entryKey(3)), get(t, d, entryKey(4))
			put(t, d, entryKey(3), b)
			put(t, d, entryKey(4), a)
		}, 3, ErrSequence},
		{"delete a middle entry", func(t *testing.T, d ds.Batching) {
			d.Delete(context.Background(), entryKey(5))
		}, 5, ErrMissing},
		{"delete the last entry", func(t *testing.T, d ds.Batching) {
			d.Delete(context.Background(), entryKey(10))
		}, 10, ErrMissing},
		{"duplicate an entry in place of the next", func(t *testing.T, d ds.Batching) {
			put(t, d, entryKey(6), get(t, d, entryKey(5)))
		}, 6, ErrSequence},
		{"replay another device's entry", func(t *testing.T, d ds.Batching) {
			_, od := newLog(t, other, 10)
			put(t, d, entryKey(5), get(t, od, entryKey(5)))
		}, 5, ErrForeign},
		{"garbage", func(t *testing.T, d ds.Batching) {
			put(t, d, entryKey(7), []byte{0xa1, 0x01})
		}, 7, ErrMalformed},
		{"an entry beyond the head", func(t *testing.T, d ds.Batching) {
			put(t, d, entryKey(11), get(t, d, entryKey(10)))
		}, 11, ErrSequence},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, d := newLog(t, key, 10)
			tc.tamper(t, d)
			_, err := l.Verify(context.Background(), nil)
			var be *BrokenError
			if !errors.As(err, &be) || be.Seq != tc.seq || !errors.Is(err, tc.reason) {
				t.Fatalf("got %v, want entry %d: %v", err, tc.seq, tc.reason)
			}
		})
	}
}

func TestHeadTamper(t *testing.T) {
	t.Run("head deleted", func(t *testing.T) {
		l, d := newLog(t, fixedKey(1), 5)
		d.Delete(context.Background(), headKey)
		if _, err := l.Verify(context.Background(), nil); !errors.Is(err, ErrBadHead) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("head of another device", func(t *testing.T) {
		l, d := newLog(t, fixedKey(1), 5)
		_, od := newLog(t, fixedKey(2), 5)
		put(t, d, headKey, get(t, od, headKey))
		if _, err := l.Verify(context.Background(), nil); !errors.Is(err, ErrBadHead) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tail cut, head lowered without the key", func(t *testing.T) {
		l, d := newLog(t, fixedKey(1), 10)
		for seq := uint64(8); seq <= 10; seq++ {
			d.Delete(context.Background(), entryKey(seq))
		}
		_, hrec, _ := signHead(fixedKey(2), 7, [32]byte{}, [32]byte{}, t0)
		put(t, d, headKey, hrec)
		if _, err := l.Verify(context.Background(), nil); !errors.Is(err, ErrBadHead) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestTruncationAgainstExportedHead: someone holding the device key cuts
// the tail and signs a new head; only a head kept elsewhere shows it.
func TestTruncationAgainstExportedHead(t *testing.T) {
	key := fixedKey(1)
	l, d := newLog(t, key, 10)
	file, err := MarshalHead(l.Current(), "12D3KooPeer")
	if err != nil {
		t.Fatal(err)
	}
	ext, err := ParseHead(file, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Verify(context.Background(), &ext); err != nil {
		t.Fatalf("intact log against its own head: %v", err)
	}
	e7, err := l.Entry(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(8); seq <= 10; seq++ {
		d.Delete(context.Background(), entryKey(seq))
	}
	root7, _ := l.Root(context.Background(), 7)
	_, hrec, err := signHead(key, 7, e7.Hash, root7, e7.Time)
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, headKey, hrec)
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatalf("without a head kept elsewhere the cut is invisible, yet: %v", err)
	}
	_, err = l.Verify(context.Background(), &ext)
	var be *BrokenError
	if !errors.As(err, &be) || be.Seq != 8 || !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want entry 8 truncated", err)
	}

	// The tail cut and rewritten from entry 8 on: same length, other entries.
	l2, d2 := newLog(t, key, 10)
	ext2 := l2.Current()
	for seq := uint64(8); seq <= 10; seq++ {
		d2.Delete(context.Background(), entryKey(seq))
	}
	e7, _ = l2.Entry(context.Background(), 7)
	root7, _ = l2.Root(context.Background(), 7)
	_, hrec, _ = signHead(key, 7, e7.Hash, root7, e7.Time)
	put(t, d2, headKey, hrec)
	l3, err := Open(context.Background(), d2, key, WithClock(func() time.Time { return t0.Add(time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l3, 3)
	_, err = l3.Verify(context.Background(), &ext2)
	if !errors.As(err, &be) || be.Seq != 10 || !errors.Is(err, ErrHeadMismatch) {
		t.Fatalf("rewritten tail: got %v, want entry 10 head mismatch", err)
	}
}

func TestParseHead(t *testing.T) {
	key := fixedKey(1)
	l, _ := newLog(t, key, 3)
	file, err := MarshalHead(l.Current(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseHead(file, fixedKey(2).Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadHead) {
		t.Fatalf("another device's key: %v", err)
	}
	bad := bytes.Replace(file, []byte(`"seq": 3`), []byte(`"seq": 9`), 1)
	if _, err := ParseHead(bad, key.Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadHead) {
		t.Fatalf("fields changed: %v", err)
	}
	if _, err := ParseHead([]byte("{"), key.Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadHead) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestTimesIncreaseWhenTheClockGoesBack(t *testing.T) {
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l, err := Open(context.Background(), d, fixedKey(1), WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 5)
	if _, err := l.Verify(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestSincePages(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 10)
	var seen []uint64
	since := time.Time{}
	for range 10 {
		page, err := l.Since(context.Background(), since, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seen = append(seen, e.Seq)
		}
		since = page[len(page)-1].Time
	}
	if len(seen) != 10 || seen[0] != 1 || seen[9] != 10 {
		t.Fatalf("pages gave %v", seen)
	}
	// Entry 1 is at t0+1s, entry 5 at t0+5s.
	page, err := l.Since(context.Background(), t0.Add(4*time.Second), 100)
	if err != nil || len(page) != 6 || page[0].Seq != 5 {
		t.Fatalf("since t0+4s: %d entries, %v", len(page), err)
	}
}

func TestInvalidEvent(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 0)
	for _, ev := range []Event{
		{Kind: "chat"},
		{Kind: Sent, IDs: IDs{Ops: make([]string, MaxOps+1)}},
		{Kind: Sent, IDs: IDs{Peer: string(make([]byte, MaxID+1))}},
	} {
		if _, err := l.Append(context.Background(), ev); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v", ev.Kind, err)
		}
	}
}

func TestConcurrentAppends(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 0)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := l.Append(context.Background(), Event{Kind: Read, IDs: IDs{Conversation: "c"}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s, err := l.Verify(context.Background(), nil)
	if err != nil || s.Entries != workers*each {
		t.Fatalf("%+v, %v", s, err)
	}
}

func TestAppendSeveral(t *testing.T) {
	l, _ := newLog(t, fixedKey(1), 2)
	es, err := l.Append(context.Background(), Event{Kind: Sent}, Event{Kind: Read}, Event{Kind: Locked})
	if err != nil || len(es) != 3 || es[0].Seq != 3 || es[2].Seq != 5 || es[1].Prev != es[0].Hash {
		t.Fatalf("%v, %v", es, err)
	}
	if _, err := l.Append(context.Background(), Event{Kind: Sent}, Event{Kind: "nope"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("one invalid event: %v", err)
	}
	if s, err := l.Verify(context.Background(), nil); err != nil || s.Entries != 5 {
		t.Fatalf("%+v, %v", s, err)
	}
}
