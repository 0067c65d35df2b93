package chat

import (
	"errors"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// levelOf is the receipt level r's state shows for msg and recipient p
// (-1: p is not a recipient of msg).
func levelOf(t *testing.T, r *Replica, msg crdt.OpID, p peer.ID) int {
	t.Helper()
	for _, m := range r.State().Messages {
		if m.ID == msg {
			if lvl, ok := m.Receipts[p]; ok {
				return lvl
			}
			return -1
		}
	}
	t.Fatalf("no message %s", msg.String()[:12])
	return -1
}

// TestCumulativeReceiptCoversItsPast: one delivered receipt covers every
// message in its causal past, and nothing else — not a message concurrent
// with it (its sender never had it), not one sent after it.
func TestCumulativeReceiptCoversItsPast(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	e2, m2 := ok(split(ra.Send("two", SendOptions{})))
	deliver(t, slices.Concat(e1, e2), rb, rc)
	e3, m3 := ok(split(rc.Send("concurrent with bob's receipt", SendOptions{}))) // bob never gets it
	rcpt, rid := ok(split(rb.Receipt(Delivered)))
	if len(rcpt) != 1 {
		t.Fatalf("%d envelopes for one cumulative receipt", len(rcpt))
	}
	e4, m4 := ok(split(ra.Send("after", SendOptions{})))
	deliver(t, slices.Concat(e3, rcpt), ra)
	deliver(t, e4, rc)
	deliver(t, rcpt, rc)
	for _, r := range []*Replica{ra, rc} {
		for _, c := range []struct {
			msg  crdt.OpID
			want int
		}{{m1, Delivered}, {m2, Delivered}, {m3, 0}, {m4, 0}} {
			if got := levelOf(t, r, c.msg, bob.ID); got != c.want {
				t.Errorf("%s: bob's level on %s is %d, want %d", w.names[r.dev.ID], c.msg.String()[:8], got, c.want)
			}
		}
	}
	if d, _ := ra.Delivery(m1); d.PerRecipient[bob.ID] != StateDelivered || d.PerRecipient[carol.ID] != StateQueued {
		t.Fatalf("per recipient: %+v", d.PerRecipient)
	}
	// The receipt endorses exactly its causal past (the revoked-sender
	// rule): m1, m2; not m3.
	for _, c := range []struct {
		msg  crdt.OpID
		want bool
	}{{m1, true}, {m2, true}, {m3, false}} {
		if got := ra.inPast(c.msg, rid); got != c.want {
			t.Errorf("%s in the receipt's past: %v", c.msg.String()[:8], got)
		}
	}
}

// TestReadCoversOnlyWhatWasRead: a read receipt naming a message covers it
// and its causal past — never a later message the device holds but was
// not said to have read, a concurrent one, or one it never had.
func TestReadCoversOnlyWhatWasRead(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	e2, m2 := ok(split(rc.Send("concurrent with one", SendOptions{})))
	deliver(t, slices.Concat(e1, e2), rb)
	e3, m3 := ok(split(ra.Send("after one", SendOptions{})))
	deliver(t, e3, rb)
	read, _ := ok(split(rb.Receipt(Read, m1)))
	deliver(t, slices.Concat(e2, read), ra)
	for _, c := range []struct {
		msg  crdt.OpID
		want int
	}{{m1, Read}, {m3, 0}} {
		if got := levelOf(t, ra, c.msg, bob.ID); got != c.want {
			t.Errorf("bob's level on %s is %d, want %d", c.msg.String()[:8], got, c.want)
		}
	}
	if got := levelOf(t, ra, m2, bob.ID); got != 0 {
		t.Errorf("a concurrent message marked %d", got)
	}
	// Reading the later message covers the earlier ones too: their past.
	read2, _ := ok(split(rb.Receipt(Read, m3)))
	deliver(t, read2, ra)
	if levelOf(t, ra, m1, bob.ID) != Read || levelOf(t, ra, m3, bob.ID) != Read {
		t.Fatal("read of the latest message does not cover its past")
	}
	// Nothing is made for a message this device never had.
	var never crdt.OpID
	never[0] = 7
	if out, err := rb.Receipt(Read, never); !errors.Is(err, ErrNoSuchMessage) || len(out.Envelopes) != 0 {
		t.Fatalf("read of an unknown message: %v, %d envelopes", err, len(out.Envelopes))
	}
	if out, err := rb.Receipt(Acknowledged, never); !errors.Is(err, ErrNoSuchMessage) || len(out.Envelopes) != 0 {
		t.Fatalf("acknowledgement of an unknown message: %v, %d envelopes", err, len(out.Envelopes))
	}
	// Acknowledgements stay explicit: one message, not its past.
	ack, _ := ok(split(rb.Receipt(Acknowledged, m1)))
	deliver(t, ack, ra)
	if levelOf(t, ra, m1, bob.ID) != Acknowledged || levelOf(t, ra, m3, bob.ID) != Read {
		t.Fatal("acknowledgement spread beyond its message")
	}
}

// TestReceiptExceptsWhatCannotBeRead: a message the device holds but cannot
// read (its key expired) is not claimed delivered by its cumulative
// receipt, while everything around it is.
func TestReceiptExceptsWhatCannotBeRead(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("readable", SendOptions{})))
	deliver(t, e1, rb)
	e2, m2 := ok(split(ra.Send("arrives after its key is gone", SendOptions{})))
	ep := rb.ops[m1].epoch
	rb.recv.DropEpoch(ep) // as Expire does for a superseded epoch
	deliver(t, e2, rb)
	if slices.Contains(texts(rb.State()), "arrives after its key is gone") {
		t.Fatal("test setup: bob reads the message")
	}
	rcpt, _ := ok(split(rb.Receipt(Delivered)))
	deliver(t, rcpt, ra)
	if levelOf(t, ra, m1, bob.ID) != Delivered {
		t.Fatal("the readable message is not delivered")
	}
	if got := levelOf(t, ra, m2, bob.ID); got != 0 {
		t.Fatalf("a message bob cannot read is shown %s", levelState[got])
	}
	// A later receipt, made without the exception, still does not claim
	// it; the later message (in a new epoch bob holds) it does.
	carol := w.device("carol")
	add, _ := ok(split(ra.Add(carol.ID)))
	deliver(t, add, rb)
	e3, m3 := ok(split(ra.Send("later", SendOptions{})))
	deliver(t, e3, rb)
	if !slices.Contains(texts(rb.State()), "later") {
		t.Fatal("test setup: bob cannot read the later message")
	}
	rcpt2, _ := ok(split(rb.Receipt(Delivered)))
	deliver(t, rcpt2, ra)
	if levelOf(t, ra, m3, bob.ID) != Delivered || levelOf(t, ra, m2, bob.ID) != 0 {
		t.Fatal("a later receipt claims the unreadable message")
	}
}

// TestReceiptSendersAsBefore: a cumulative receipt counts exactly as an
// explicit one did — a revoked device's only while an unrevoked member's op
// depends on it, a removed device's not when concurrent with its removal,
// and a non-recipient's never.
func TestReceiptSendersAsBefore(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol, dave := w.device("alice"), w.device("bob"), w.device("carol"), w.device("dave")
	ra, rb, rc, rd := unpack4(w.group("t", alice, bob, carol, dave))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	deliver(t, e1, rb, rc, rd)

	// Revoked: bob's receipt stands only once carol's op depends on it.
	rcptB, _ := ok(split(rb.Receipt(Delivered)))
	ra.SetRevoked(func(p peer.ID) bool { return p == bob.ID })
	deliver(t, rcptB, ra)
	if got := levelOf(t, ra, m1, bob.ID); got != 0 {
		t.Fatalf("a revoked device's unendorsed receipt counts: %d", got)
	}
	deliver(t, rcptB, rc)
	rcptC, _ := ok(split(rc.Receipt(Delivered)))
	deliver(t, rcptC, ra)
	if levelOf(t, ra, m1, bob.ID) != Delivered || levelOf(t, ra, m1, carol.ID) != Delivered {
		t.Fatal("an endorsed receipt of a revoked device does not count as before")
	}

	// Removed: dave's receipt, concurrent with his removal, is void.
	rm, _ := ok(split(ra.Remove(dave.ID)))
	rcptD, _ := ok(split(rd.Receipt(Delivered)))
	deliver(t, rcptD, ra)
	if got := levelOf(t, ra, m1, dave.ID); got != 0 {
		t.Fatalf("a receipt concurrent with its sender's removal counts: %d", got)
	}
	deliver(t, slices.Concat(rcptB, rcptC, rm), rd)
	if _, err := rd.Receipt(Delivered); !errors.Is(err, ErrNotMember) {
		t.Fatalf("a removed device made a receipt: %v", err)
	}

	// Not a recipient: alice's own receipt never marks her message.
	own, _ := ok(split(ra.Receipt(Delivered)))
	deliver(t, own, rc)
	if got := levelOf(t, rc, m1, alice.ID); got != -1 {
		t.Fatalf("the sender is listed as a recipient: %d", got)
	}
}

// TestMalformedReceiptRefused: receipts whose payload breaks the format
// (sealed with the right key by a member), or whose envelope was forged
// or altered, change nothing.
func TestMalformedReceiptRefused(t *testing.T) {
	w := newWorld(t)
	alice, bob := w.device("alice"), w.device("bob")
	ra, rb := unpack2(w.group("t", alice, bob))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	deliver(t, e1, rb)
	short := make([]byte, 31)
	many := make([][]byte, maxTargets+1)
	for i := range many {
		many[i] = m1[:]
	}
	for _, c := range []struct {
		name string
		p    payload
	}{
		{"cumulative acknowledgement", payload{Kind: kindReceipt, Level: Acknowledged, Past: true}},
		{"cumulative without a level", payload{Kind: kindReceipt, Heads: [][]byte{m1[:]}}},
		{"cumulative with targets", payload{Kind: kindReceipt, Level: Delivered, Past: true, Targets: [][]byte{m1[:]}}},
		{"short head", payload{Kind: kindReceipt, Level: Delivered, Heads: [][]byte{short}}},
		{"short exception", payload{Kind: kindReceipt, Level: Delivered, Past: true, Except: [][]byte{short}}},
		{"exceptions alone", payload{Kind: kindReceipt, Level: Delivered, Except: [][]byte{m1[:]}}},
		{"too many heads", payload{Kind: kindReceipt, Level: Delivered, Heads: many}},
		{"heads on another kind", payload{Kind: kindLeave, Past: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.p.check() == nil {
				t.Fatal("check passes")
			}
			pt, err := detcbor.Marshal(&c.p)
			if err != nil {
				t.Fatal(err)
			}
			env := rb.newEnvelope()
			ep, _ := rb.controlEpoch(rb.headView())
			if err := e2e.SealControl(env, ep, rb.control[ep], pt); err != nil {
				t.Fatal(err)
			}
			raw, err := rb.signed(env)
			if err != nil {
				t.Fatal(err)
			}
			if err := ra.Receive(raw); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("receive: %v", err)
			}
			if got := levelOf(t, ra, m1, bob.ID); got != 0 {
				t.Fatalf("marked %d", got)
			}
		})
	}
	// Forged: the same receipt signed by another key, or altered after
	// signing, never reaches the DAG.
	good, _ := ok(split(rb.Receipt(Delivered)))
	env, err := e2e.Decode(good[0])
	if err != nil {
		t.Fatal(err)
	}
	env.Sender = []byte(alice.ID) // signed by alice, then claimed as bob's
	if err := env.Sign(alice.Key); err != nil {
		t.Fatal(err)
	}
	env.Sender = []byte(bob.ID)
	forged, _ := env.Encode()
	altered := slices.Clone(good[0])
	altered[len(altered)-40] ^= 1
	for _, raw := range [][]byte{forged, altered} {
		if err := ra.Receive(raw); err == nil {
			t.Fatal("a forged receipt was taken")
		}
	}
	if got := levelOf(t, ra, m1, bob.ID); got != 0 {
		t.Fatalf("a forged receipt marked %d", got)
	}
	deliver(t, good, ra)
	if levelOf(t, ra, m1, bob.ID) != Delivered {
		t.Fatal("the genuine receipt does not count")
	}
}

// TestOldReceiptsStillCount: receipts naming each message (the format
// before cumulative receipts, still in DAGs) count beside cumulative ones,
// each device at its highest level.
func TestOldReceiptsStillCount(t *testing.T) {
	w := newWorld(t)
	alice, bob, carol := w.device("alice"), w.device("bob"), w.device("carol")
	ra, rb, rc := unpack3(w.group("t", alice, bob, carol))
	ok := must[crdt.OpID](t)
	e1, m1 := ok(split(ra.Send("one", SendOptions{})))
	e2, m2 := ok(split(ra.Send("two", SendOptions{})))
	deliver(t, slices.Concat(e1, e2), rb, rc)
	old, _ := ok(split(rb.do(&payload{Kind: kindReceipt, Level: Read, Targets: [][]byte{m2[:]}})))
	cum, _ := ok(split(rb.Receipt(Delivered)))
	oldC, _ := ok(split(rc.do(&payload{Kind: kindReceipt, Level: Delivered, Targets: [][]byte{m1[:]}})))
	deliver(t, slices.Concat(old, cum, oldC), ra)
	for _, c := range []struct {
		msg  crdt.OpID
		who  peer.ID
		want int
	}{{m1, bob.ID, Delivered}, {m2, bob.ID, Read}, {m1, carol.ID, Delivered}, {m2, carol.ID, 0}} {
		if got := levelOf(t, ra, c.msg, c.who); got != c.want {
			t.Errorf("%s on %s: %d, want %d", w.names[c.who], c.msg.String()[:8], got, c.want)
		}
	}
}

// TestReceiptBeyondMaxDeps: with more heads than an op may depend on, a
// cumulative receipt names the rest, so it still covers every message its
// sender holds.
func TestReceiptBeyondMaxDeps(t *testing.T) {
	w := newWorld(t)
	devs := []*Device{w.device("alice"), w.device("bob")}
	for range crdt.MaxDeps + 8 {
		devs = append(devs, w.device("member"))
	}
	rs := w.group("big", devs...)
	ra, rb := rs[0], rs[1]
	var msgs []crdt.OpID
	var envs [][]byte
	for _, r := range rs[2:] { // concurrent: every one a head at bob
		e, m, err := split(r.Send("hi", SendOptions{}))
		if err != nil {
			t.Fatal(err)
		}
		msgs, envs = append(msgs, m), append(envs, e...)
	}
	deliver(t, envs, rb, ra)
	out, err := rb.Receipt(Delivered)
	if err != nil {
		t.Fatal(err)
	}
	if p := rb.ops[out.ID].p; !p.Past || len(p.Heads) == 0 {
		t.Fatalf("receipt names no heads beyond its deps: %d", len(p.Heads))
	}
	deliver(t, out.Envelopes, ra)
	for _, m := range msgs {
		if got := levelOf(t, ra, m, devs[1].ID); got != Delivered {
			t.Fatalf("message %s: %d", m.String()[:8], got)
		}
	}
}
