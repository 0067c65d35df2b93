package chat

// Red-team round 5 on cumulative receipts: each test fails on the code it
// was written against; the failure is the finding.

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// TestRedteam5UnreadableFloodStopsReceipts: a cumulative receipt must
// except every content op its device holds, was a recipient of and cannot
// read (unreadable), and is refused outright when there are more than
// maxTargets (1,024) of them; only a receipt that was made records its
// exceptions (r.excepted), so the count never goes down. A malicious
// member sends, in one burst, 1,025 content ops in the current epoch at
// fresh chain indices whose bodies are garbage: each is authorised (a
// member, in an epoch it holds, neither void nor equivocal), stored, and
// unreadable for ever. From then on the victim cannot make any delivered
// or read receipt in the conversation — every sender sees the victim
// stuck at "queued"/"held" for every later message, although its device
// has them and its user reads them. Impact: one member silences another
// member's delivery and read states for good (a lying "not delivered" on
// urgent clinical messages, which senders act on).
func TestRedteam5UnreadableFloodStopsReceipts(t *testing.T) {
	w := newWorld(t)
	alice, bob, mallory := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mallory))
	ep, _ := rm.current(rm.headView())
	refused := 0
	for i := range maxTargets + 1 {
		// Garbage bodies (sealRaw without a chain); rb stores each and
		// reports that it cannot open it.
		if err := rb.Receive(sealRaw(t, rm, ep, nil, "", uint32(100+i))); errors.Is(err, ErrNotAuthorised) {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("setup: %d garbage ops refused as unauthorised", refused)
	}
	ok := must[crdt.OpID](t)
	msg, m := ok(split(ra.Send("urgent: bed 4", SendOptions{})))
	deliver(t, msg, rb)
	out, err := rb.Receipt(Delivered)
	if err == nil && len(out.Envelopes) > 0 {
		deliver(t, out.Envelopes, ra)
		fetchMissing(t, rb, ra) // the receipts depend on mallory's ops: sync brings them
	}
	if got := levelOf(t, ra, m, bob.ID); got < Delivered {
		t.Fatalf("FINDING: after mallory's %d unreadable ops bob holds alice's message but cannot acknowledge "+
			"delivery (receipt error: %v); alice sees bob at level %d for ever", maxTargets+1, err, got)
	}
	read, err := rb.Receipt(Read, m)
	if err != nil {
		t.Fatalf("FINDING: bob read alice's message but cannot say so: %v", err)
	}
	deliver(t, read.Envelopes, ra)
	fetchMissing(t, rb, ra)
	if got := levelOf(t, ra, m, bob.ID); got != Read {
		t.Fatalf("after bob's read receipt alice sees level %d, want Read", got)
	}
	// Never claimed: mallory's garbage stays below Delivered for bob, and
	// a later message is delivered again, by naming it.
	for _, g := range rb.unreadable() {
		if info := ra.ops[g]; info != nil && levelOfAny(ra, g, bob.ID) > 0 {
			t.Fatalf("bob's receipts claim an op he cannot read")
		}
	}
	msg2, m2 := ok(split(ra.Send("bed 5", SendOptions{})))
	deliver(t, msg2, rb)
	out, err = rb.Receipt(Delivered)
	if err != nil || len(out.Envelopes) != 1 {
		t.Fatalf("second delivered receipt: %d ops, %v; want 1", len(out.Envelopes), err)
	}
	deliver(t, out.Envelopes, ra)
	fetchMissing(t, rb, ra)
	if got := levelOf(t, ra, m2, bob.ID); got != Delivered {
		t.Fatalf("second message at level %d for bob, want Delivered", got)
	}
	if got := levelOf(t, ra, m, bob.ID); got != Read {
		t.Fatalf("first message fell to level %d", got)
	}
}

// fetchMissing plays anti-entropy: to fetches from from every op it waits
// for, until it waits for none.
func fetchMissing(t *testing.T, from, to *Replica) {
	t.Helper()
	for range 100 {
		miss := to.Missing()
		if len(miss) == 0 {
			return
		}
		from.SortCausal(miss)
		for _, id := range miss {
			if raw, ok := from.Envelope(id); ok {
				_ = to.Receive(raw) // mallory's garbage does not open; it is stored all the same
			}
		}
	}
	t.Fatalf("still missing %d ops", len(to.Missing()))
}

// levelOfAny is the level p's receipts give op id in r's State, or 0 when
// id is not a message there (garbage is not).
func levelOfAny(r *Replica, id crdt.OpID, p peer.ID) int {
	for _, m := range r.State().Messages {
		if m.ID == id {
			return m.Receipts[p]
		}
	}
	return 0
}

// TestReceiptExceptionsSurviveRestart: what our cumulative receipts
// excepted is rebuilt from them after a restart (r.excepted is in memory
// only), so exceptions made in several receipts under the limit are not
// listed again all at once — the receipts stay cumulative — and garbage
// stays unclaimed.
func TestReceiptExceptionsSurviveRestart(t *testing.T) {
	w := newWorld(t)
	alice, bob, mallory := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mallory))
	ep, _ := rm.current(rm.headView())
	ok := must[crdt.OpID](t)
	idx := uint32(100)
	for round := range 2 {
		for range maxTargets/2 + 10 {
			_ = rb.Receive(sealRaw(t, rm, ep, nil, "", idx))
			idx++
		}
		msg, _ := ok(split(ra.Send("round", SendOptions{})))
		deliver(t, msg, rb)
		out, err := rb.Receipt(Delivered)
		if err != nil || len(out.Envelopes) != 1 || !rb.ops[out.ID].p.Past {
			t.Fatalf("round %d: want one cumulative receipt, got %d ops, %v", round, len(out.Envelopes), err)
		}
	}
	rb.excepted, rb.exceptedLoaded = nil, false // what a restart loses
	msg, m := ok(split(ra.Send("after restart", SendOptions{})))
	deliver(t, msg, rb)
	out, err := rb.Receipt(Delivered)
	if err != nil || len(out.Envelopes) != 1 {
		t.Fatalf("after restart: %d ops, %v", len(out.Envelopes), err)
	}
	if p := rb.ops[out.ID].p; !p.Past || len(p.Except) != 0 {
		t.Fatalf("after restart the receipt is not cumulative (past %v) or excepts %d again", p.Past, len(p.Except))
	}
	deliver(t, out.Envelopes, ra)
	fetchMissing(t, rb, ra)
	if got := levelOf(t, ra, m, bob.ID); got != Delivered {
		t.Fatalf("level %d, want Delivered", got)
	}
	for id, info := range ra.ops {
		if info.sender == mallory.ID && info.p == nil && levelOfAny(ra, id, bob.ID) > 0 {
			t.Fatal("garbage claimed")
		}
	}
}

// TestReceiptNeverNamesWhatItCannotRead: messages bob holds but cannot
// read, concurrent and more than MaxDeps of them (so most are heads his
// receipt's deps leave out), are excepted and not named in Heads — naming
// an op counts even against an exception, which would show them
// delivered to their senders.
func TestReceiptNeverNamesWhatItCannotRead(t *testing.T) {
	w := newWorld(t)
	devs := []*Device{w.device("alice"), w.device("bob")}
	for range crdt.MaxDeps + 8 {
		devs = append(devs, w.device("member"))
	}
	rs := w.group("big", devs...)
	ra, rb := rs[0], rs[1]
	var msgs []crdt.OpID
	var envs [][]byte
	for _, r := range rs[2:] {
		e, m, err := split(r.Send("hi", SendOptions{}))
		if err != nil {
			t.Fatal(err)
		}
		msgs, envs = append(msgs, m), append(envs, e...)
	}
	deliver(t, envs, ra)
	rb.recv.DropEpoch(ra.ops[msgs[0]].epoch) // bob's key is gone
	for _, e := range envs {
		_ = rb.Receive(e)
	}
	if got := len(rb.unreadable()); got != len(msgs) {
		t.Fatalf("test setup: bob cannot read %d of %d", got, len(msgs))
	}
	out, err := rb.Receipt(Delivered)
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, out.Envelopes, ra)
	for _, m := range msgs {
		if got := levelOf(t, ra, m, devs[1].ID); got != 0 {
			t.Fatalf("message %s bob cannot read is shown %s", m.String()[:8], levelState[got])
		}
	}
}
