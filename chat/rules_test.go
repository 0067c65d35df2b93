package chat

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// TestClockTwoHoursAhead: bob's phone runs two hours fast. The conversation
// keeps its real order on every replica, his message is flagged, and the
// honest replicas' clocks are not dragged forward.
func TestClockTwoHoursAhead(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, envs := w.create(alice, "t", bob, carol)
	bobNow := func() time.Time { return w.now.Add(2 * time.Hour) }
	rb := Join(bob, w, ra.Tag(), WithClock(bobNow))
	rc := w.join(carol, ra.Tag())
	deliver(t, envs, rb, rc)
	ok := must[crdt.OpID](t)
	e1, _ := ok(split(ra.Send("1 alice", SendOptions{})))
	deliver(t, e1, rb, rc)
	w.now = w.now.Add(time.Minute)
	e2, _ := ok(split(rb.Send("2 bob (clock +2h)", SendOptions{})))
	deliver(t, e2, ra, rc)
	w.now = w.now.Add(time.Minute)
	e3, _ := ok(split(rc.Send("3 carol", SendOptions{})))
	w.now = w.now.Add(time.Minute)
	e4, _ := ok(split(ra.Send("4 alice", SendOptions{})))
	deliver(t, slices.Concat(e3, e4), ra, rb, rc)
	want := []string{"1 alice", "2 bob (clock +2h)", "3 carol", "4 alice"}
	for _, r := range []*Replica{ra, rb, rc} {
		if got := texts(r.State()); !slices.Equal(got, want) {
			t.Fatalf("order %q, want %q", got, want)
		}
	}
	if !ra.State().Messages[1].Skewed || ra.State().Messages[2].Skewed {
		t.Fatal("skew flag wrong")
	}
	if got := ra.clock.Now().Time(); got.After(w.now.Add(time.Minute)) {
		t.Fatalf("alice's clock dragged to %v (now %v)", got, w.now)
	}
}

// TestRevokedSender: after the CRL, a stolen key's ops stand only where an
// honest member's op depends on them (automatic receipts endorse what was
// seen before the revocation); backdated ops injected later do not.
func TestRevokedSender(t *testing.T) {
	w := newWorld(t)
	alice, bob, thief := w.device("alice"), w.device("bob"), w.device("lost-phone")
	ra, rb, rt := unpack3(w.group("t", alice, bob, thief))
	ok := must[crdt.OpID](t)
	seen, m1 := ok(split(rt.Send("sent before the phone was lost", SendOptions{})))
	deliver(t, seen, ra, rb)
	rc, _ := ok(split(rb.Receipt(Delivered, m1))) // bob's receipt endorses it
	deliver(t, rc, ra)
	// The phone is stolen; the thief writes a backdated message no honest
	// member has seen.
	w.now = w.now.Add(-time.Hour)
	forged, _ := ok(split(rt.Send("backdated by the thief", SendOptions{})))
	w.now = w.now.Add(2 * time.Hour)
	revoked := func(p peer.ID) bool { return p == thief.ID }
	for _, r := range []*Replica{ra, rb} {
		r.SetRevoked(revoked)
		deliver(t, forged, r)
		if got := texts(r.State()); !slices.Equal(got, []string{"sent before the phone was lost"}) {
			t.Fatalf("after revocation: %q", got)
		}
	}
}

func TestRetention(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	rb := w.join(bob, ra.Tag())
	ok := must[crdt.OpID](t)
	ret, _ := ok(split(ra.SetRetention(24 * time.Hour)))
	old, oldID := ok(split(ra.Send("old", SendOptions{})))
	w.now = w.now.Add(30 * time.Hour)
	fresh, _ := ok(split(ra.Send("fresh", SendOptions{})))
	all := slices.Concat(envs, ret, old, fresh)
	deliver(t, all, rb)
	for _, r := range []*Replica{ra, rb} {
		if n := r.Expire(w.now); n != 1 {
			t.Fatalf("expired %d", n)
		}
		st := r.State()
		if !slices.Equal(texts(st), []string{"fresh"}) {
			t.Fatalf("after retention: %+v", texts(st))
		}
		if _, ok := r.Envelope(oldID); ok {
			t.Fatal("expired envelope still served")
		}
		if !slices.Contains(r.IDs(), oldID) {
			t.Fatal("expired op ID dropped: sync would fetch it again")
		}
		// The header kept for causality holds nothing of the encoding
		// (Share points sender, deps and signature into it): the whole
		// buffer, ciphertext included, would stay alive with it.
		e := r.ops[oldID].env
		if e.Body != nil {
			t.Fatal("expired op's body kept")
		}
		for f, b := range map[string][]byte{"sender": e.Sender, "signature": e.Sig, "dependency": e.Deps[0]} {
			if inside(b, old[0]) {
				t.Errorf("expired op's kept %s still points into its encoding", f)
			}
		}
		if err := r.Receive(old[0]); err == nil {
			t.Fatal("expired op accepted again")
		}
	}
}

// inside reports whether s's bytes lie in buf's backing array.
func inside(s, buf []byte) bool {
	if len(s) == 0 || len(buf) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(&s[0])), uintptr(unsafe.Pointer(&buf[0]))
	return p >= lo && p < lo+uintptr(cap(buf))
}

// TestRetentionAppliesFromItsSetting: a setting reaches only messages
// sent after it (in its causal future): history written before stays,
// and a later, longer setting does not stretch what was sent under the
// shorter one.
func TestRetentionAppliesFromItsSetting(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	rb := w.join(bob, ra.Tag())
	ok := must[crdt.OpID](t)
	before, _ := ok(split(ra.Send("before any setting", SendOptions{})))
	short, _ := ok(split(ra.SetRetention(time.Hour)))
	under, _ := ok(split(ra.Send("under one hour", SendOptions{})))
	long, _ := ok(split(ra.SetRetention(30 * 24 * time.Hour)))
	later, _ := ok(split(ra.Send("under thirty days", SendOptions{})))
	deliver(t, slices.Concat(envs, before, short, under, long, later), rb)
	w.now = w.now.Add(2 * time.Hour)
	for _, r := range []*Replica{ra, rb} {
		if n := r.Expire(w.now); n != 1 {
			t.Fatalf("expired %d, want 1", n)
		}
		if got := texts(r.State()); !slices.Equal(got, []string{"before any setting", "under thirty days"}) {
			t.Fatalf("after two hours: %q", got)
		}
	}
}

func TestBadInput(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	other, oenvs := w.create(alice, "other", bob)
	_ = other
	e1, _, _ := split(ra.Send("hello", SendOptions{}))
	tampered := bytes.Clone(e1[0])
	tampered[len(tampered)/2] ^= 1
	for name, in := range map[string][]byte{
		"garbage":            []byte("garbage"),
		"tampered":           tampered,
		"other conversation": oenvs[1],
		"truncated":          e1[0][:len(e1[0])-5],
	} {
		if err := rb.Receive(in); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, _, err := split(ra.Send(string(make([]byte, MaxText+1)), SendOptions{})); err == nil {
		t.Error("oversized text accepted")
	}
	// An op whose deps never arrive waits, bounded, and is reported missing.
	deliver(t, e1, rb)
	if len(rb.Missing()) != 0 {
		t.Fatal("unexpected missing deps")
	}
	_ = sha256.Sum256
}

// FuzzReceive: arbitrary bytes never panic a replica nor change its state.
func FuzzReceive(f *testing.F) {
	w := newWorld(f)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	msg, _, _ := split(ra.Send("hi", SendOptions{}))
	for _, e := range append(envs, msg...) {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := texts(ra.State())
		_ = ra.Receive(data)
		if after := texts(ra.State()); !slices.Equal(before, after) {
			t.Fatalf("unsigned bytes changed the conversation: %q", after)
		}
	})
}

// FuzzOps applies arbitrary sequences of valid ops, delivered in the order
// the fuzzer picks, to a second replica: it must end where the author is.
func FuzzOps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 40 {
			return
		}
		w := newWorld(t)
		alice, bob := w.device("alice"), w.device("bob")
		ra, envs := w.create(alice, "t", bob)
		var pool [][]byte
		pool = append(pool, envs...)
		var last crdt.OpID
		for _, b := range prog {
			var out [][]byte
			var id crdt.OpID
			switch b % 6 {
			case 0:
				out, id, _ = split(ra.Send("m", SendOptions{ReplyTo: last}))
			case 1:
				out, id, _ = split(ra.Edit(last, "e"))
			case 2:
				out, id, _ = split(ra.React(last, "x"))
			case 3:
				out, id, _ = split(ra.Delete(last))
			case 4:
				out, id, _ = split(ra.Receipt(int(b%3)+1, last))
			case 5:
				out, id, _ = split(ra.Unreact(last, "x"))
			}
			if b%6 == 0 && !id.IsZero() {
				last = id
			}
			pool = append(pool, out...)
		}
		rb := w.join(bob, ra.Tag())
		for i := len(pool) - 1; i >= 0; i-- { // worst order: newest first
			rb.Receive(pool[i])
		}
		if !reflectEqual(canon(ra.State()), canon(rb.State())) {
			t.Fatal("replicas diverged")
		}
	})
}

func TestLeave(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	l, _ := ok(split(rc.Leave()))
	deliver(t, l, ra, rb)
	m, _ := ok(split(ra.Send("after carol left", SendOptions{})))
	deliver(t, m, rb, rc)
	if slices.Contains(rb.State().Members, carol.ID) || len(texts(rc.State())) != 0 {
		t.Fatalf("leave: members %v, carol reads %q", rb.State().Members, texts(rc.State()))
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte{0xa1, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePayload(data)
		if err != nil {
			return
		}
		if p.check() != nil {
			t.Fatal("decoded payload fails its own check")
		}
	})
}
