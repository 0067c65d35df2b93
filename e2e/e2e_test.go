package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

type dev struct {
	key  ed25519.PrivateKey
	id   peer.ID
	ring *PrekeyRing
}

func newDev(t testing.TB) dev {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := crypto.UnmarshalEd25519PublicKey(k.Public().(ed25519.PublicKey))
	id, _ := peer.IDFromPublicKey(pk)
	return dev{key: k, id: id, ring: NewPrekeyRing(k, id)}
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func envelope(from dev, conv []byte, deps ...[32]byte) *Envelope {
	return New(Tag(conv, from.id), from.id, deps)
}

func TestEnvelopeSignVerifyTamper(t *testing.T) {
	alice := newDev(t)
	epoch, secret := NewEpoch()
	chain := &SendChain{Epoch: epoch, CK: ChainKey(secret, alice.id)}
	e := envelope(alice, []byte("conv"), [32]byte{1})
	if err := SealContent(e, chain, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := e.Sign(alice.key); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Verify(); err != nil {
		t.Fatalf("verify: %v", err)
	}
	recv := NewRecvChains()
	recv.Install(epoch, secret, []peer.ID{alice.id})
	pt, err := OpenContent(d, recv, t0)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// Every single-byte change is caught: by decoding, signature or AEAD.
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x40
		d, err := Decode(bad)
		if err != nil {
			continue
		}
		if d.Verify() == nil {
			t.Fatalf("byte %d flipped and the signature still verifies", i)
		}
	}
	// Another sender cannot pass off an envelope as alice's.
	mallory := newDev(t)
	forged := *d
	if forged.Sign(mallory.key) == nil {
		t.Fatal("signed with a key that is not the sender's")
	}
	forged.Sender = []byte(mallory.id)
	forged.Sign(mallory.key)
	forged.Sender = []byte(alice.id)
	if forged.Verify() == nil {
		t.Fatal("forged sender accepted")
	}
}

func TestDecodeRejects(t *testing.T) {
	alice := newDev(t)
	e := envelope(alice, []byte("conv"))
	e.Kind, e.Epoch, e.Body = KindControl, make([]byte, 16), []byte("x")
	e.Sign(alice.key)
	raw, _ := e.Encode()
	bad := func(mut func(*Envelope)) []byte {
		c := *e
		mut(&c)
		b, _ := detcbor.Marshal(c)
		return b
	}
	for name, in := range map[string][]byte{
		"truncated":     raw[:len(raw)-3],
		"trailing":      append(bytes.Clone(raw), 0),
		"oversized":     make([]byte, MaxEnvelope+1),
		"bad version":   bad(func(c *Envelope) { c.Version = 9 }),
		"bad kind":      bad(func(c *Envelope) { c.Kind = 0 }),
		"short tag":     bad(func(c *Envelope) { c.Tag = c.Tag[:3] }),
		"bad dep":       bad(func(c *Envelope) { c.Deps = [][]byte{{1, 2}} }),
		"no signature":  bad(func(c *Envelope) { c.Sig = nil }),
		"non-canonical": append([]byte{0xb9, 0x00, 0x09}, raw[1:]...),
	} {
		if _, err := Decode(in); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestChainsOutOfOrderAndOneTime(t *testing.T) {
	alice := newDev(t)
	epoch, secret := NewEpoch()
	send := &SendChain{Epoch: epoch, CK: ChainKey(secret, alice.id)}
	var keys []Secret
	for range 5 {
		_, mk := send.Next()
		keys = append(keys, mk)
	}
	recv := NewRecvChains()
	recv.Install(epoch, secret, []peer.ID{alice.id})
	for _, i := range []uint32{3, 0, 4, 1, 2} {
		mk, err := recv.Key(epoch, alice.id, i, t0)
		if err != nil || mk != keys[i] {
			t.Fatalf("index %d: %v", i, err)
		}
	}
	if _, err := recv.Key(epoch, alice.id, 2, t0); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("replayed index: %v", err)
	}
	if _, err := recv.Key(epoch, alice.id, 5+MaxSkip+1, t0); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("absurd skip: %v", err)
	}
	// Skipped keys expire after the window.
	recv.Key(epoch, alice.id, 7, t0) // skips 5 and 6
	recv.Expire(t0.Add(MessageKeyWindow + time.Hour))
	if _, err := recv.Key(epoch, alice.id, 5, t0); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("expired skipped key: %v", err)
	}
	if _, err := recv.Key(epoch, newDev(t).id, 0, t0); !errors.Is(err, ErrUnknownChain) {
		t.Fatalf("unknown sender: %v", err)
	}
}

func TestWelcome(t *testing.T) {
	alice, bob, carol := newDev(t), newDev(t), newDev(t)
	conv := []byte("conversation-id-")
	epoch, secret := NewEpoch()
	pb, _ := bob.ring.Current(t0)
	if err := pb.Verify(); err != nil {
		t.Fatal(err)
	}
	keys := EpochKeys{Conv: conv, Creator: []byte(alice.id), Secret: secret[:]}
	tag := Tag(conv, alice.id)
	body, err := SealWelcome(epoch, keys, []peer.ID{alice.id, bob.id}, []Recipient{{ID: bob.id, PrekeyID: pb.ID, KEM: pb.KEM}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := DecodeWelcome(body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenWelcome(w, tag, epoch, bob.id, bob.ring, nil)
	if err != nil || !bytes.Equal(got.Secret, secret[:]) {
		t.Fatalf("bob opens: %v", err)
	}
	if _, err := OpenWelcome(w, tag, epoch, carol.id, carol.ring, nil); !errors.Is(err, ErrNoSeal) {
		t.Fatalf("carol: %v", err)
	}
	other, _ := NewEpoch()
	if _, err := OpenWelcome(w, tag, other, bob.id, bob.ring, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("replayed into another epoch: %v", err)
	}
	if _, err := OpenWelcome(w, Tag([]byte("another"), alice.id), epoch, bob.id, bob.ring, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("replayed into another conversation: %v", err)
	}
	// Rotation, then the retired private half is deleted after the window.
	bob.ring.Current(t0.Add(PrekeyRotation + time.Hour))
	if _, err := OpenWelcome(w, tag, epoch, bob.id, bob.ring, nil); err != nil {
		t.Fatalf("retired prekey inside window: %v", err)
	}
	bob.ring.Expire(t0.Add(PrekeyRotation + PrekeyWindow + 2*time.Hour))
	if _, err := OpenWelcome(w, tag, epoch, bob.id, bob.ring, nil); !errors.Is(err, ErrPrekeyGone) {
		t.Fatalf("expired prekey: %v", err)
	}
	forged := *pb
	forged.KEM = bytes.Clone(forged.KEM)
	forged.KEM[0] ^= 1
	if err := forged.Verify(); !errors.Is(err, ErrBadPrekey) {
		t.Fatalf("forged prekey: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	alice := newDev(f)
	e := envelope(alice, []byte("conv"))
	e.Kind, e.Epoch, e.Body = KindControl, make([]byte, 16), []byte("x")
	e.Sign(alice.key)
	raw, _ := e.Encode()
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode(data)
		if err != nil {
			return
		}
		again, err := d.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatal("accepted bytes are not canonical")
		}
		_ = d.Verify()
	})
}

func FuzzDecodeWelcome(f *testing.F) {
	bob := newDev(f)
	pb, _ := bob.ring.Current(t0)
	epoch, secret := NewEpoch()
	body, _ := SealWelcome(epoch, EpochKeys{Conv: []byte("c"), Creator: []byte(bob.id), Secret: secret[:]}, []peer.ID{bob.id}, []Recipient{{ID: bob.id, PrekeyID: pb.ID, KEM: pb.KEM}})
	f.Add(body)
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := DecodeWelcome(data)
		if err != nil {
			return
		}
		_, _ = OpenWelcome(w, Tag([]byte("c"), bob.id), epoch, bob.id, bob.ring, nil)
	})
}

func TestPrekeyRingPersists(t *testing.T) {
	bob := newDev(t)
	p1, _ := bob.ring.Current(t0)
	bob.ring.Current(t0.Add(PrekeyRotation + time.Hour))
	raw, err := bob.ring.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalPrekeyRing(raw, bob.key, bob.id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.private(p1.ID); err != nil {
		t.Fatal("retired prekey lost in a round trip")
	}
	if cur, _ := back.Current(t0.Add(PrekeyRotation + 2*time.Hour)); cur.ID != 2 {
		t.Fatalf("current prekey %d after restore", cur.ID)
	}
	enc, _ := EncodePrekey(p1)
	if got, err := DecodePrekey(enc); err != nil || got.ID != p1.ID {
		t.Fatalf("prekey round trip: %v", err)
	}
	enc[len(enc)-1] ^= 1
	if _, err := DecodePrekey(enc); err == nil {
		t.Fatal("tampered prekey accepted")
	}
}

func TestVerifyBatch(t *testing.T) {
	alice, bob := newDev(t), newDev(t)
	var envs []*Envelope
	for i := range 20 {
		from := alice
		if i%3 == 0 {
			from = bob
		}
		e := envelope(from, []byte("conv"))
		e.Kind, e.Epoch, e.Body = KindControl, make([]byte, 16), []byte{byte(i)}
		e.Sign(from.key)
		envs = append(envs, e)
	}
	for _, err := range VerifyBatch(envs) {
		if err != nil {
			t.Fatalf("valid batch: %v", err)
		}
	}
	envs[7].Body = []byte("altered")
	errs := VerifyBatch(envs)
	for i, err := range errs {
		if (i == 7) != (err != nil) {
			t.Fatalf("envelope %d: %v", i, err)
		}
	}
}
