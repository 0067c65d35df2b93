package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/check"
	"github.com/medmesh/medmesh/internal/detcbor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, check.LeakOptions()...) }

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func clock() func() time.Time {
	var mu sync.Mutex
	t := t0
	return func() time.Time { mu.Lock(); defer mu.Unlock(); t = t.Add(time.Second); return t }
}

// party is one device of a test: a mocknet host with an Ed25519 identity,
// its store, its audit log and its witness service.
type party struct {
	h   host.Host
	sk  ed25519.PrivateKey
	st  ds.Batching
	log *audit.Log
	svc *Service
}

type world struct {
	mn       mocknet.Mocknet
	mu       sync.Mutex
	admitted map[peer.ID]bool // who the witness side admits
	witness  map[peer.ID]bool // who is a witness
	n        int
}

func newWorld(t *testing.T) *world {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	return &world{mn: mn, admitted: map[peer.ID]bool{}, witness: map[peer.ID]bool{}}
}

// add makes a party with identity sk and a fresh store holding a log of n
// events; isWitness makes it keep others' heads.
func (w *world) add(t *testing.T, sk ed25519.PrivateKey, n int, isWitness bool) *party {
	t.Helper()
	priv, err := crypto.UnmarshalEd25519PrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	w.n++
	h, err := w.mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/100.64.0.%d/tcp/4242", w.n)))
	if err != nil {
		t.Fatal(err)
	}
	p := &party{h: h, sk: sk, st: dssync.MutexWrap(ds.NewMapDatastore())}
	p.log = openLog(t, p.st, sk, n)
	w.mu.Lock()
	w.admitted[h.ID()], w.witness[h.ID()] = true, isWitness
	w.mu.Unlock()
	p.start(t, w, isWitness)
	return p
}

func openLog(t *testing.T, d ds.Batching, sk ed25519.PrivateKey, n int) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), d, sk, audit.WithClock(clock()))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, n)
	return l
}

func appendN(t *testing.T, l *audit.Log, n int) {
	t.Helper()
	for i := range n {
		if _, err := l.Append(context.Background(), audit.Event{Kind: audit.Sent, IDs: audit.IDs{Conversation: "c", Ops: []string{fmt.Sprint(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
}

func (p *party) start(t *testing.T, w *world, isWitness bool) {
	p.svc = Start(Config{
		Host: p.h, Store: p.st, Witness: isWitness,
		Admitted:  func(q peer.ID) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.admitted[q] },
		IsWitness: func(q peer.ID) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.witness[q] },
		Own:       p.log.Current, Log: p.log.Reader, Key: p.sk.Public().(ed25519.PublicKey), Identity: p.sk,
	})
	t.Cleanup(p.svc.Close)
}

func (w *world) connect(t *testing.T, a, b *party) {
	t.Helper()
	if _, err := w.mn.LinkPeers(a.h.ID(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mn.ConnectPeers(a.h.ID(), b.h.ID()); err != nil {
		t.Fatal(err)
	}
}

// held is what witness a holds of b (Seq 0: nothing).
func held(t *testing.T, a, b *party) audit.Head {
	t.Helper()
	h, _, err := Held(context.Background(), a.st, b.h.ID())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDepositKeptAndAnswered(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 2, true)
	dev := w.add(t, key(2), 5, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the device's status shows the witnessed head", func() bool {
		s := dev.svc.Status()
		return s != nil && s.Seq == 5
	})
	if s := dev.svc.Status(); s.Error != "" || s.Peer != anchor.h.ID().String() {
		t.Fatalf("status %+v", s)
	}
	if h := held(t, anchor, dev); h.Seq != 5 || h.Hash != dev.log.Current().Hash {
		t.Fatalf("witness holds %d, want 5", h.Seq)
	}
	// A newer head replaces it.
	appendN(t, dev.log, 3)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the newer head is held", func() bool { return held(t, anchor, dev).Seq == 8 })
	// A non-witness keeps nothing: the anchor does not deposit with the device.
	anchor.svc.Met(dev.h.ID())
	if h, ok, _ := Held(context.Background(), dev.st, anchor.h.ID()); ok {
		t.Fatalf("a device that is no witness holds %d", h.Seq)
	}
}

// The attack the witness exists for: whoever holds the device key cuts the
// log's tail (here: restores an older copy) and signs a new head. The
// witness keeps the newer head, and the device reports the mismatch — also
// after a restart, from the answer it kept.
func TestTruncatedLogShows(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 6, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held and answered", func() bool {
		dev.svc.mu.Lock()
		defer dev.svc.mu.Unlock()
		return held(t, anchor, dev).Seq == 6 && dev.svc.known[anchor.h.ID()] == 6
	})

	// The key holder replaces the log by one of 3 entries: a fresh store,
	// same key, a validly signed head.
	dev.svc.Close()
	mine, _ := dev.st.Get(context.Background(), answerKey)
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 3)
	dev.start(t, w, false)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the device learns its log is behind the witness", func() bool {
		s := dev.svc.Status()
		return s != nil && s.Error != ""
	})
	if s := dev.svc.Status(); s.Seq != 6 {
		t.Fatalf("status %+v: want the witness's entry 6", s)
	}
	if h := held(t, anchor, dev); h.Seq != 6 {
		t.Fatalf("the witness went back to %d", h.Seq)
	}
	// The answer was kept: a restart on the cut store says so at once.
	dev.svc.Close()
	if err := dev.st.Put(context.Background(), answerKey, mine); err != nil {
		t.Fatal(err)
	}
	dev.start(t, w, false)
	if s := dev.svc.Status(); s == nil || s.Error == "" {
		t.Fatalf("after restart: %+v, want the mismatch", s)
	}
	a, ok, err := Mine(context.Background(), dev.st, dev.sk.Public().(ed25519.PublicKey))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if a.Witness != anchor.h.ID() || a.Held.Seq != 6 {
		t.Fatalf("kept answer of %s holding %d", a.Witness, a.Held.Seq)
	}
	if _, err := dev.log.Verify(context.Background(), &a.Held); !errors.Is(err, audit.ErrTruncated) {
		t.Fatalf("verify against the kept head: %v", err)
	}
}

// A rewritten log — same length, other entries — is refused at the same
// entry number: the witness keeps the first, and the device sees the
// mismatch.
func TestRewrittenLogShows(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	dev := w.add(t, key(2), 4, false)
	w.connect(t, anchor, dev)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the head is held", func() bool { return held(t, anchor, dev).Seq == 4 })
	first := held(t, anchor, dev).Hash

	dev.svc.Close()
	dev.st = dssync.MutexWrap(ds.NewMapDatastore())
	dev.log = openLog(t, dev.st, dev.sk, 2)
	if _, err := dev.log.Append(context.Background(), audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "other"}},
		audit.Event{Kind: audit.Read, IDs: audit.IDs{Conversation: "other"}}); err != nil {
		t.Fatal(err)
	}
	dev.start(t, w, false)
	dev.svc.Met(anchor.h.ID())
	check.Eventually(t, 10*time.Second, "the device learns its log differs", func() bool {
		s := dev.svc.Status()
		return s != nil && s.Error != ""
	})
	if h := held(t, anchor, dev); h.Hash != first {
		t.Fatal("the witness replaced the head it held by a rewritten one of the same entry")
	}
}

// No one deposits for another, and the unadmitted deposit nothing.
func TestDepositRefused(t *testing.T) {
	w := newWorld(t)
	anchor := w.add(t, key(1), 1, true)
	victim := w.add(t, key(2), 7, false)
	mallory := w.add(t, key(3), 1, false)
	w.connect(t, anchor, mallory)

	sendRaw := func(from *party, msg []byte) error {
		s, err := from.h.NewStream(context.Background(), anchor.h.ID(), Protocol)
		if err != nil {
			return err
		}
		defer s.Close()
		if err := msgio.NewVarintWriter(s).WriteMsg(msg); err != nil {
			return err
		}
		_, err = msgio.NewVarintReaderSize(s, maxAnswer).ReadMsg()
		return err
	}
	send := func(from *party, rec []byte) error { return sendRaw(from, depositOf(t, rec)) }
	// The victim's genuine head, sent by mallory: refused (signed by
	// another key than mallory's).
	rec, err := victim.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	if err := send(mallory, rec); err == nil {
		t.Fatal("the witness answered a head sent for another device")
	}
	// Garbage and an oversized record: refused.
	if err := sendRaw(mallory, []byte{0xa1, 0x01}); err == nil {
		t.Fatal("the witness answered garbage")
	}
	if err := send(mallory, []byte{0xa1, 0x01}); err == nil {
		t.Fatal("the witness answered a deposit of garbage")
	}
	if err := sendRaw(mallory, bytes.Repeat([]byte{0}, 2*maxDeposit)); err == nil {
		t.Fatal("the witness answered an oversized record")
	}
	if _, ok, _ := Held(context.Background(), anchor.st, victim.h.ID()); ok {
		t.Fatal("the witness holds a head for the victim")
	}
	if _, ok, _ := Held(context.Background(), anchor.st, mallory.h.ID()); ok {
		t.Fatal("the witness keeps refused records")
	}
	// An unadmitted peer with a genuine head of its own: refused.
	w.mu.Lock()
	w.admitted[mallory.h.ID()] = false
	w.mu.Unlock()
	own, err := mallory.log.Current().Record()
	if err != nil {
		t.Fatal(err)
	}
	if err := send(mallory, own); err == nil {
		t.Fatal("the witness answered an unadmitted peer")
	}
	if _, ok, _ := Held(context.Background(), anchor.st, mallory.h.ID()); ok {
		t.Fatal("the witness holds an unadmitted peer's head")
	}
}

func FuzzDecodeHead(f *testing.F) {
	sk := key(9)
	d := dssync.MutexWrap(ds.NewMapDatastore())
	l, err := audit.Open(context.Background(), d, sk, audit.WithClock(clock()))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := l.Append(context.Background(), audit.Event{Kind: audit.Sent}); err != nil {
		f.Fatal(err)
	}
	rec, err := l.Current().Record()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte{0xa2, 0x01, 0x40, 0x02, 0x40})
	pub := sk.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := audit.DecodeHead(b, pub)
		if err != nil {
			return
		}
		again, err := h.Record()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.DecodeHead(again, pub); err != nil {
			t.Fatalf("a head that decoded does not decode again: %v", err)
		}
	})
}

// depositOf wraps a head record as a deposit without a proof.
func depositOf(t testing.TB, rec []byte) []byte {
	t.Helper()
	raw, err := detcbor.Marshal(deposit{Head: rec})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
