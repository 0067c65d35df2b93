package chat

// Red-team round 3 (tests named after the attack they stop; the open one
// skips with what it needs): the revocation predicate the device now wires from
// every CRL into every replica.

import (
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// rtForge is an envelope by d in tag after deps that no member can read:
// a control op naming a made-up epoch. Anyone admitted to the mesh can make
// one for any tag it has seen offered in sync (tags and op IDs are public).
func rtForge(t *testing.T, w *world, d *Device, tag []byte, deps ...crdt.OpID) []byte {
	t.Helper()
	var ds [][32]byte
	for _, x := range deps {
		ds = append(ds, x)
	}
	e := e2e.New(tag, d.ID, ds)
	e.Kind = e2e.KindControl
	e.Epoch = make([]byte, 32)
	rand.Read(e.Epoch)
	e.Body = make([]byte, 48)
	rand.Read(e.Body)
	e.Wall = w.now.UnixNano()
	if err := e.Sign(d.Key); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRedteam3NonMemberStubEndorsesRevokedOp: a stolen phone's message
// that no member saw is hidden once the CRL is known (the revoked-sender
// rule). A colleague who is NOT a member of the conversation then sends two
// unreadable ops: X2 depending on X1, X1 depending on the thief's message.
// X1 is refused (not a member) but kept as a stub because X2 waits for it —
// and Endorsed counts any child by an unrevoked author, stubs included, so
// the thief's message is shown again. DESIGN: "an op of a revoked sender
// stands only if an op of an unrevoked member depends on it".
func TestNonMemberStubDoesNotEndorseRevokedOp(t *testing.T) {
	w := newWorld(t)
	alice, bob, thief, outsider := w.device("alice"), w.device("bob"), w.device("lost-phone"), w.device("outsider")
	ra, _, rt := unpack3(w.group("t", alice, bob, thief))
	ok := must[crdt.OpID](t)
	forged, fid := ok(split(rt.Send("sent from the stolen phone", SendOptions{})))
	revoked := func(p peer.ID) bool { return p == thief.ID }
	ra.SetRevoked(revoked)
	deliver(t, forged, ra)
	if slices.Contains(texts(ra.State()), "sent from the stolen phone") {
		t.Fatal("precondition: the unendorsed op of a revoked sender is shown")
	}
	x1 := rtForge(t, w, outsider, ra.Tag(), fid)
	x2 := rtForge(t, w, outsider, ra.Tag(), idOf(x1))
	_ = ra.Receive(x2) // waits for x1
	_ = ra.Receive(x1) // refused, kept as a stub: x2 needed it
	w.now = w.now.Add(time.Second)
	if slices.Contains(texts(ra.State()), "sent from the stolen phone") {
		t.Fatal("a non-member's refused stub endorses a revoked sender's message: it is shown again")
	}
}

// TestRedteam3OwnNextOpEndorsesRevokedOp: a stolen phone's message,
// relayed by sync after the CRL, is hidden on alice's replica. Then alice
// writes anything: parents() takes every head, invalid ones included (only
// stubs are skipped), so her op depends on the thief's message — an op of
// an unrevoked member depends on it, so it stands, on alice's device and
// on every replica her op reaches. On the device this needs no user
// action: the delivery receipt for any colleague's message does it.
func TestNextOpDoesNotEndorseHiddenRevokedOp(t *testing.T) {
	w := newWorld(t)
	alice, bob, thief := w.device("alice"), w.device("bob"), w.device("lost-phone")
	ra, rb, rt := unpack3(w.group("t", alice, bob, thief))
	ok := must[crdt.OpID](t)
	forged, _ := ok(split(rt.Send("sent from the stolen phone", SendOptions{})))
	revoked := func(p peer.ID) bool { return p == thief.ID }
	ra.SetRevoked(revoked)
	rb.SetRevoked(revoked)
	deliver(t, forged, ra)
	if slices.Contains(texts(ra.State()), "sent from the stolen phone") {
		t.Fatal("precondition: shown before anyone endorsed it")
	}
	mine, _ := ok(split(ra.Send("bed 3 needs a porter", SendOptions{})))
	deliver(t, forged, rb)
	deliver(t, mine, rb)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		if slices.Contains(texts(r.State()), "sent from the stolen phone") {
			t.Errorf("on %s the revoked sender's relayed message stands after alice's next op (it depended on it as a head)", name)
		}
	}
}

// TestRedteam3RevokedAdminRetentionWipesHistory: the same gap used for
// destruction. The stolen phone is the creator (an admin); after the CRL,
// a relay hands colleagues its SetRetention(1 s). Hidden at first; the next
// op of any colleague depends on it and endorses it; the expiry loop then
// deletes every message older than a second on every replica — persisted,
// op IDs kept so they are never fetched again.
func TestRevokedAdminRetentionDoesNotWipeHistory(t *testing.T) {
	w := newWorld(t)
	thief, alice, bob := w.device("lost-phone"), w.device("alice"), w.device("bob")
	rt, ra, rb := unpack3(w.group("t", thief, alice, bob))
	ok := must[crdt.OpID](t)
	hist, _ := ok(split(ra.Send("bed 4: allergic to penicillin", SendOptions{})))
	deliver(t, hist, rb, rt)
	w.now = w.now.Add(time.Hour)
	revoked := func(p peer.ID) bool { return p == thief.ID }
	ra.SetRevoked(revoked)
	rb.SetRevoked(revoked)
	wipe, _ := ok(split(rt.SetRetention(time.Second)))
	deliver(t, wipe, ra)
	if n := ra.Expire(w.now); n != 0 {
		t.Fatalf("precondition: the revoked admin's unendorsed retention already applies (%d deleted)", n)
	}
	mine, _ := ok(split(ra.Send("handover at 8", SendOptions{})))
	deliver(t, wipe, rb)
	deliver(t, mine, rb)
	w.now = w.now.Add(time.Minute)
	for name, r := range map[string]*Replica{"alice": ra, "bob": rb} {
		r.Expire(w.now)
		if !slices.Contains(texts(r.State()), "bed 4: allergic to penicillin") {
			t.Errorf("on %s a revoked admin's retention op, relayed after the CRL, deleted the conversation's history", name)
		}
	}
}

// TestRedteam3VoidRetentionDeletesForGood: the expiry loop (now run by
// every device at start and hourly) deletes for good on a judgement that
// can still flip. Bob, an admin, is removed by the creator while he is
// offline; concurrently (not having seen the removal) he sets retention
// to one second. Carol receives his retention op before the removal: it
// is valid there, her expiry pass deletes the history. Once the removal
// arrives Bob's op is void — but Carol's history is gone, while Alice,
// who saw the removal first, still has it: replicas diverge for good and
// a removed admin has deleted everyone's history that his op reached first.
func TestRedteam3VoidRetentionDeletesForGood(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	p, _ := ok(split(ra.Promote(bob.ID)))
	deliver(t, p, rb, rc)
	hist, _ := ok(split(ra.Send("bed 4: allergic to penicillin", SendOptions{})))
	deliver(t, hist, rb, rc)
	w.now = w.now.Add(time.Hour)
	rm, _ := ok(split(ra.Remove(bob.ID)))
	wipe, _ := ok(split(rb.SetRetention(time.Second))) // concurrent with his removal
	deliver(t, wipe, rc)
	w.now = w.now.Add(time.Minute)
	rc.Expire(w.now) // carol's hourly pass, before the removal reaches her
	deliver(t, rm, rc)
	deliver(t, wipe, ra)
	ra.Expire(w.now)
	if slices.Contains(texts(ra.State()), "bed 4: allergic to penicillin") && !slices.Contains(texts(rc.State()), "bed 4: allergic to penicillin") {
		t.Fatal("FINDING: a removed admin's void retention op deleted carol's history for good; alice keeps it (replicas diverge)")
	}
}
