package chat

// Second red-team pass: reproducers for what the first round of fixes
// left open. All are fixed and run always.

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// welcomeWithout is a valid-looking welcome of member h at its heads: its
// public holder list is holders (the members), but it carries no share for
// skip. h installs the epoch's keys and applies it.
func welcomeWithout(t testing.TB, h *Replica, holders []peer.ID, skip peer.ID) []byte {
	t.Helper()
	secret := e2e.NewSecret()
	env := h.newEnvelope()
	keys := e2e.EpochKeys{Conv: h.conv[:], Creator: []byte(h.creator)}
	var to []e2e.Recipient
	for _, m := range holders {
		if m == h.dev.ID || m == skip {
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
	h.installSecret(e2e.EpochID(e2e.ID(raw)), secret, holders)
	h.ingest(env, raw)
	return raw
}

// ---------------------------------------------------------------------------
// Finding 1: a malicious member rekeys (any member may) with the right
// public holder list but no share (or a bad one) for bob. Bob flags it,
// but the welcome is valid, so the other members send their control ops in
// it. Bob never gets its control key: history() hands on only epochs whose
// welcome does not name the recipient, and bob is named. The admin's
// removal of carol, sealed in that epoch, is unreadable to bob for good;
// bob keeps carol as a member and keeps sending in an epoch carol holds.

func TestBadShareBlindsMemberToRemoval(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol, mal := w.device("alice"), w.device("bob"), w.device("carol"), w.device("mallory")
	ra, rb, rc, rm := unpack4(w.group("t", alice, bob, carol, mal))
	ok := must[crdt.OpID](t)

	w.now = w.now.Add(time.Minute)
	members := []peer.ID{alice.ID, bob.ID, carol.ID, mal.ID}
	bad := welcomeWithout(t, rm, members, bob.ID)
	deliver(t, [][]byte{bad}, ra, rb, rc)
	if f := rb.State().Flags[mal.ID]; f == "" {
		t.Fatal("setup: bob should flag mallory")
	}

	w.now = w.now.Add(time.Minute)
	rmv, _ := ok(split(ra.Remove(carol.ID)))
	deliver(t, rmv, rb, rm)
	w.now = w.now.Add(time.Minute)
	// Bob cannot read the removal (sealed in the epoch his share of did
	// not open): he must send nothing rather than seal to carol.
	out, _, err := split(rb.Send("bob, after carol's removal", SendOptions{}))
	if !errors.Is(err, ErrBlind) {
		t.Fatalf("a member blind to a membership change sent: %v", err)
	}
	deliver(t, out, ra, rm)
	st := rb.State()
	got := opens(rc, out)
	if len(got) != 0 {
		t.Fatalf("bob lists members %v (carol=%s); removed carol reads %q; bob reads the removal: %v (sealed in mallory's epoch: %v)",
			st.Members, carol.ID, got, rb.ops[idOf(rmv[0])].kind == kindRemove, rb.ops[idOf(rmv[0])].epoch == e2e.EpochID(idOf(bad)))
	}
}

// ---------------------------------------------------------------------------
// Finding 2: the same welcome makes bob "opaque" for every later op (some
// valid welcome in the past whose control key bob lacks, and never will
// get): admit then stores everything in full, so a device that was never
// added writes into bob's store and sync without bound.

func TestBadShareOpensAdmission(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal, eve := w.device("alice"), w.device("bob"), w.device("mallory"), w.device("eve")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	bad := welcomeWithout(t, rm, []peer.ID{alice.ID, bob.ID, mal.ID}, bob.ID)
	deliver(t, [][]byte{bad}, ra, rb)

	// Eve was never added; she sees the topic and its op IDs.
	re := w.join(eve, ra.Tag())
	deliver(t, w.history(ra), re)
	junk := forgeWelcome(t, re, []peer.ID{alice.ID, bob.ID, mal.ID, eve.ID}, 0)
	err := rb.Receive(junk)
	if _, stored := rb.Envelope(idOf(junk)); stored || !errors.Is(err, ErrRefused) {
		t.Fatalf("bob stores and serves a never-added device's op (err %v)", err)
	}
}

// ---------------------------------------------------------------------------
// Finding 3: a welcome this device opened and sent in, that turns invalid
// (a concurrent removal of its issuer arrives) is "unopened": its send
// chain is dropped. If it turns valid again (the removal's author is
// revoked and nobody endorsed the removal), open() opens the welcome afresh
// and installs a send chain at index 0: the device's next message reuses a
// message key it already used, and every replica flags the honest device
// as an equivocator (its two messages are both void).

func TestReopenedEpochReusesMessageKey(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal, vic := w.device("alice"), w.device("bob"), w.device("mallory"), w.device("vic")
	ra, rb, rm, rv := unpack4(w.group("t", alice, bob, mal, vic))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(bob.ID)))
	deliver(t, p, rb, rm, rv)

	w.now = w.now.Add(time.Minute)
	wm := forgeWelcome(t, rm, []peer.ID{alice.ID, bob.ID, mal.ID, vic.ID}, 0) // any member may rekey
	deliver(t, [][]byte{wm}, rv, ra)
	w.now = w.now.Add(time.Minute)
	v1, _ := ok(split(rv.Send("v1", SendOptions{})))
	e1, _ := e2e.Decode(v1[len(v1)-1])
	if ep, _ := e2e.EpochIDFromBytes(e1.Epoch); ep != e2e.EpochID(idOf(wm)) {
		t.Fatal("setup: vic should send in mallory's epoch")
	}

	// Bob, not having seen mallory's welcome, removes her: her welcome is
	// void on vic, who drops its chains.
	rmv, _ := ok(split(rb.Remove(mal.ID)))
	deliver(t, rmv, rv)
	rv.State()
	// Then bob's certificate is revoked (a CRL arrives): his removal stands
	// only if an unrevoked author depends on it, and none does.
	revoked := func(id peer.ID) bool { return id == bob.ID }
	rv.SetRevoked(revoked)
	ra.SetRevoked(revoked)
	rv.State()

	w.now = w.now.Add(time.Minute)
	if info := rv.ops[idOf(wm)]; !info.valid || rv.send[info.epoch] == nil {
		t.Fatal("setup: mallory's welcome should be valid and reopened on vic")
	}
	// (v2 depends on bob's removal, so it endorses it and is itself judged
	// void: but it is published, sealed already.)
	v2, _, _ := split(rv.Send("v2", SendOptions{}))
	e2, _ := e2e.Decode(v2[len(v2)-1])
	if string(e2.Epoch) == string(e1.Epoch) && e2.Index == e1.Index {
		t.Errorf("vic sealed two messages with one message key (epoch %x index %d)", e1.Epoch[:6], e1.Index)
	}
	deliver(t, slices.Concat(v1, rmv, v2), ra)
	if f := ra.State().Flags[vic.ID]; f != "" {
		t.Fatalf("honest vic flagged by alice: %s", f)
	}
}

// ---------------------------------------------------------------------------
// Finding 4: content-less nodes of refused ops are bounded per sender
// (maxStubs), but a never-added sender is anyone: identities cost a key
// generation. Each fresh identity sends one op on the honest heads and one
// op waiting for it; the first is kept as a stub (persisted, listed in
// IDs, reconciled by sync) and the second stays buffered. Stubs grow
// without bound with the number of identities.

func TestStubFloodByFreshIdentities(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	heads := rb.dag.Heads()
	const n = maxAllStubs + maxStubs
	for i := range n {
		eve := w.device("eve")
		a := forgedContent(t, w, ra, eve, heads, 0, 64)
		b := forgedContent(t, w, ra, eve, []crdt.OpID{idOf(a)}, 1, 64)
		rb.Receive(b) // waits for a
		rb.Receive(a) // wanted: kept as a stub
		_ = i
	}
	stubs := 0
	for _, id := range rb.IDs() {
		if rb.dag.Stub(id) {
			stubs++
		}
	}
	if stubs > maxAllStubs {
		t.Fatalf("bob keeps %d stubs of never-added devices (bound %d in all), persisted and reconciled", stubs, maxAllStubs)
	}
}

// ---------------------------------------------------------------------------
// Finding 5 (the history-poisoning fix is incomplete): a history candidate
// is trusted as soon as it decrypts any op of its epoch, but anyone can
// make such an op. A removed member sends the new member a welcome (opened:
// the new member holds no control key yet) whose history gives a made-up
// key for the root epoch, and one control op in the root epoch sealed with
// that key. The made-up key decrypts it and becomes the verified root
// control key; the real one (from the admin's welcome) is then ignored.
// The new member never reads the create op: no admins, so the add of
// itself is unauthorised, and it is locked out.

func TestSelfVerifiedCandidateLocksOutNewMember(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal, carol := w.device("alice"), w.device("bob"), w.device("mallory"), w.device("carol")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	root := e2e.EpochID(rm.firstRoot())
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb)
	w.now = w.now.Add(time.Minute)
	add, _ := ok(split(ra.Add(carol.ID)))
	deliver(t, add, rb)

	bogus := e2e.NewSecret()
	hist := []e2e.ControlKeys{{Epoch: slices.Clone(root[:]), Key: slices.Clone(bogus[:])}}
	wm := welcomeWithHistory(t, rm, []crdt.OpID{crdt.OpID(root)}, []peer.ID{carol.ID, mal.ID}, carol.ID, hist)
	env := e2e.New(rm.tag, mal.ID, [][32]byte{root})
	env.Wall = t0.UnixMilli()
	if err := e2e.SealControl(env, root, bogus, []byte{0xa1, 0x01, 0x0f}); err != nil { // {1: 15}: a receipt
		t.Fatal(err)
	}
	x, err := rm.signed(env)
	if err != nil {
		t.Fatal(err)
	}

	rc := w.join(carol, ra.Tag())
	rc.Receive(wm) // both wait for the root welcome
	rc.Receive(x)
	for _, raw := range w.history(ra) {
		rc.Receive(raw) // errors: the real root control ops no longer open
	}
	out, _ := ok(split(ra.Send("welcome carol", SendOptions{})))
	for _, raw := range out {
		rc.Receive(raw)
	}
	st := rc.State()
	if !slices.Contains(st.Members, carol.ID) || !slices.Equal(texts(st), []string{"welcome carol"}) {
		t.Fatalf("carol sees members %v admins %v messages %q (root control key verified by mallory's own op: %v)",
			st.Members, st.Admins, texts(st), rc.control[root] == bogus)
	}
}

// ---------------------------------------------------------------------------
// Not a finding (claim held): with a key record older than an epoch bob
// opened and sent in, Restore reopens the welcome during the replay before
// it reaches bob's own op, and SkipTo then moves the fresh chain past it.

func TestRestoreReopenedEpochReusesIndex(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs := w.create(alice, "t", bob)
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	deliver(t, envs, rb)
	ok := must[crdt.OpID](t)
	stale, _ := rb.Keys()
	w.now = w.now.Add(time.Minute)
	add, _ := ok(split(ra.Add(carol.ID))) // a new epoch, opened by bob after his key record
	deliver(t, add, rb)
	one, _ := ok(split(rb.Send("one", SendOptions{})))
	deliver(t, one, ra)
	back, err := Restore(bob, w, stale, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	two, _ := ok(split(back.Send("two", SendOptions{})))
	e1, _ := e2e.Decode(one[len(one)-1])
	e2, _ := e2e.Decode(two[len(two)-1])
	if string(e1.Epoch) == string(e2.Epoch) && e1.Index == e2.Index {
		t.Errorf("bob sealed two messages with one message key after a restart (index %d)", e1.Index)
	}
	deliver(t, two, ra)
	if f := ra.State().Flags[bob.ID]; f != "" {
		t.Fatalf("honest bob flagged after a restart: %s", f)
	}
}

// ---------------------------------------------------------------------------
// Finding 6 (low): MarkHeld keeps any op ID it is given, known or not, and
// any node may send it (mesh handleHeld passes every ID of an
// acknowledgement from any connected peer): memory grows without bound.

func TestMarkHeldUnknownIDsGrowMemory(t *testing.T) {
	w := newWorld(t)
	alice, bob, eve := w.device("alice"), w.device("bob"), w.device("eve")
	ra, _ := unpack2(w.group("t", alice, bob))
	for i := range 100000 {
		var id crdt.OpID
		id[0], id[1], id[2] = byte(i>>16), byte(i>>8), byte(i)
		ra.MarkHeld(id, eve.ID)
	}
	if n := len(ra.held); n > len(ra.IDs()) {
		t.Fatalf("alice keeps %d acknowledgements for a DAG of %d ops", n, len(ra.IDs()))
	}
}
