package chat

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// The tests in this file play a hostile member, each named after the
// attack it stops (issue "Group keys and membership that hold against
// removed and malicious members").

// forgeWelcome is a hostile member's own welcome at its replica's heads:
// its secret sealed to holders (public list as given), stamped back in
// time, with the attacker keeping every chain it can derive.
func forgeWelcome(t testing.TB, h *Replica, holders []peer.ID, back time.Duration) []byte {
	t.Helper()
	secret := e2e.NewSecret()
	env := h.newEnvelope()
	env.Wall -= back.Milliseconds()
	keys := e2e.EpochKeys{Conv: h.conv[:], Creator: []byte(h.creator)}
	var to []e2e.Recipient
	for _, m := range holders {
		if m == h.dev.ID {
			continue
		}
		rc, err := h.dir.Recipient(m, h.now())
		if err != nil {
			t.Fatal(err)
		}
		to = append(to, rc)
	}
	if err := e2e.SealWelcome(env, secret, keys, holders, to); err != nil {
		t.Fatal(err)
	}
	raw, err := h.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	h.installSecret(e2e.EpochID(e2e.ID(raw)), secret, append(slices.Clone(holders), h.dev.ID))
	h.ingest(env, raw)
	return raw
}

// sealRaw is a content op of h in epoch ep at chain index i with the given
// body (sealed under chain if given, else garbage), signed.
func sealRaw(t testing.TB, h *Replica, ep e2e.EpochID, chain *e2e.SendChain, text string, index uint32) []byte {
	t.Helper()
	env := h.newEnvelope()
	if chain != nil {
		pt, _ := detcbor.Marshal(&payload{Kind: kindText, Text: text})
		if err := e2e.SealContent(env, chain, pt); err != nil {
			t.Fatal(err)
		}
	} else {
		env.Kind, env.Epoch, env.Index, env.Body = e2e.KindContent, ep[:], index, bytes.Repeat([]byte{7}, 64)
	}
	raw, err := h.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// opens reports which of envs the key material of replica h opens,
// ignoring every rule: what the attacker can read from all it holds.
func opens(h *Replica, envs [][]byte) []string {
	var out []string
	for _, raw := range envs {
		e, err := e2e.Decode(raw)
		if err != nil || e.Kind == e2e.KindWelcome {
			continue
		}
		ep, _ := e2e.EpochIDFromBytes(e.Epoch)
		var pt []byte
		if e.Kind == e2e.KindContent {
			pt, err = e2e.OpenContent(e, h.recv, h.now())
		} else if key, ok := h.control[ep]; ok {
			pt, err = e2e.OpenControl(e, key)
		} else {
			continue
		}
		if err != nil {
			continue
		}
		if p, err := decodePayload(pt); err == nil && p.Text != "" {
			out = append(out, p.Text)
		}
	}
	return out
}

// TestRemovedMemberTakesOverEpoch: after the admin removes M and rekeys, M
// publishes its own welcome from before its removal, naming exactly the
// remaining members, stamped later than the rekey. It is void: nobody uses
// its epoch, and M reads nothing written after its removal.
func TestRemovedMemberTakesOverEpoch(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol, mal := w.device("alice"), w.device("bob"), w.device("carol"), w.device("mallory")
	ra, rb, rc, rm := unpack4(w.group("t", alice, bob, carol, mal))
	ok := must[crdt.OpID](t)
	w.now = w.now.Add(time.Minute)
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb, rc)
	w.now = w.now.Add(time.Minute)
	forged := forgeWelcome(t, rm, []peer.ID{alice.ID, bob.ID, carol.ID}, -time.Hour) // stamped an hour later
	for _, r := range []*Replica{ra, rb, rc} {
		r.Receive(forged)
	}
	var after [][]byte
	for i, r := range []*Replica{ra, rb, rc} {
		out, _ := ok(split(r.Send("after the removal "+string(rune('a'+i)), SendOptions{})))
		after = append(after, out...)
	}
	deliver(t, after, ra, rb, rc)
	for _, r := range []*Replica{ra, rb, rc} {
		if got := texts(r.State()); len(got) != 3 {
			t.Fatalf("honest members read %q", got)
		}
		if info := r.ops[idOf(forged)]; info == nil || info.valid {
			t.Fatal("forged welcome judged valid")
		}
	}
	deliver(t, slices.Concat(rmv, after), rm)
	if got := opens(rm, after); len(got) != 0 {
		t.Fatalf("removed member reads %q", got)
	}
}

// TestEpochPoisoning: a removed member seals its own secret to one
// remaining member only. Its keys are never used by that member; epochs
// are named by welcome op IDs, so nothing can collide with the rekey that
// excluded it.
func TestEpochPoisoning(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	poison := forgeWelcome(t, rm, []peer.ID{bob.ID, mal.ID}, 0) // before its removal reaches it
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, [][]byte{poison}, rb) // bob sees the poison first
	deliver(t, rmv, rb)
	deliver(t, [][]byte{poison}, ra)
	out, _ := ok(split(rb.Send("bob, after the removal", SendOptions{})))
	deliver(t, out, ra)
	if got := texts(ra.State()); !slices.Equal(got, []string{"bob, after the removal"}) {
		t.Fatalf("alice reads %q", got)
	}
	if got := opens(rm, out); len(got) != 0 {
		t.Fatalf("removed member reads %q", got)
	}
	if rb.recv.HasEpoch(e2e.EpochID(idOf(poison))) {
		t.Fatal("bob kept the keys of an unauthorised welcome")
	}
}

// TestRemovedAdminBackdating: a removed admin removes the creator in an op
// concurrent with its own removal, stamped a day earlier. The creator's
// removal of it stands (seniority), its change is void, and the group keeps
// an admin; its later posts in the old epoch are void too.
func TestRemovedAdminBackdating(t *testing.T) {
	w := newWorld(t)
	alice, bob, xav := w.device("alice"), w.device("bob"), w.device("xavier")
	ra, rb, rx := unpack3(w.group("t", alice, bob, xav))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(xav.ID)))
	deliver(t, p, rb, rx)
	base := w.history(ra)
	rmv, _ := ok(split(ra.Remove(xav.ID)))
	rx.clock = crdt.NewClock(func() time.Time { return w.now.Add(-24 * time.Hour) })
	if _, _, err := split(rx.Remove(alice.ID)); !errors.Is(err, ErrNotAuthorised) {
		t.Fatalf("a junior admin removing the creator: %v", err)
	}
	coup := forge(t, rx, &payload{Kind: kindRemove, Member: []byte(alice.ID)})
	post, _ := ok(split(rx.Send("still here", SendOptions{})))
	for _, order := range [][][]byte{slices.Concat(rmv, coup, post), slices.Concat(coup, post, rmv)} {
		r := w.join(bob, ra.Tag())
		deliver(t, slices.Concat(base, order), r)
		st := r.State()
		if !slices.Equal(st.Admins, []peer.ID{alice.ID}) || slices.Contains(st.Members, xav.ID) {
			t.Fatalf("admins %v members %v", st.Admins, st.Members)
		}
		for _, m := range st.Messages {
			if m.Text != "" || m.Withdrawn == "" {
				t.Fatalf("removed admin's post shows: %+v", m)
			}
		}
	}
}

// forge is an op a hostile device makes without its own replica's checks.
func forge(t testing.TB, h *Replica, p *payload) [][]byte {
	t.Helper()
	env, err := h.seal(p)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := h.finish(env)
	return [][]byte{raw}
}

// history is every envelope a replica holds, in causal order.
func (w *world) history(r *Replica) [][]byte {
	var out [][]byte
	for _, id := range r.dag.Order() {
		if raw, ok := r.Envelope(id); ok {
			out = append(out, raw)
		}
	}
	return out
}

// TestTwoAdminsRemoveEachOther: concurrent mutual removal — the senior
// admin's removal stands, on every replica whatever the order.
func TestTwoAdminsRemoveEachOther(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(bob.ID)))
	deliver(t, p, rb, rc)
	r1, _ := ok(split(ra.Remove(bob.ID)))
	r2 := forge(t, rb, &payload{Kind: kindRemove, Member: []byte(alice.ID)}) // refused locally: bob is junior
	deliver(t, slices.Concat(r2, r1), rc)
	deliver(t, r2, ra)
	deliver(t, r1, rb)
	for _, r := range []*Replica{ra, rb, rc} {
		st := r.State()
		if !slices.Equal(st.Admins, []peer.ID{alice.ID}) || slices.Contains(st.Members, bob.ID) || !slices.Contains(st.Members, alice.ID) {
			t.Fatalf("admins %v members %v", st.Admins, st.Members)
		}
	}
}

// TestEquivocation: a member seals "10 mg" and "100 mg" under one message
// key. Every replica that holds both shows neither (the one already shown
// is withdrawn, with the reason) and flags the sender; all converge.
func TestEquivocation(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ep, ok := rb.current(rb.headView())
	if !ok {
		t.Fatal("no epoch in use after creation")
	}
	c1, c2 := *rb.send[ep], *rb.send[ep]
	ten := sealRaw(t, rb, ep, &c1, "10 mg", 0)
	hundred := sealRaw(t, rb, ep, &c2, "100 mg", 0)
	deliver(t, [][]byte{ten}, ra)
	deliver(t, [][]byte{hundred}, rc)
	if got := texts(ra.State()); !slices.Equal(got, []string{"10 mg"}) {
		t.Fatalf("before: %q", got)
	}
	ra.Receive(hundred)
	rc.Receive(ten)
	for _, r := range []*Replica{ra, rc} {
		st := r.State()
		for _, m := range st.Messages {
			if m.Text != "" || m.Withdrawn == "" {
				t.Fatalf("equivocal message shown: %+v", m)
			}
		}
		if st.Flags[bob.ID] == "" {
			t.Fatal("equivocating sender not flagged")
		}
	}
	if !reflectEqual(canon(ra.State()), canon(rc.State())) {
		t.Fatal("replicas diverged")
	}
}

// TestKeyStateBomb: huge chain indexes and garbage bodies — from a member
// and from an ex-member in an old epoch — leave no skipped keys, and the
// key state stays small enough to restore.
func TestKeyStateBomb(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	old, _ := rm.current(rm.headView())
	var bombs [][]byte
	for i := range 40 {
		bombs = append(bombs, sealRaw(t, rm, old, nil, "", e2e.MaxSkip-uint32(i)))
		bombs = append(bombs, sealRaw(t, rb, old, nil, "", 1<<31+uint32(i)))
	}
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb)
	for _, b := range bombs {
		ra.Receive(b)
	}
	if n := ra.recv.Skipped(); n != 0 {
		t.Fatalf("%d skipped keys kept from garbage", n)
	}
	keys, err := ra.Keys()
	if err != nil || len(keys) > 64<<10 {
		t.Fatalf("key state %d bytes: %v", len(keys), err)
	}
	out, _ := ok(split(rb.Send("still works", SendOptions{})))
	deliver(t, out, ra)
	if got := texts(ra.State()); !slices.Equal(got, []string{"still works"}) {
		t.Fatalf("alice reads %q", got)
	}
}

// TestNonMemberOpsRefused: an admitted device that was never a member
// writes into a conversation whose tag it learnt. Its ops are refused —
// never stored or served — unless an op waiting for one needs it, when it
// stays as a content-less node.
func TestNonMemberOpsRefused(t *testing.T) {
	w := newWorld(t)
	alice, bob, eve := w.device("alice"), w.device("bob"), w.device("eve")
	ra, rb := unpack2(w.group("t", alice, bob))
	// Eve builds ops on the heads she saw relayed.
	re := w.join(eve, ra.Tag())
	deliver(t, w.history(ra), re)
	e1 := forgeWelcome(t, re, []peer.ID{alice.ID, bob.ID, eve.ID}, 0)
	e2 := forgeWelcome(t, re, []peer.ID{alice.ID, bob.ID, eve.ID}, 0) // depends on e1
	if err := rb.Receive(e1); !errors.Is(err, ErrRefused) {
		t.Fatalf("refusal: %v", err)
	}
	if slices.Contains(rb.IDs(), idOf(e1)) {
		t.Fatal("refused op kept")
	}
	if err := ra.Receive(e2); err != nil {
		t.Fatalf("waiting op: %v", err)
	}
	if err := ra.Receive(e1); !errors.Is(err, ErrRefused) {
		t.Fatalf("refusal of the awaited op: %v", err)
	}
	if !ra.dag.Stub(idOf(e1)) || ra.dag.Has(idOf(e2)) {
		t.Fatal("an awaited op should stay as a stub, its waiter refused")
	}
	if _, served := ra.Envelope(idOf(e1)); served {
		t.Fatal("a stub's body is served")
	}
	out, _ := must[crdt.OpID](t)(split(ra.Send("fine", SendOptions{})))
	deliver(t, out, rb)
	if got := texts(rb.State()); !slices.Equal(got, []string{"fine"}) {
		t.Fatalf("bob reads %q", got)
	}
}

// TestUnreactRemovesOnlyOwnObserved: a backdated "unreact" that names
// other members' reaction tags removes nothing of theirs.
func TestUnreactRemovesOnlyOwnObserved(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	msg, id := ok(split(ra.Send("x", SendOptions{})))
	deliver(t, msg, rb, rm)
	react, rid := ok(split(rb.React(id, "👍")))
	deliver(t, react, ra)
	un, _ := ok(split(rm.do(&payload{Kind: kindUnreact, Target: id[:], Text: "👍", Tags: [][]byte{rid[:]}})))
	deliver(t, slices.Concat(un, react), rm)
	deliver(t, un, ra)
	for _, r := range []*Replica{ra, rm} {
		if got := r.State().Messages[0].Reactions["👍"]; !slices.Equal(got, []peer.ID{bob.ID}) {
			t.Fatalf("reactions %v", got)
		}
	}
}

// TestClockEarlierThanDeps: a reply stamped an hour before the message it
// answers still sorts after it, flagged.
func TestClockEarlierThanDeps(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	ok := must[crdt.OpID](t)
	q, _ := ok(split(ra.Send("question", SendOptions{})))
	deliver(t, q, rb)
	rb.clock = crdt.NewClock(func() time.Time { return w.now.Add(-time.Hour) })
	a, _ := ok(split(rb.Send("answer", SendOptions{})))
	deliver(t, a, ra)
	st := ra.State()
	if !slices.Equal(texts(st), []string{"question", "answer"}) || !st.Messages[1].Skewed ||
		st.Messages[1].Time.Before(st.Messages[0].Time) {
		t.Fatalf("order %q skewed %v", texts(st), st.Messages[1].Skewed)
	}
}

// TestContentKindWelcomeNumber: a content op whose payload claims the
// welcome kind is an invalid payload, not a welcome.
func TestContentKindWelcomeNumber(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	if _, _, err := split(rb.do(&payload{Kind: kindWelcome})); !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("sent: %v", err)
	}
	ep, _ := rb.current(rb.headView())
	env := rb.newEnvelope()
	pt, _ := detcbor.Marshal(&payload{Kind: kindWelcome, Members: [][]byte{[]byte(bob.ID)}})
	e2e.SealContent(env, rb.send[ep], pt)
	raw, _ := rb.signed(env)
	if err := ra.Receive(raw); !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("received: %v", err)
	}
	if info := ra.ops[idOf(raw)]; info.kind == kindWelcome || info.valid {
		t.Fatal("treated as a welcome")
	}
}

// TestRestoreNeverReusesIndex: the key record on disk is older than the ops
// (a crash between the two writes): after the restart the send chain skips
// every index an op of ours holds, so recipients read every message.
func TestRestoreNeverReusesIndex(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs, err := splitCreate(Create(alice, w, "t", []peer.ID{bob.ID}, WithClock(w.clock), WithStore(store), WithPlaintexts(plain)))
	if err != nil {
		t.Fatal(err)
	}
	rb := w.join(bob, ra.Tag())
	stale, _ := ra.Keys()
	ok := must[crdt.OpID](t)
	var sent [][]byte
	for _, s := range []string{"one", "two", "three"} {
		out, _ := ok(split(ra.Send(s, SendOptions{})))
		sent = append(sent, out...)
	}
	back, err := Restore(alice, w, stale, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := ok(split(back.Send("four", SendOptions{})))
	deliver(t, slices.Concat(envs, sent, out), rb)
	if got := texts(rb.State()); !slices.Equal(got, []string{"one", "two", "three", "four"}) {
		t.Fatalf("bob reads %q", got)
	}
}
