package chat

// Red-team reproducers (a cold security review of chat/, e2e/, crdt/).
// Each test is named after the attack it plays and asserts the property
// the attack broke; all but finding 11 are fixed and run always. Finding
// 11 stays skipped (REDTEAM=1 runs it): see its note.

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// craft is an op of h built by hand: any deps, any clock, payload p sealed
// in epoch ep (control key for control kinds, h's send chain otherwise).
// It is signed but not applied to h.
func craft(t testing.TB, h *Replica, deps []crdt.OpID, wall int64, logical uint32, p *payload, ep e2e.EpochID) []byte {
	t.Helper()
	d := make([][32]byte, len(deps))
	for i := range deps {
		d[i] = deps[i]
	}
	env := e2e.New(h.tag, h.dev.ID, d)
	env.Wall, env.Logical = wall, logical
	env.Urgent = p.Urgent // as chat's seal makes it
	pt, err := detcbor.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if isControl(p.Kind) {
		key, ok := h.control[ep]
		if !ok {
			t.Fatal("craft: no control key")
		}
		err = e2e.SealControl(env, ep, key, pt)
	} else {
		ch := h.send[ep]
		if ch == nil {
			t.Fatal("craft: no send chain")
		}
		err = e2e.SealContent(env, ch, pt)
	}
	if err != nil {
		t.Fatal(err)
	}
	raw, err := h.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// welcomeWithHistory is a welcome of h after deps, naming holders, with a
// share only for `to`, whose history is the given control keys.
func welcomeWithHistory(t testing.TB, h *Replica, deps []crdt.OpID, holders []peer.ID, to peer.ID, hist []e2e.ControlKeys) []byte {
	t.Helper()
	d := make([][32]byte, len(deps))
	for i := range deps {
		d[i] = deps[i]
	}
	env := e2e.New(h.tag, h.dev.ID, d)
	ts := h.clock.Now()
	env.Wall, env.Logical = ts.Wall, ts.Logical
	rc, err := h.dir.Recipient(to, h.now())
	if err != nil {
		t.Fatal(err)
	}
	rc.Control = hist
	keys := e2e.EpochKeys{Conv: h.conv[:], Creator: []byte(h.creator)}
	if err := e2e.SealWelcome(env, e2e.NewSecret(), keys, holders, []e2e.Recipient{rc}); err != nil {
		t.Fatal(err)
	}
	raw, err := h.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ---------------------------------------------------------------------------
// Finding 1: DAG.Heads keeps only the 64 largest op IDs, and every decision
// of "the membership at my heads" (headView, parents, State) uses that
// truncated list. A removed member floods 64 ops concurrent with its removal
// whose IDs it ground to sort above the removal's: honest members no longer
// see the removal at their heads and keep encrypting to the old epoch.

func TestHeadsTruncationHidesRemoval(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	old, _ := rm.current(rm.headView())
	before := rm.dag.Heads() // mal's heads: from before its removal

	w.now = w.now.Add(time.Minute)
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb)
	// Mal learns the removal's IDs from the relayed ciphertext, and grinds
	// 64 receipts on its old heads whose IDs sort above every head of bob.
	var top crdt.OpID
	for _, h := range rb.dag.Heads() {
		if h.Compare(top) > 0 {
			top = h
		}
	}
	var flood [][]byte
	for l := uint32(0); len(flood) < crdt.MaxDeps; l++ {
		raw := craft(t, rm, before, w.now.UnixMilli(), l, &payload{Kind: kindReceipt, Level: Delivered}, old)
		if idOf(raw).Compare(top) > 0 {
			flood = append(flood, raw)
		}
	}
	deliver(t, flood, rb)

	out, _ := ok(split(rb.Send("bob, after mallory's removal", SendOptions{})))
	deliver(t, out, ra)
	if got := opens(rm, out); len(got) != 0 {
		t.Fatalf("removed member reads %q", got)
	}
	if slices.Contains(rb.State().Members, mal.ID) {
		t.Fatal("bob still lists the removed member")
	}
}

// ---------------------------------------------------------------------------
// Finding 2: a removed admin keeps the group through a fresh identity.
// Concurrently with its own removal it adds a sock device, rekeys (Add
// does) and promotes it; the sock removes the creator. A replica that got
// this branch before the creator's removal of the attacker opened the
// attacker's welcome while it was valid, so it can read the sock's removal;
// in refresh's first pass everything is valid, and grow makes the sock's
// removal effective first ("safe": nobody targets the sock), which voids
// the creator's removal of the attacker. A replica that got the removal
// first cannot read the sock's op (its epoch never became valid there), so
// the creator's removal stands. The group splits: on bob the creator is
// out and the attacker and its sock are the admins.

func TestRemovedAdminCoupThroughSock(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(mal.ID)))
	deliver(t, p, rb, rm)

	w.now = w.now.Add(time.Minute)
	rmv, _ := ok(split(ra.Remove(mal.ID))) // not yet relayed to bob

	// Mal's branch, built on the state before its removal.
	sock := w.device("sock")
	add, _ := ok(split(rm.Add(sock.ID)))
	prom, _ := ok(split(rm.Promote(sock.ID)))
	rs := w.join(sock, rm.Tag())
	deliver(t, w.history(rm), rs)
	coup := forge(t, rs, &payload{Kind: kindRemove, Member: []byte(alice.ID)}) // its own replica would refuse it
	branch := slices.Concat(add, prom, coup)

	deliver(t, slices.Concat(branch, rmv), rb) // bob: the branch first
	deliver(t, branch, ra)                     // alice: her removal first
	sa, sb := ra.State(), rb.State()
	if !slices.Equal(sa.Members, sb.Members) || !slices.Equal(sa.Admins, sb.Admins) {
		t.Errorf("replicas disagree:\nalice: members %v admins %v\nbob:   members %v admins %v\n(alice=%s mal=%s sock=%s)",
			sa.Members, sa.Admins, sb.Members, sb.Admins, alice.ID, mal.ID, sock.ID)
	}
	if slices.Contains(sb.Members, mal.ID) || !slices.Contains(sb.Admins, alice.ID) {
		t.Errorf("bob: the removed admin took the group: members %v admins %v", sb.Members, sb.Admins)
	}
	out, _ := ok(split(rb.Send("bob, after the coup", SendOptions{})))
	if got := opens(rs, out); len(got) != 0 {
		t.Fatalf("the removed admin's sock reads %q", got)
	}
}

// ---------------------------------------------------------------------------
// Finding 3: a device that has not opened any welcome yet (a new member)
// opens any welcome naming it, and keeps the control keys in its history as
// candidates, at most 4 per epoch, first come first kept. A removed member
// (who knows the conversation ID) sends the new member a welcome with 4
// bogus control keys for every epoch, depending only on the root welcome:
// it is applied right after the root welcome arrives. The real history is
// then dropped (candidates full), the new member never reads the control
// ops that added it, and hasControl() says it is not "opaque" so it never
// opens its real welcome either.

func TestCandidatePoisoningLocksOutNewMember(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal, carol := w.device("alice"), w.device("bob"), w.device("mallory"), w.device("carol")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	root := e2e.EpochID(rm.firstRoot())
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb)
	add, _ := ok(split(ra.Add(carol.ID)))
	deliver(t, add, rb)

	// Mal, removed, poisons carol: 4 wrong keys for every epoch it can name
	// (it sees every welcome's op ID on the topic).
	var hist []e2e.ControlKeys
	for _, id := range ra.dag.IDs() {
		if info := ra.ops[id]; info != nil && info.kind == kindWelcome {
			for i := range 4 {
				hist = append(hist, e2e.ControlKeys{Epoch: slices.Clone(id[:]), Key: bytes.Repeat([]byte{byte(i + 1)}, 32)})
			}
		}
	}
	poison := welcomeWithHistory(t, rm, []crdt.OpID{crdt.OpID(root)}, []peer.ID{carol.ID, mal.ID}, carol.ID, hist)

	rc := w.join(carol, ra.Tag())
	rc.Receive(poison) // waits for the root welcome
	deliver(t, w.history(ra), rc)
	out, _ := ok(split(ra.Send("welcome carol", SendOptions{})))
	deliver(t, out, rc)
	st := rc.State()
	if !slices.Contains(st.Members, carol.ID) || !slices.Equal(texts(st), []string{"welcome carol"}) {
		t.Fatalf("carol sees members %v messages %q", st.Members, texts(st))
	}
}

// ---------------------------------------------------------------------------
// Finding 4: candidate control keys are bounded per epoch but not in
// number of epochs. A malicious member rekeys (any member may) with a
// history of bogus epochs for one victim; each candidate is kept forever
// and written to the key record, which Restore refuses above 24 MiB.

func TestCandidateBloatBlocksRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs := w.create(alice, "t", bob, mal)
	rb := Join(bob, w, ra.Tag(), WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	rm := w.join(mal, ra.Tag())
	deliver(t, envs, rb, rm)

	members := []peer.ID{alice.ID, bob.ID, mal.ID}
	n := 0
	for range 30 {
		var hist []e2e.ControlKeys
		for range 13000 {
			ep, k := e2e.NewSecret(), e2e.NewSecret()
			hist = append(hist, e2e.ControlKeys{Epoch: ep[:], Key: k[:]})
			n++
		}
		raw := welcomeWithHistory(t, rm, rm.dag.Heads(), members, bob.ID, hist)
		if err := rm.Receive(raw); err != nil && !benign(err) {
			t.Fatal(err)
		}
		deliver(t, [][]byte{raw}, rb)
	}
	keys, err := rb.Keys()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bogus candidates; bob's key record is %d bytes", n, len(keys))
	if _, err := Restore(bob, w, keys, WithClock(w.clock), WithStore(store), WithPlaintexts(plain)); err != nil {
		t.Fatalf("bob cannot restart: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Finding 5: an edit (or delete) is judged valid only if its target is
// already applied here; the target need not be in the edit's causal past.
// A member edits its own message in an op concurrent with it: replicas that
// got the edit first reject it for good, the others apply it.

func TestEditBeforeTargetDiverges(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	ep, _ := rm.current(rm.headView())
	heads := rm.dag.Heads()
	msg, id := ok(split(rm.Send("give 10 mg", SendOptions{})))
	edit := craft(t, rm, heads, w.now.UnixMilli(), 5, &payload{Kind: kindEdit, Target: id[:], Text: "give 100 mg"}, ep)
	deliver(t, slices.Concat(msg, [][]byte{edit}), ra)
	deliver(t, slices.Concat([][]byte{edit}, msg), rb)
	ta, tb := texts(ra.State()), texts(rb.State())
	if !slices.Equal(ta, tb) {
		t.Fatalf("alice reads %q, bob reads %q", ta, tb)
	}
}

func TestDeleteBeforeTargetDiverges(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	heads := rm.dag.Heads()
	msg, id := ok(split(rm.Send("allergic to penicillin", SendOptions{})))
	del := craft(t, rm, heads, w.now.UnixMilli(), 5, &payload{Kind: kindDelete, Target: id[:]}, e2e.EpochID(rm.firstRoot()))
	deliver(t, slices.Concat(msg, [][]byte{del}), ra)
	deliver(t, slices.Concat([][]byte{del}, msg), rb)
	ta, tb := texts(ra.State()), texts(rb.State())
	if !slices.Equal(ta, tb) {
		t.Fatalf("alice reads %q, bob reads %q", ta, tb)
	}
}

// ---------------------------------------------------------------------------
// Finding 6: sort keys are pulled down by any direct dependant by another
// author stamped more than MaxSkew earlier — whether or not that dependant
// is authorised. A removed member adds one op depending on every op,
// stamped a month back: every honest op's key collapses to that time, and
// retention (on every replica) deletes messages written a minute ago.

func TestBackdatedDependantTriggersRetention(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	old, _ := rm.current(rm.headView())
	ret, _ := ok(split(ra.SetRetention(24 * time.Hour)))
	deliver(t, ret, rb)
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, rmv, rb)
	w.now = w.now.Add(time.Minute)
	msg, _ := ok(split(rb.Send("patient stable", SendOptions{})))
	deliver(t, msg, ra)
	ra.Expire(w.now)
	if got := texts(ra.State()); !slices.Equal(got, []string{"patient stable"}) {
		t.Fatalf("setup: %q", got)
	}

	// Mal (removed) sees the envelopes' IDs and hangs one op under all.
	x := craft(t, rm, ra.dag.IDs(), w.now.Add(-30*24*time.Hour).UnixMilli(), 0,
		&payload{Kind: kindReceipt, Level: Delivered}, old)
	deliver(t, [][]byte{x}, ra, rb)
	for _, r := range []*Replica{ra, rb} {
		r.Expire(w.now)
		if got := texts(r.State()); !slices.Equal(got, []string{"patient stable"}) {
			t.Fatalf("%s reads %q after Expire", w.names[r.dev.ID], got)
		}
	}
}

// ---------------------------------------------------------------------------
// Finding 7: admission refuses only senders that no op — valid or not —
// ever named in an add. A removed member keeps full write access to every
// member's store (and to sync, which serves its ops on): ops built after
// its removal, in its old epoch, are stored and served forever.

func TestRemovedMemberStillStored(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	rmv, _ := ok(split(ra.Remove(mal.ID)))
	deliver(t, slices.Concat(w.history(ra)), rm) // mal knows it was removed
	deliver(t, rmv, rb)
	old := e2e.EpochID(rm.firstRoot())
	junk := bytes.Repeat([]byte("x"), 512<<10)
	var flood [][]byte
	for i := range 8 {
		flood = append(flood, craft(t, rm, rm.dag.Heads(), w.now.UnixMilli(), uint32(i),
			&payload{Kind: kindReceipt, Targets: nil, Level: Delivered, Data: junk}, old))
	}
	for _, raw := range flood {
		rb.Receive(raw)
	}
	stored := 0
	for _, raw := range flood {
		if _, ok := rb.Envelope(idOf(raw)); ok {
			stored += len(raw)
		}
	}
	if stored > 0 {
		t.Fatalf("bob stores and serves %d bytes from a device removed before it wrote them", stored)
	}
}

// A non-admin member (or a removed one) names an outsider in an
// unauthorised add: the outsider's ops are then admitted in full.
func TestInvalidAddAdmitsOutsider(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal, eve := w.device("alice"), w.device("bob"), w.device("mallory"), w.device("eve")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ep, _ := rm.controlEpoch(rm.headView())
	add := craft(t, rm, rm.dag.Heads(), w.now.UnixMilli(), 1, &payload{Kind: kindAdd, Member: []byte(eve.ID)}, ep)
	rm.Receive(add)
	deliver(t, [][]byte{add}, ra, rb)
	if info := rb.ops[idOf(add)]; info == nil || info.valid {
		t.Fatal("setup: the add should be stored and invalid")
	}
	re := w.join(eve, ra.Tag())
	deliver(t, w.history(ra), re)
	e1 := forgeWelcome(t, re, []peer.ID{alice.ID, bob.ID, mal.ID, eve.ID}, 0)
	err := rb.Receive(e1)
	if !errors.Is(err, ErrRefused) || slices.Contains(rb.IDs(), idOf(e1)) {
		t.Fatalf("outsider's op admitted (err %v)", err)
	}
}

// ---------------------------------------------------------------------------
// Finding 8: the pending buffer's op-count bound evicts the oldest op
// overall. One author's flood of tiny ops with made-up dependencies (well
// under its byte budget) pushes every other author's waiting ops out.

func TestPendingCountFloodEvictsOthers(t *testing.T) {
	d, err := crdt.NewDAG(crdt.NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	id := func(tag byte, i int) crdt.OpID {
		var x crdt.OpID
		x[0], x[1], x[2], x[3] = tag, byte(i>>16), byte(i>>8), byte(i)
		return x
	}
	honest := crdt.Op{ID: id(1, 0), Deps: []crdt.OpID{id(2, 0)}, Author: "honest", Body: make([]byte, 300)}
	if _, err := d.Add(honest, t0); err != nil {
		t.Fatal(err)
	}
	for i := range d.MaxPending {
		op := crdt.Op{ID: id(3, i), Deps: []crdt.OpID{id(4, i)}, Author: "flooder", Body: make([]byte, 200)}
		d.Add(op, t0)
	}
	if !d.Pending(honest.ID) {
		t.Fatalf("honest op evicted by another author's flood (%d ops pending)", d.PendingLen())
	}
}

// ---------------------------------------------------------------------------
// Finding 9: the root epoch — the one deletes are sealed in — was set by
// whichever create op was judged last on this device. A creator may publish
// a second root welcome and create op at any time (both are valid: the
// second create has no create in its past). Replicas that judged the
// creates in a different order disagree on the root: a delete sealed in
// the first root is refused where the second one was judged last (and only
// devices that can read the second create move their root at all).

func TestSecondCreateMovesRoot(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	msg, id := ok(split(rb.Send("wrong patient, ignore", SendOptions{})))
	deliver(t, msg, ra, rc)

	// Alice's second root: a welcome with no deps (a share for carol only)
	// and a create op right after it.
	secret := e2e.NewSecret()
	env := e2e.New(ra.tag, alice.ID, nil)
	env.Wall = w.now.UnixMilli()
	keys := e2e.EpochKeys{Conv: ra.conv[:], Creator: []byte(alice.ID)}
	to, err := w.Recipient(carol.ID, w.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e2e.SealWelcome(env, secret, keys, []peer.ID{alice.ID, bob.ID, carol.ID}, []e2e.Recipient{to}); err != nil {
		t.Fatal(err)
	}
	root2, err := ra.signed(env)
	if err != nil {
		t.Fatal(err)
	}
	ep2 := e2e.EpochID(idOf(root2))
	ra.control[ep2] = e2e.ControlKey(secret)
	create2 := craft(t, ra, []crdt.OpID{crdt.OpID(ep2)}, w.now.UnixMilli()+1, 0,
		&payload{Kind: kindCreate, Text: "t", Members: [][]byte{[]byte(bob.ID), []byte(carol.ID)}}, ep2)

	del, _ := ok(split(rb.Delete(id))) // bob has not seen the second root
	deliver(t, [][]byte{root2, create2}, rc)
	deliver(t, del, rc)
	deliver(t, slices.Concat([][]byte{root2, create2}), rb)
	if got, want := texts(rc.State()), texts(rb.State()); !slices.Equal(got, want) {
		t.Errorf("carol reads %q, bob reads %q", got, want)
	}
}

// ---------------------------------------------------------------------------
// Finding 10 (design): any admin may remove any other admin, the creator
// included, in ordinary sequential ops; seniority only settles concurrent
// removals. One malicious admin removes every other admin and leaves: the
// group has no admin, although no other admin left.

func TestAdminStripsAllAdmins(t *testing.T) {
	w := newWorld(t)
	alice, bob, mal := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mal))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(mal.ID)))
	deliver(t, p, rb, rm)
	r1 := forge(t, rm, &payload{Kind: kindRemove, Member: []byte(alice.ID)}) // its own replica would refuse it
	l, _ := ok(split(rm.Leave()))
	deliver(t, slices.Concat(r1, l), rb)
	if st := rb.State(); len(st.Admins) == 0 {
		t.Fatalf("no admin left: members %v", st.Members)
	}
}

// ---------------------------------------------------------------------------
// Finding 11 (crash, low): Restore moves a send chain past the indexes of
// our own ops in the store — but skips ops retention already deleted (a
// gone op keeps no envelope, so no index). With a key record older than
// those ops (the crash Restore's comment promises to survive), the chain
// restarts below indexes already used: one message key used twice, and
// every recipient flags this honest device as an equivocator.

func TestRestoreAfterRetentionReusesIndex(t *testing.T) {
	if os.Getenv("REDTEAM") == "" {
		t.Skip("finding 11 (open): Restore ignores retention-deleted own ops; only a key record older than the ops reuses their indexes, which mesh's atomic journal write of ops and keys rules out")
	}
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	store, plain := crdt.NewMemStore(), mapPlain{}
	ra, envs, err := splitCreate(Create(alice, w, "t", []peer.ID{bob.ID}, WithClock(w.clock), WithStore(store), WithPlaintexts(plain)))
	if err != nil {
		t.Fatal(err)
	}
	rb := w.join(bob, ra.Tag())
	deliver(t, envs, rb)
	ok := must[crdt.OpID](t)
	ret, _ := ok(split(ra.SetRetention(time.Hour)))
	deliver(t, ret, rb)
	stale, _ := ra.Keys()
	one, _ := ok(split(ra.Send("one", SendOptions{})))
	deliver(t, one, rb)
	w.now = w.now.Add(2 * time.Hour)
	if n := ra.Expire(w.now); n == 0 {
		t.Fatal("setup: retention deleted nothing")
	}
	back, err := Restore(alice, w, stale, WithClock(w.clock), WithStore(store), WithPlaintexts(plain))
	if err != nil {
		t.Fatal(err)
	}
	two, _ := ok(split(back.Send("two", SendOptions{})))
	deliver(t, two, rb)
	if f := rb.State().Flags[alice.ID]; f != "" {
		t.Fatalf("honest alice flagged after a restart: %s", f)
	}
}

// TestStubForgetsDecodedEnvelope: an op admitted as a stub (refused, but
// an op waits for it) keeps no body in the DAG, and no decoded envelope
// either — whose Body holds the whole encoding. Kept, a non-member's
// stubs pinned up to maxAllStubs bodies of a megabyte (found by review).
func TestStubForgetsDecodedEnvelope(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	heads := rb.dag.Heads()
	eve := w.device("eve")
	a := forgedContent(t, w, ra, eve, heads, 0, 900<<10)
	b := forgedContent(t, w, ra, eve, []crdt.OpID{idOf(a)}, 1, 64)
	rb.Receive(b) // waits for a
	rb.Receive(a) // wanted: kept as a stub
	if !rb.dag.Stub(idOf(a)) {
		t.Fatal("setup: a is not a stub")
	}
	if e := rb.decoded[idOf(a)]; e != nil {
		t.Fatalf("the stub's decoded envelope is kept (body of %d bytes) though the DAG dropped its body", len(e.Body))
	}
}
