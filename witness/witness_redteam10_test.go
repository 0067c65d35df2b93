package witness

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math/bits"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// RFC 9162 tree over arbitrary leaves (entry hashes), as a key holder
// computes it: the witness never sees the leaves.
func rtLeaf(e [32]byte) [32]byte { return sha256.Sum256(append([]byte{0}, e[:]...)) }
func rtNode(l, r [32]byte) [32]byte {
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}
func rtSplit(n int) int { return 1 << (bits.Len64(uint64(n-1)) - 1) }
func rtMTH(leaves [][32]byte) [32]byte {
	if len(leaves) == 1 {
		return rtLeaf(leaves[0])
	}
	k := rtSplit(len(leaves))
	return rtNode(rtMTH(leaves[:k]), rtMTH(leaves[k:]))
}
func rtPath(m int, leaves [][32]byte) [][32]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := rtSplit(len(leaves))
	if m < k {
		return append(rtPath(m, leaves[:k]), rtMTH(leaves[k:]))
	}
	return append(rtPath(m-k, leaves[k:]), rtMTH(leaves[:k]))
}

// rtSignHead signs a version 2 head with any root, as the device key
// holder can (same CBOR layout as audit's headBody and record).
func rtSignHead(t *testing.T, sk ed25519.PrivateKey, seq uint64, hash, root [32]byte, at time.Time) []byte {
	t.Helper()
	type hb struct {
		V    uint8  `cbor:"1,keyasint"`
		Key  []byte `cbor:"2,keyasint"`
		Seq  uint64 `cbor:"3,keyasint"`
		Time int64  `cbor:"4,keyasint"`
		Hash []byte `cbor:"5,keyasint"`
		Root []byte `cbor:"6,keyasint,omitempty"`
	}
	type rec struct {
		Body []byte `cbor:"1,keyasint"`
		Sig  []byte `cbor:"2,keyasint"`
	}
	body, err := detcbor.Marshal(hb{V: 2, Key: sk.Public().(ed25519.PublicKey), Seq: seq, Time: at.UnixNano(), Hash: hash[:], Root: root[:]})
	if err != nil {
		t.Fatal(err)
	}
	r, err := detcbor.Marshal(rec{Body: body, Sig: ed25519.Sign(sk, append([]byte(audit.HeadDomain), body...))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.DecodeHead(r, sk.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return r
}

// The key holder rewrites the log past the witnessed entry and makes the
// witness accept it: the witness checks only that the held entry is in the
// new head's tree, but nothing binds that tree to the new head's own entry
// (its Hash) or to the log. So the key holder signs one stepping-stone head
// whose root is a fabricated tree — the rewritten log's leaves, with the
// held entry's hash put back at its place — and proves inclusion in it.
// The witness takes it; from then on the honest service deposits the
// rewritten log's real heads, each proving the stepping stone's entry (a
// real entry of the rewritten log) in its tree. The witness ends up
// holding a head of the rewritten log, with no evidence, and `audit verify`
// (the kept answer) passes.
func TestRedteam10FabricatedRootLaundersRewrittenLog(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 6 })
	genuine := held(t, anchor, dev)

	// The key holder rewrites: entries 1–3 kept, then other events, 8 in all.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	for range 5 {
		if _, err := dev.log.Append(ctx, audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "innocuous"}}); err != nil {
			t.Fatal(err)
		}
	}
	rewritten := dev.log.Current()
	var leaves [][32]byte
	for seq := uint64(1); seq <= rewritten.Seq; seq++ {
		e, err := dev.log.Entry(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, e.Hash)
	}
	if leaves[genuine.Seq-1] == genuine.Hash {
		t.Fatal("the rewrite did not change the witnessed entry")
	}
	// The stepping stone: the rewritten log's last entry, a fabricated root.
	fake := append([][32]byte(nil), leaves...)
	fake[genuine.Seq-1] = genuine.Hash
	stone := rtSignHead(t, dev.sk, rewritten.Seq, rewritten.Hash, rtMTH(fake), rewritten.Time)
	var proof [][]byte
	for _, p := range rtPath(int(genuine.Seq-1), fake) {
		proof = append(proof, append([]byte(nil), p[:]...))
	}
	raw, err := detcbor.Marshal(deposit{Head: stone, From: genuine.Seq, Proof: proof})
	if err != nil {
		t.Fatal(err)
	}
	s, err := dev.h.NewStream(ctx, anchor.h.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := msgio.NewVarintWriter(s).WriteMsg(raw); err != nil {
		t.Fatal(err)
	}
	_, _ = msgio.NewVarintReaderSize(s, maxAnswer).ReadMsg()
	s.Close()
	check.Eventually(t, 10*time.Second, "the deposit is handled", func() bool {
		anchor.svc.mu.Lock()
		defer anchor.svc.mu.Unlock()
		return !anchor.svc.busy[dev.h.ID()]
	})
	// The stepping stone itself is refused, and is the evidence.
	if g := held(t, anchor, dev); g.Seq != genuine.Seq || g.Hash != genuine.Hash {
		t.Fatalf("the witness took the stepping stone: it holds %d", g.Seq)
	}
	if c, ok, err := Conflict(ctx, anchor.st, dev.h.ID()); err != nil || !ok || c.Seq != rewritten.Seq || c.Hash != rewritten.Hash {
		t.Fatalf("the stepping stone is not the evidence: %d %v %v", c.Seq, ok, err)
	}

	// The honest software runs on the rewritten log and grows it.
	appendN(t, dev.log, 2)
	dev.start(t, w, false)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the device got an answer after depositing its regrown head", func() bool {
		dev.svc.mu.Lock()
		defer dev.svc.mu.Unlock()
		return dev.svc.sent[anchor.h.ID()] == dev.log.Current().Seq
	})

	h := held(t, anchor, dev)
	_, hasConflict, _ := Conflict(ctx, anchor.st, dev.h.ID())
	if h.Seq != genuine.Seq && !hasConflict {
		a, ok, _ := Mine(ctx, dev.st, dev.sk.Public().(ed25519.PublicKey))
		verr := errors.New("no kept answer")
		if ok {
			verr = a.Check(ctx, dev.log.Reader)
			if verr == nil {
				_, verr = dev.log.Verify(ctx, &a.Held)
			}
		}
		t.Fatalf("the witness held entry %d (%x) and now holds entry %d of a rewritten log, with no evidence; "+
			"device status %+v; the kept answer checks: %v", genuine.Seq, genuine.Hash[:8], h.Seq, dev.svc.Status(), verr)
	}
}

// A hostile anchor answers with evidence and no held head: one genuine
// head of the device (any it was given) named as the conflict. Disproved
// needs a held head, so the honest device's own log cannot disprove it:
// its status shows tampering, the answer is kept (the first naming
// evidence), and `audit verify` fails from then on.
func TestRedteam10ConflictWithoutHeldBlamesHonestDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	genuine := dev.log.Current()
	cr, err := genuine.Record()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := signAnswer(anchor.sk, answerBody{Device: []byte(dev.h.ID()), Witness: []byte(anchor.h.ID()),
		Time: t0.UnixNano(), Conflict: cr})
	if err != nil {
		t.Fatal(err)
	}
	pub := dev.sk.Public().(ed25519.PublicKey)
	// The answer is malformed, not evidence: refused as it is read, so the
	// device neither keeps it nor reports tampering.
	if _, err := DecodeAnswer(raw, pub); !errors.Is(err, ErrAnswer) {
		t.Fatalf("a conflict-only answer decodes: %v", err)
	}
	// Built past the decoder, Check still does not take it for evidence.
	a := Answer{Device: dev.h.ID(), Witness: anchor.h.ID(), Time: t0, Conflict: &genuine, Raw: raw}
	if err := a.Check(ctx, dev.log.Reader); !errors.Is(err, ErrAnswer) || errors.Is(err, ErrConflict) {
		t.Fatalf("a conflict-only answer checks as %v", err)
	}
	// The next try: a held head besides, one the log vouches for — the
	// honest log vouches for both, so it is disproved, not kept as failing.
	appendN(t, dev.log, 1)
	hr, err := dev.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	raw, err = signAnswer(anchor.sk, answerBody{Device: []byte(dev.h.ID()), Witness: []byte(anchor.h.ID()),
		Time: t0.UnixNano(), Held: hr, Conflict: cr})
	if err != nil {
		t.Fatal(err)
	}
	a, err = DecodeAnswer(raw, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Check(ctx, dev.log.Reader); err != nil {
		t.Fatalf("two genuine heads named as a conflict blame the honest log: %v", err)
	}
	dev.svc.answered(anchor.h.ID(), a)
	if s := dev.svc.Status(); s == nil || s.Error != "" {
		t.Fatalf("status after a disproved conflict: %+v", s)
	}
	if f, err := Failed(ctx, dev.st, pub); err != nil || len(f) != 0 {
		t.Fatalf("a disproved conflict kept as a failing answer: %d %v", len(f), err)
	}
}

// A device restored from an older copy meets the anchor that holds its
// newer head: its status and kept answer show the truncation. It grows
// past that entry and meets another witness, one that never saw it: that
// witness takes its head (it holds nothing), and its answer — a newer held
// head, no conflict — replaces the kept one. After a restart the status
// is clean, and `audit verify` (the kept answer) passes: the mismatch
// that "stays set" is gone, with no key-holder tampering beyond the
// restore.
func TestRedteam10FreshWitnessReplacesKeptMismatch(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchorA := w.add(t, key(1), 1, true)
	anchorB := w.add(t, key(3), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchorA, dev)
	dev.svc.Met(anchorA.h.ID())
	check.Eventually(t, 10*time.Second, "A holds entry 6", func() bool { return held(t, anchorA, dev).Seq == 6 })

	// The older copy (3 entries) put back.
	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	dev.start(t, w, false)
	dev.svc.Met(anchorA.h.ID())
	check.Eventually(t, 10*time.Second, "the device learns it is behind A", func() bool {
		s := dev.svc.Status()
		return s != nil && s.Error != ""
	})
	pub := dev.sk.Public().(ed25519.PublicKey)
	if a, ok, _ := Mine(ctx, dev.st, pub); !ok || a.Check(ctx, dev.log.Reader) == nil {
		t.Fatal("the kept answer does not show the truncation")
	}
	// Away from A, it grows past 6 and meets B.
	if err := w.mn.DisconnectPeers(anchorA.h.ID(), dev.h.ID()); err != nil {
		t.Fatal(err)
	}
	_ = w.mn.UnlinkPeers(anchorA.h.ID(), dev.h.ID())
	appendN(t, dev.log, 7)
	w.connect(t, anchorB, dev)
	dev.svc.Met(anchorB.h.ID())
	check.Eventually(t, 10*time.Second, "B holds the regrown head and the device has its answer", func() bool {
		dev.svc.mu.Lock()
		defer dev.svc.mu.Unlock()
		return held(t, anchorB, dev).Seq == 10 && dev.svc.known[anchorB.h.ID()] == 10
	})

	dev.svc.Close()
	dev.start(t, w, false)
	a, ok, err := Mine(ctx, dev.st, pub)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	cerr := a.Check(ctx, dev.log.Reader)
	_, verr := dev.log.Verify(ctx, &a.Held)
	if s := dev.svc.Status(); (s == nil || s.Error == "") && cerr == nil && verr == nil {
		t.Fatalf("after the restart the device's status is %+v and its kept answer (%s, entry %d) verifies: the truncation A showed is forgotten",
			s, a.Witness, a.Held.Seq)
	}
}

// rtSignHeadV1 signs a version 1 head (no root), as the key holder can.
func rtSignHeadV1(t *testing.T, sk ed25519.PrivateKey, seq uint64, hash [32]byte, at time.Time) []byte {
	t.Helper()
	type hb struct {
		V    uint8  `cbor:"1,keyasint"`
		Key  []byte `cbor:"2,keyasint"`
		Seq  uint64 `cbor:"3,keyasint"`
		Time int64  `cbor:"4,keyasint"`
		Hash []byte `cbor:"5,keyasint"`
	}
	type rec struct {
		Body []byte `cbor:"1,keyasint"`
		Sig  []byte `cbor:"2,keyasint"`
	}
	body, err := detcbor.Marshal(hb{V: 1, Key: sk.Public().(ed25519.PublicKey), Seq: seq, Time: at.UnixNano(), Hash: hash[:]})
	if err != nil {
		t.Fatal(err)
	}
	r, err := detcbor.Marshal(rec{Body: body, Sig: ed25519.Sign(sk, append([]byte(audit.HeadDomain), body...))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendDeposit speaks for dev to the witness directly and returns its answer.
func sendDeposit(t *testing.T, dev, anchor *party, dep deposit) (Answer, error) {
	t.Helper()
	raw, err := detcbor.Marshal(dep)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dev.h.NewStream(context.Background(), anchor.h.ID(), Protocol)
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
	return DecodeAnswer(ans, dev.sk.Public().(ed25519.PublicKey))
}

// What the key holder tries once consistency is required: a version 1
// head (no tree: nothing to prove) past the held version 2 head; the
// genuine consistency proof of the rewritten log from the entry both logs
// share (3), claimed from the held entry or sent from 3; the stepping
// stone's inclusion proof of the held entry. None replaces the held head;
// the honest device's real consistency proof does.
func TestRedteam10ConsistencyAttacks(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 6 })
	genuine := held(t, anchor, dev)
	dev.svc.Close()
	unchanged := func(what string) {
		t.Helper()
		if g := held(t, anchor, dev); g.Seq != genuine.Seq || g.Hash != genuine.Hash {
			t.Fatalf("%s: the witness now holds %d", what, g.Seq)
		}
	}
	// A rewritten log sharing entries 1–3.
	rst := dssync.MutexWrap(ds.NewMapDatastore())
	rlog := openLog(t, rst, dev.sk, 3)
	for range 7 {
		if _, err := rlog.Append(ctx, audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "innocuous"}}); err != nil {
			t.Fatal(err)
		}
	}
	rh := rlog.Current()
	rrec, err := rh.Record()
	if err != nil {
		t.Fatal(err)
	}
	hashes := func(p [][32]byte) [][]byte {
		var out [][]byte
		for _, x := range p {
			out = append(out, append([]byte(nil), x[:]...))
		}
		return out
	}
	// Downgrade: a version 1 head of entry 20.
	if a, err := sendDeposit(t, dev, anchor, deposit{Head: rtSignHeadV1(t, dev.sk, 20, rh.Hash, rh.Time)}); err != nil || a.Held.Seq != genuine.Seq {
		t.Fatalf("a version 1 head past the held one: %+v %v", a, err)
	}
	unchanged("a version 1 head")
	// The rewritten log's genuine proof from entry 3, sent from 3: asked again.
	p3, err := rlog.Consistency(ctx, 3, rh.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := sendDeposit(t, dev, anchor, deposit{Head: rrec, From: 3, Proof: hashes(p3)}); err != nil || a.Want != genuine.Seq || a.Conflict != nil {
		t.Fatalf("a proof from the shared entry 3: %+v %v", a, err)
	}
	unchanged("a proof from another entry")
	// The rewritten log's own proof from its entry 6, claimed from the held 6.
	p6, err := rlog.Consistency(ctx, genuine.Seq, rh.Seq)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sendDeposit(t, dev, anchor, deposit{Head: rrec, From: genuine.Seq, Proof: hashes(p6)})
	if err != nil || a.Conflict == nil || a.Conflict.Seq != rh.Seq {
		t.Fatalf("the rewritten log's proof from its own entry 6: %+v %v", a, err)
	}
	unchanged("the rewritten log's proof")
	// The genuine log, grown, with its real proof: kept; the evidence stays.
	appendN(t, dev.log, 4)
	h := dev.log.Current()
	hrec, err := h.Record()
	if err != nil {
		t.Fatal(err)
	}
	pg, err := dev.log.Consistency(ctx, genuine.Seq, h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	a, err = sendDeposit(t, dev, anchor, deposit{Head: hrec, From: genuine.Seq, Proof: hashes(pg)})
	if err != nil || a.Held.Seq != h.Seq || a.Conflict == nil {
		t.Fatalf("the genuine proof: %+v %v", a, err)
	}
}

// A witness holding a version 1 head (no tree) of a device: the first
// version 2 head past it is kept without proof (trust on first use), and
// from then on the usual consistency proofs are needed.
func TestVersion1HeldHeadTrustedOnFirstUse(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	dev.svc.Close()
	h3, err := dev.log.Entry(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := anchor.st.Put(ctx, heldKey(dev.h.ID()), rtSignHeadV1(t, dev.sk, 3, h3.Hash, h3.Time)); err != nil {
		t.Fatal(err)
	}
	if h := held(t, anchor, dev); h.Seq != 3 || h.Root != nil {
		t.Fatalf("seeded %d %x", h.Seq, h.Root)
	}
	dev.start(t, w, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the version 2 head replaces the version 1 head", func() bool {
		h := held(t, anchor, dev)
		return h.Seq == 6 && h.Root != nil
	})
	if _, ok, _ := Conflict(ctx, anchor.st, dev.h.ID()); ok {
		t.Fatal("evidence kept against an honest upgrade")
	}
	appendN(t, dev.log, 3)
	dev.svc.Changed()
	check.Eventually(t, 20*time.Second, "the next head is kept with its proof", func() bool { return held(t, anchor, dev).Seq == 9 })
}

// A witness whose answers the device's Vet refuses (its certificate, its
// clock): the device neither uses nor keeps them, whatever they say.
func TestVetRefusedAnswerNotKept(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	dev.svc.Close()
	var mu sync.Mutex
	vetted := 0
	dev.svc = Start(Config{
		Host: dev.h, Store: dev.st,
		Admitted:  func(peer.ID) bool { return true },
		IsWitness: func(q peer.ID) bool { return q == anchor.h.ID() },
		Own:       dev.log.Current, Log: dev.log.Reader, Key: dev.sk.Public().(ed25519.PublicKey), Identity: dev.sk,
		Vet: func(Answer) error {
			mu.Lock()
			defer mu.Unlock()
			vetted++
			return ErrAnswerTime
		},
	})
	t.Cleanup(dev.svc.Close)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the answer was vetted and the deposit done", func() bool {
		mu.Lock()
		n := vetted
		mu.Unlock()
		dev.svc.mu.Lock()
		defer dev.svc.mu.Unlock()
		return n > 0 && dev.svc.known[anchor.h.ID()] == 6
	})
	if s := dev.svc.Status(); s != nil {
		t.Fatalf("status from a refused answer: %+v", s)
	}
	if _, ok, err := Mine(ctx, dev.st, dev.sk.Public().(ed25519.PublicKey)); ok || err != nil {
		t.Fatalf("a refused answer kept: %v %v", ok, err)
	}
}

// Failing answers are kept per witness, at most maxFailed, and a restart
// reports them even when the kept answer (answerKey) passes — the key
// holder who swaps in a passing answer from elsewhere does not clear them.
func TestFailedAnswersKeptAndBounded(t *testing.T) {
	ctx := context.Background()
	dev := key(2)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l := openLog(t, d, dev, 6)
	h6 := l.Current()
	hr, err := h6.Record()
	if err != nil {
		t.Fatal(err)
	}
	// The log cut to 3 entries: every answer holding entry 6 fails.
	cut := dssync.MutexWrap(ds.NewMapDatastore())
	lc := openLog(t, cut, dev, 3)
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	priv, err := crypto.UnmarshalEd25519PrivateKey(dev)
	if err != nil {
		t.Fatal(err)
	}
	hst, err := mn.AddPeer(priv, ma.StringCast("/ip4/100.64.1.1/tcp/4242"))
	if err != nil {
		t.Fatal(err)
	}
	pub := dev.Public().(ed25519.PublicKey)
	svc := Start(Config{Host: hst, Store: cut, Admitted: func(peer.ID) bool { return true }, IsWitness: func(peer.ID) bool { return false },
		Own: lc.Current, Log: lc.Reader, Key: pub, Identity: dev})
	for i := range maxFailed + 4 {
		wk := key(byte(10 + i))
		raw, err := signAnswer(wk, answerBody{Device: []byte(peerID(t, dev)), Witness: []byte(peerID(t, wk)), Time: t0.UnixNano(), Held: hr})
		if err != nil {
			t.Fatal(err)
		}
		a, err := DecodeAnswer(raw, pub)
		if err != nil {
			t.Fatal(err)
		}
		svc.answered(a.Witness, a)
	}
	svc.Close()
	f, err := Failed(ctx, cut, pub)
	if err != nil || len(f) != maxFailed {
		t.Fatalf("%d failing answers kept (%v), want %d", len(f), err, maxFailed)
	}
	// A passing answer swapped in as the kept one: the failures still show.
	hc, err := lc.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	wk := key(99)
	raw, err := signAnswer(wk, answerBody{Device: []byte(peerID(t, dev)), Witness: []byte(peerID(t, wk)), Time: t0.UnixNano(), Held: hc})
	if err != nil {
		t.Fatal(err)
	}
	if err := cut.Put(ctx, answerKey, raw); err != nil {
		t.Fatal(err)
	}
	svc = Start(Config{Host: hst, Store: cut, Admitted: func(peer.ID) bool { return true }, IsWitness: func(peer.ID) bool { return false },
		Own: lc.Current, Log: lc.Reader, Key: pub, Identity: dev})
	defer svc.Close()
	if s := svc.Status(); s == nil || !strings.Contains(s.Error, "a witness holds a newer") {
		t.Fatalf("after a restart with a passing kept answer: %+v", s)
	}
}
