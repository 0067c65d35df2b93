package chat

import "testing"

// heals runs Heal on each replica and returns the envelopes and how many
// devices made any.
func heals(t *testing.T, rs ...*Replica) ([][]byte, int) {
	t.Helper()
	var envs [][]byte
	n := 0
	for _, r := range rs {
		o, err := r.Heal()
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Envelopes) > 0 {
			n++
			envs = append(envs, o.Envelopes...)
		}
	}
	return envs, n
}

// An admin's removal arrives before the welcome it made at once (gossip
// carries each op alone): nobody heals — the welcome is on its way — and
// once it arrives there is an epoch in use. A quiet, settled conversation
// never heals.
func TestHealWaitsForTheAdminsOwnRekey(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	if _, n := heals(t, ra, rb, rc); n != 0 {
		t.Fatalf("%d devices healed a settled conversation", n)
	}
	rem := ok2(t)(ra.Remove(carol.ID))
	if len(rem) < 2 {
		t.Fatalf("a removal made %d envelopes, want the removal and its welcome", len(rem))
	}
	deliver(t, rem[:1], rb)
	if _, n := heals(t, rb); n != 0 {
		t.Fatal("bob rekeyed while alice's welcome was on its way")
	}
	deliver(t, rem[1:], rb)
	if _, n := heals(t, ra, rb); n != 0 {
		t.Fatal("a device healed after the admin's own rekey arrived")
	}
	if len(rb.headView().epochs) == 0 {
		t.Fatal("no epoch in use after the removal and its welcome")
	}
}

// A member leaves and nobody sends: the one designated device rekeys, so
// the member who left holds no key of what comes next, and every
// replica then agrees nothing more is owed.
func TestHealAfterALeave(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("ward", alice, bob, carol))
	leave := ok2(t)(rc.Leave())
	deliver(t, leave, ra, rb)
	healed, n := heals(t, ra, rb)
	if n != 1 {
		t.Fatalf("%d devices healed after a leave, want one", n)
	}
	deliver(t, healed, ra, rb, rc)
	if _, n := heals(t, ra, rb); n != 0 {
		t.Fatal("healed twice")
	}
	for _, r := range []*Replica{ra, rb} {
		if len(r.headView().epochs) == 0 {
			t.Fatal("no epoch in use after the heal")
		}
	}
	// The member who left cannot read what is sent next.
	msg := ok2(t)(ra.Send("after carol left", SendOptions{}))
	deliver(t, msg, rb, rc)
	for _, m := range rc.State().Messages {
		if m.Text == "after carol left" {
			t.Fatal("the member who left reads a message sent after the heal")
		}
	}
}
