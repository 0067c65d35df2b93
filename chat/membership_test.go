package chat

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
)

func TestNonAdminCannotChangeMembers(t *testing.T) {
	w := newWorld(t)
	alice, bob, eve := w.device("alice"), w.device("bob"), w.device("eve")
	ra, rb := unpack2(w.group("t", alice, bob))
	if _, _, err := split(rb.Add(eve.ID)); !errors.Is(err, ErrNotAuthorised) {
		t.Fatalf("non-admin add refused locally: %v", err)
	}
	// A forged add by bob (bypassing the local check) is rejected by alice.
	env, err := rb.seal(&payload{Kind: kindAdd, Member: []byte(eve.ID)})
	if err != nil {
		t.Fatal(err)
	}
	env.Sign(bob.Key)
	raw, _ := env.Encode()
	if err := ra.Receive(raw); !errors.Is(err, ErrNotAuthorised) {
		t.Fatalf("forged add: %v", err)
	}
	if slices.Contains(ra.State().Members, eve.ID) || slices.Contains(rb.State().Members, eve.ID) {
		t.Fatal("eve became a member")
	}
}

// TestConcurrentAddRemoveRemoveWins: an admin offline re-adds someone
// another admin removed; the removal was not in the add's past, so it wins.
func TestConcurrentAddRemoveRemoveWins(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(bob.ID)))
	deliver(t, p, rb, rc)
	rm, _ := ok(split(ra.Remove(carol.ID))) // alice removes carol
	add, _ := ok(split(rb.Add(carol.ID)))   // bob, offline, "adds" carol concurrently
	deliver(t, rm, rb)
	deliver(t, add, ra)
	for _, r := range []*Replica{ra, rb} {
		if slices.Contains(r.State().Members, carol.ID) {
			t.Fatal("concurrent add beat remove")
		}
	}
	// A deliberate re-add after seeing the removal works.
	re, _ := ok(split(rb.Add(carol.ID)))
	deliver(t, re, ra)
	if !slices.Contains(ra.State().Members, carol.ID) {
		t.Fatal("re-add after the removal ignored")
	}
}

// TestTwoAdminsRemoveConcurrently: each removal's epoch reaches the person
// the other removed; the first to send after seeing both starts a new epoch
// that reaches neither.
func TestTwoAdminsRemoveConcurrently(t *testing.T) {
	w := newWorld(t)
	alice, bob, x, y := w.device("alice"), w.device("bob"), w.device("x"), w.device("y")
	ra, rb, rx, ry := unpack4(w.group("t", alice, bob, x, y))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(bob.ID)))
	deliver(t, p, rb, rx, ry)
	r1, _ := ok(split(ra.Remove(x.ID)))
	r2, _ := ok(split(rb.Remove(y.ID)))
	deliver(t, r2, ra, rx, ry)
	deliver(t, r1, rb, rx, ry)
	msg, _ := ok(split(ra.Send("after both removals", SendOptions{})))
	deliver(t, msg, rb, rx, ry)
	if !slices.Equal(texts(rb.State()), []string{"after both removals"}) {
		t.Fatalf("bob: %q", texts(rb.State()))
	}
	for _, r := range []*Replica{rx, ry} {
		if len(texts(r.State())) != 0 {
			t.Fatalf("a removed member read %q", texts(r.State()))
		}
	}
	checkEpochs(t, ra)
}

// checkEpochs: every valid content op went out in an epoch whose holders
// were all members when it was sent.
func checkEpochs(t *testing.T, r *Replica) {
	t.Helper()
	r.refresh()
	for id, info := range r.ops {
		if !info.valid || info.env.Kind != 1 {
			continue
		}
		members := r.membersOf(info.before).members
		var epochOp *opInfo
		for _, o := range r.ops {
			if o.kind == kindWelcome && o.epoch == info.epoch {
				epochOp = o
			}
		}
		if epochOp == nil {
			t.Fatalf("op %s in an epoch without welcome", id)
		}
		for _, h := range epochOp.holders {
			if !members[h] {
				t.Fatalf("op %s went out in an epoch reaching non-member %s", id, h)
			}
		}
	}
}

func TestLateMemberCannotReadEarlier(t *testing.T) {
	w := newWorld(t)
	alice, bob, dan := w.device("alice"), w.device("bob"), w.device("dan")
	ra, envs := w.create(alice, "t", bob)
	rb := w.join(bob, ra.Tag())
	ok := must[crdt.OpID](t)
	early, _ := ok(split(ra.Send("before dan", SendOptions{})))
	add, _ := ok(split(ra.Add(dan.ID)))
	late, _ := ok(split(ra.Send("after dan", SendOptions{})))
	all := slices.Concat(envs, early, add, late)
	rd := w.join(dan, ra.Tag())
	deliver(t, all, rb, rd)
	if got := texts(rd.State()); !slices.Equal(got, []string{"after dan"}) {
		t.Fatalf("dan reads %q", got)
	}
	if st := rd.State(); st.Title != "t" || len(st.Members) != 3 {
		t.Fatalf("dan's view of membership: %q %v", st.Title, st.Members)
	}
	if !slices.Equal(texts(rb.State()), []string{"before dan", "after dan"}) {
		t.Fatal("bob lost history")
	}
}

// TestForwardSecrecyAfterWindow: once the windows have passed, a device's
// leaked key material — identity, current prekeys, KEM key and its chain
// state — opens none of the old envelopes and welcomes.
func TestForwardSecrecyAfterWindow(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "t", bob)
	ok := must[crdt.OpID](t)
	old, _ := ok(split(ra.Send("old secret", SendOptions{})))
	all := slices.Concat(envs, old)
	rb := w.join(bob, ra.Tag())
	deliver(t, all, rb)
	if !slices.Equal(texts(rb.State()), []string{"old secret"}) {
		t.Fatal("bob could not read in time")
	}
	// Weeks pass: the prekey rotates, and the retired private half is
	// deleted once the window has passed.
	w.now = w.now.Add(8 * 24 * time.Hour)
	bob.Prekeys.Current(w.now)
	w.now = w.now.Add(4 * 7 * 24 * time.Hour)
	rb.Expire(w.now)
	// Without the chain state: the old welcome no longer opens.
	fresh := Join(&Device{Key: bob.Key, ID: bob.ID, Prekeys: bob.Prekeys, CertKEM: bob.CertKEM}, w, ra.Tag(), WithClock(w.clock))
	for _, e := range all {
		fresh.Receive(e)
	}
	if got := texts(fresh.State()); len(got) != 0 {
		t.Fatalf("leaked prekeys opened old messages: %q", got)
	}
	// The attacker takes bob's device state — identity, prekey ring, chain
	// state, control keys (metadata only; see the package doc) — and
	// replays every envelope into a fresh replica built from it.
	attacker := Join(&Device{Key: bob.Key, ID: bob.ID, Prekeys: bob.Prekeys, CertKEM: bob.CertKEM}, w, ra.Tag(), WithClock(w.clock))
	attacker.recv, attacker.send, attacker.control = rb.recv, rb.send, rb.control
	for _, e := range all {
		attacker.Receive(e) // errors expected: keys are gone
	}
	if got := texts(attacker.State()); len(got) != 0 {
		t.Fatalf("leaked keys opened old messages: %q", got)
	}
}
