package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// The key holder the witness exists against cuts the log's tail and then
// grows it again past the entry the witness holds, before it next meets the
// witness: entries 1–3 are the genuine ones, 4–7 new. The witness keeps a
// head only by its entry number, so it replaces the genuine head 6 by the
// rewritten head 7 and answers with it; the device's check passes, and the
// evidence that entries 4–6 existed is gone from the witness as well.
// A witness should keep a head only if the new one is shown to extend it
// (for instance the deposit carries the entry hashes from the held entry
// to the new one, or the witness keeps the first conflicting head as
// evidence), and the device should learn the mismatch.
func TestRedteam8RegrownLogReplacesWitnessedHead(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 6 })
	genuine := held(t, anchor, dev)

	// The key holder keeps the first 3 genuine entries (the same clock and
	// events give the same chain), drops 4–6, and appends 4 others.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	for range 4 {
		if _, err := dev.log.Append(context.Background(), audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "innocuous"}}); err != nil {
			t.Fatal(err)
		}
	}
	dev.start(t, w, false)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the witness answers the rewritten device", func() bool {
		return dev.svc.Status() != nil
	})
	if s := dev.svc.Status(); s.Error == "" {
		t.Errorf("the rewritten log passes the witness's check: status %+v", s)
	}
	if h := held(t, anchor, dev); h.Seq != genuine.Seq || h.Hash != genuine.Hash {
		t.Errorf("the witness replaced the genuine head %d by the rewritten head %d: the cut entries leave no trace", genuine.Seq, h.Seq)
	}
	// The witness keeps the rewritten head as evidence, and answers it.
	ev, ok, err := Conflict(context.Background(), anchor.st, dev.h.ID())
	if err != nil || !ok || ev.Seq != 7 || ev.Hash != dev.log.Current().Hash {
		t.Fatalf("evidence kept: %d %v %v", ev.Seq, ok, err)
	}
	if s := dev.svc.Status(); !strings.Contains(s.Error, "do not extend") {
		t.Errorf("status %+v: want the conflict named", s)
	}
	check.Eventually(t, 10*time.Second, "the device keeps the answer naming the conflict", func() bool {
		a, ok, err := Mine(context.Background(), dev.st, dev.sk.Public().(ed25519.PublicKey))
		return err == nil && ok && a.Conflict != nil && a.Conflict.Seq == 7 && a.Held.Seq == genuine.Seq
	})
	// The rewritten log fails against the witness's held head too.
	if _, err := dev.log.Verify(context.Background(), &genuine); err == nil {
		t.Fatal("the rewritten log verifies against the genuine head")
	}
}

// closeStore is a store that records being used after it was closed.
type closeStore struct {
	ds.Batching
	mu     sync.Mutex
	closed bool
	late   int
}

func (c *closeStore) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.late++
	}
}

func (c *closeStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	c.touch()
	return c.Batching.Get(ctx, k)
}

func (c *closeStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	c.touch()
	return c.Batching.Put(ctx, k, v)
}

// Service.Close removes the handler and waits for its own goroutines, but
// not for deposits being handled: a colleague that opened a deposit stream
// before Close and writes after it makes the witness read and write its
// store after Close returned (the device closes its store next). The
// project's store refuses calls after Close, so the write is lost rather
// than corrupting anything, but the handler is a goroutine without an
// owner. handle should be counted in the service's WaitGroup (and end on
// its context), as node.owned does for the node's handlers.
func TestRedteam8DepositHandledAfterClose(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 4, false)
	// Restart the witness on a store that notices late use.
	anchor.svc.Close()
	cs := &closeStore{Batching: anchor.st}
	anchor.st = cs
	anchor.start(t, w, true)
	w.connect(t, anchor, dev)

	rec, err := dev.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	var frame bytes.Buffer
	if err := msgio.NewVarintWriter(&frame).WriteMsg(depositOf(t, rec)); err != nil {
		t.Fatal(err)
	}
	half := frame.Len() / 2
	s, err := dev.h.NewStream(context.Background(), anchor.h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	// Half the frame: the witness starts handling and waits for the rest.
	if _, err := s.Write(frame.Bytes()[:half]); err != nil {
		t.Fatal(err)
	}
	check.Eventually(t, 10*time.Second, "the witness is handling the deposit", func() bool {
		anchor.svc.mu.Lock()
		defer anchor.svc.mu.Unlock()
		return anchor.svc.busy[dev.h.ID()]
	})
	anchor.svc.Close()
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()

	_, _ = s.Write(frame.Bytes()[half:]) // a witness that ended the deposit on Close resets it
	// Whatever the witness does with it, the stream ends: an answer or a
	// reset.
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = msgio.NewVarintReaderSize(s, maxAnswer).ReadMsg()
	cs.mu.Lock()
	late := cs.late
	cs.mu.Unlock()
	if late > 0 {
		t.Fatalf("the witness used its store %d times after Close returned", late)
	}
}

// `medmesh audit verify` without --head checks the log against the answer
// kept in the device's own store (Mine). The key holder, who holds the
// store, cuts the log and writes its own "answer": a head it signs itself,
// an answer it signs with the device key in the witness's name, or the
// witness's genuine answer for another device. Each must be refused: the
// kept answer is signed by the witness (and CheckWitness, in the device
// and command tests, checks the witness's certificate and role).
func TestRedteam8KeptAnswerWrittenByKeyHolder(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	other := w.add(t, key(3), 3, false)
	w.connect(t, anchor, dev)
	w.connect(t, anchor, other)
	dev.svc.Met(anchor.h.ID())
	other.svc.Met(anchor.h.ID())
	pub := dev.sk.Public().(ed25519.PublicKey)
	check.Eventually(t, 10*time.Second, "the answers are kept", func() bool {
		a, ok, err := Mine(context.Background(), dev.st, pub)
		b, ok2, err2 := Mine(context.Background(), other.st, other.sk.Public().(ed25519.PublicKey))
		return err == nil && ok && a.Held.Seq == 6 && err2 == nil && ok2 && b.Held.Seq == 3
	})
	othersAnswer, _ := other.st.Get(context.Background(), answerKey)

	// The key holder cuts the log to its first 3 entries.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	own := dev.log.Current()
	ownRec, err := own.Record()
	if err != nil {
		t.Fatal(err)
	}
	// An answer in the witness's name, signed with the device key.
	inName, err := signAnswer(dev.sk, answerBody{Device: []byte(dev.h.ID()), Witness: []byte(anchor.h.ID()),
		Time: t0.UnixNano(), Held: ownRec})
	if err != nil {
		t.Fatal(err)
	}
	// An answer in its own name (a device is no witness: CheckWitness refuses its role).
	selfSigned, err := signAnswer(dev.sk, answerBody{Device: []byte(dev.h.ID()), Witness: []byte(dev.h.ID()),
		Time: t0.UnixNano(), Held: ownRec})
	if err != nil {
		t.Fatal(err)
	}
	for name, forged := range map[string][]byte{
		"its own head": ownRec, "an answer in the witness's name": inName,
		"the witness's answer for another device": othersAnswer,
	} {
		if err := dev.st.Put(context.Background(), answerKey, forged); err != nil {
			t.Fatal(err)
		}
		// What `audit verify --dir DEV` does.
		a, ok, err := Mine(context.Background(), dev.st, pub)
		if err == nil && ok {
			if _, verr := dev.log.Verify(context.Background(), &a.Held); verr == nil {
				t.Fatalf("%s: the cut log verifies against a kept answer no witness gave (entry %d of 6)", name, a.Held.Seq)
			}
		}
		if !errors.Is(err, ErrAnswer) {
			t.Errorf("%s: kept answer read as %v", name, err)
		}
	}
	if err := dev.st.Put(context.Background(), answerKey, selfSigned); err != nil {
		t.Fatal(err)
	}
	// No device deposits with itself: an answer naming the device as its
	// own witness is refused as it is read (redteam10).
	if _, _, err := Mine(context.Background(), dev.st, pub); !errors.Is(err, ErrAnswer) {
		t.Fatalf("a self-signed answer read as %v", err)
	}
}

// What a device's key holder tries next against the extension proof: a
// newer head with no proof, a proof from another entry than the one held
// (a gap), a proof of the wrong entry, an oversized proof. None replaces
// the held head; a proof that fails is kept as evidence.
func TestRedteam8ProofAttacks(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 6 })
	dev.svc.Close() // the attacker speaks for the device from here
	genuine := held(t, anchor, dev)
	appendN(t, dev.log, 10)
	h := dev.log.Current()
	hrec, err := h.Record()
	if err != nil {
		t.Fatal(err)
	}
	pub := dev.sk.Public().(ed25519.PublicKey)
	send := func(dep deposit) (Answer, error) {
		raw, err := detcbor.Marshal(dep)
		if err != nil {
			t.Fatal(err)
		}
		s, err := dev.h.NewStream(ctx, anchor.h.ID(), Protocol)
		if err != nil {
			return Answer{}, err
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if err := msgio.NewVarintWriter(s).WriteMsg(raw); err != nil {
			return Answer{}, err
		}
		ans, err := msgio.NewVarintReaderSize(s, maxAnswer).ReadMsg()
		if err != nil {
			return Answer{}, err
		}
		return DecodeAnswer(ans, pub)
	}
	proof := func(from uint64) [][]byte {
		p, err := dev.log.Consistency(ctx, from, h.Seq)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, x := range p {
			out = append(out, x[:])
		}
		return out
	}
	unchanged := func(what string) {
		t.Helper()
		if g := held(t, anchor, dev); g.Seq != genuine.Seq || g.Hash != genuine.Hash {
			t.Fatalf("%s: the witness now holds %d", what, g.Seq)
		}
	}
	// No proof: the witness asks for one from the entry it holds.
	a, err := send(deposit{Head: hrec})
	if err != nil || a.Want != genuine.Seq || a.Held.Seq != genuine.Seq || a.Witness != anchor.h.ID() {
		t.Fatalf("no proof: %+v %v", a, err)
	}
	unchanged("no proof")
	// A genuine proof, but from another entry (a gap): asked again.
	a, err = send(deposit{Head: hrec, From: 3, Proof: proof(3)})
	if err != nil || a.Want != genuine.Seq || a.Conflict != nil {
		t.Fatalf("proof from entry 3: %+v %v", a, err)
	}
	unchanged("proof from another entry")
	// An oversized proof: the deposit is refused outright.
	big := make([][]byte, audit.MaxProof+1)
	for i := range big {
		big[i] = make([]byte, 32)
	}
	if _, err := send(deposit{Head: hrec, From: genuine.Seq, Proof: big}); err == nil {
		t.Fatal("an oversized proof was answered")
	}
	unchanged("oversized proof")
	check.Eventually(t, 10*time.Second, "the refused deposit is done with", func() bool {
		anchor.svc.mu.Lock()
		defer anchor.svc.mu.Unlock()
		return !anchor.svc.busy[dev.h.ID()]
	})
	if _, ok, _ := Conflict(ctx, anchor.st, dev.h.ID()); ok {
		t.Fatal("evidence kept before any proof failed")
	}
	// Entry 3's proof claimed as entry 6's: it fails, and is evidence.
	a, err = send(deposit{Head: hrec, From: genuine.Seq, Proof: proof(3)})
	if err != nil || a.Conflict == nil || a.Conflict.Seq != h.Seq {
		t.Fatalf("wrong proof: %+v %v", a, err)
	}
	unchanged("wrong proof")
	// The genuine proof is accepted, and the evidence stays in every answer.
	a, err = send(deposit{Head: hrec, From: genuine.Seq, Proof: proof(genuine.Seq)})
	if err != nil || a.Held.Seq != h.Seq || a.Conflict == nil {
		t.Fatalf("genuine proof: %+v %v", a, err)
	}
}

// A witness (a hostile or broken anchor) names two genuine heads of a
// device as a conflict: the device's own log vouches for both, so neither
// the device's status nor `audit verify` takes it for tampering. Evidence
// against a really rewritten log still stands.
func TestRedteam8WitnessClaimsFalseConflict(t *testing.T) {
	ctx := context.Background()
	dev, anchor := key(2), key(1)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l := openLog(t, d, dev, 6)
	h6 := l.Current()
	appendN(t, l, 4)
	h10 := l.Current()
	answer := func(held, conflict audit.Head) Answer {
		t.Helper()
		hr, _ := held.Record()
		cr, _ := conflict.Record()
		raw, err := signAnswer(anchor, answerBody{Device: []byte(peerID(t, dev)), Witness: []byte(peerID(t, anchor)),
			Time: t0.UnixNano(), Held: hr, Conflict: cr})
		if err != nil {
			t.Fatal(err)
		}
		a, err := DecodeAnswer(raw, dev.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if err := answer(h6, h10).Check(ctx, l.Reader); err != nil {
		t.Fatalf("two genuine heads named a conflict: %v", err)
	}
	// A rewritten copy: entries 1–3, then others past 6.
	d2 := dssync.MutexWrap(ds.NewMapDatastore())
	l2 := openLog(t, d2, dev, 3)
	for range 5 {
		if _, err := l2.Append(ctx, audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "innocuous"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := answer(h6, l2.Current()).Check(ctx, l2.Reader); !errors.Is(err, ErrConflict) {
		t.Fatalf("the rewritten log against the evidence: %v", err)
	}
	if err := answer(h6, l2.Current()).Check(ctx, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("evidence without a log to check: %v", err)
	}
}
