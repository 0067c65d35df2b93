package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"slices"
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

// testEpoch is an epoch for chain tests, which need no welcome: a random
// 32-byte ID and a secret.
func testEpoch() (EpochID, Secret) { return EpochID(NewSecret()), NewSecret() }

// signed signs e as from and returns it as a receiver gets it: encoded,
// decoded and verified.
func signed(t testing.TB, from dev, e *Envelope) *Envelope {
	t.Helper()
	if err := e.Sign(from.key); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(raw)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if err := d.Verify(); err != nil {
		t.Fatalf("verify: %v", err)
	}
	return d
}

// opID is the op ID of a decoded envelope.
func opID(t testing.TB, e *Envelope) [32]byte {
	t.Helper()
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return ID(raw)
}

// sealContent is from's next message on chain in conv, as received.
func sealContent(t testing.TB, from dev, conv []byte, chain *SendChain, msg string) *Envelope {
	t.Helper()
	e := envelope(from, conv)
	if err := SealContent(e, chain, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	return signed(t, from, e)
}

// recipient seals to d's current prekey.
func recipient(t testing.TB, d dev, history bool) Recipient {
	t.Helper()
	p, err := d.ring.Current(t0)
	if err != nil {
		t.Fatal(err)
	}
	return Recipient{ID: d.id, PrekeyID: p.ID, KEM: p.KEM, History: history}
}

// sealWelcome fills e (from's, header set) as a welcome, signs it and
// returns it as received, with its decoded body.
func sealWelcome(t testing.TB, from dev, e *Envelope, secret Secret, keys EpochKeys, holders []peer.ID, to []Recipient) (*Envelope, *Welcome) {
	t.Helper()
	if err := SealWelcome(e, secret, keys, holders, to); err != nil {
		t.Fatal(err)
	}
	d := signed(t, from, e)
	w, err := DecodeWelcome(d.Body)
	if err != nil {
		t.Fatalf("decode welcome: %v", err)
	}
	return d, w
}

func ids(ds ...dev) []peer.ID {
	out := make([]peer.ID, len(ds))
	for i, d := range ds {
		out[i] = d.id
	}
	return out
}

func TestEnvelopeSignVerifyTamper(t *testing.T) {
	alice := newDev(t)
	epoch, secret := testEpoch()
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
	epoch, _ := testEpoch()
	e := envelope(alice, []byte("conv"))
	e.Kind, e.Epoch, e.Body = KindControl, epoch[:], []byte("x")
	e.Sign(alice.key)
	raw, _ := e.Encode()
	// bad re-encodes a changed copy of e; Decode does not check the
	// signature, so only the change can be what it rejects.
	bad := func(mut func(*Envelope)) []byte {
		c := *e
		mut(&c)
		b, err := detcbor.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, in := range map[string][]byte{
		"control":          raw,
		"content":          bad(func(c *Envelope) { c.Kind, c.Index = KindContent, 7 }),
		"welcome":          bad(func(c *Envelope) { c.Kind, c.Epoch = KindWelcome, nil }),
		"64 deps":          bad(func(c *Envelope) { c.Deps = slices.Repeat([][]byte{epoch[:]}, 64) }),
		"64-byte sender":   bad(func(c *Envelope) { c.Sender = bytes.Repeat([]byte{1}, 64) }),
		"empty body":       bad(func(c *Envelope) { c.Body = nil }),
		"clock at maximum": bad(func(c *Envelope) { c.Wall, c.Logical = 1<<63-1, 1<<32-1 }),
	} {
		if _, err := Decode(in); err != nil {
			t.Errorf("%s rejected: %v", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"truncated":               raw[:len(raw)-3],
		"trailing":                append(bytes.Clone(raw), 0),
		"oversized":               make([]byte, MaxEnvelope+1),
		"empty":                   nil,
		"bad version":             bad(func(c *Envelope) { c.Version = 1 }),
		"bad kind":                bad(func(c *Envelope) { c.Kind = 0 }),
		"kind after welcome":      bad(func(c *Envelope) { c.Kind = KindWelcome + 1 }),
		"short tag":               bad(func(c *Envelope) { c.Tag = c.Tag[:3] }),
		"no sender":               bad(func(c *Envelope) { c.Sender = nil }),
		"65-byte sender":          bad(func(c *Envelope) { c.Sender = bytes.Repeat([]byte{1}, 65) }),
		"bad dep":                 bad(func(c *Envelope) { c.Deps = [][]byte{{1, 2}} }),
		"65 deps":                 bad(func(c *Envelope) { c.Deps = slices.Repeat([][]byte{epoch[:]}, 65) }),
		"no signature":            bad(func(c *Envelope) { c.Sig = nil }),
		"non-canonical":           append([]byte{0xb9, 0x00, 0x09}, raw[1:]...),
		"welcome with an epoch":   bad(func(c *Envelope) { c.Kind = KindWelcome }),
		"welcome with an index":   bad(func(c *Envelope) { c.Kind, c.Epoch, c.Index = KindWelcome, nil, 1 }),
		"content with 16-byte ep": bad(func(c *Envelope) { c.Kind, c.Epoch = KindContent, epoch[:16] }),
		"content without epoch":   bad(func(c *Envelope) { c.Kind, c.Epoch = KindContent, nil }),
		"control with 16-byte ep": bad(func(c *Envelope) { c.Epoch = epoch[:16] }),
		"control with 33-byte ep": bad(func(c *Envelope) { c.Epoch = append(epoch[:], 0) }),
		"control with an index":   bad(func(c *Envelope) { c.Index = 1 }),
		"control with max index":  bad(func(c *Envelope) { c.Index = 1<<32 - 1 }),
	} {
		if _, err := Decode(in); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestChainsOutOfOrderAndOneTime(t *testing.T) {
	alice, bob := newDev(t), newDev(t)
	conv := []byte("conv")
	epoch, secret := testEpoch()
	send := &SendChain{Epoch: epoch, CK: ChainKey(secret, alice.id)}
	var envs []*Envelope
	for i := range 8 {
		envs = append(envs, sealContent(t, alice, conv, send, string(rune('a'+i))))
	}
	recv := NewRecvChains()
	recv.Install(epoch, secret, []peer.ID{alice.id})
	open := func(e *Envelope, now time.Time) error {
		t.Helper()
		pt, err := OpenContent(e, recv, now)
		if err == nil && string(pt) != string(rune('a'+e.Index)) {
			t.Fatalf("index %d opened to %q", e.Index, pt)
		}
		return err
	}

	// Out of order: every message opens once, whatever the order.
	for _, step := range []struct {
		index   uint32
		skipped int
	}{{3, 3}, {0, 2}, {4, 2}, {1, 1}, {2, 0}} {
		if err := open(envs[step.index], t0); err != nil {
			t.Fatalf("index %d: %v", step.index, err)
		}
		if got := recv.Skipped(); got != step.skipped {
			t.Fatalf("after index %d: %d skipped keys, want %d", step.index, got, step.skipped)
		}
	}
	// One-time: a replay finds no key, whether it was a skipped key or the
	// chain's own.
	for _, i := range []uint32{2, 3, 4} {
		if err := open(envs[i], t0); !errors.Is(err, ErrKeyGone) {
			t.Fatalf("replayed index %d: %v", i, err)
		}
	}

	// Too far: one op may skip at most MaxSkip keys (the chain is at 5).
	far := *send
	far.SkipTo(5 + MaxSkip + 1)
	if err := open(sealContent(t, alice, conv, &far, "far"), t0); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("skip of MaxSkip+1: %v", err)
	}
	if recv.Skipped() != 0 {
		t.Fatalf("a refused skip left %d keys", recv.Skipped())
	}

	// Skipped keys expire after the window.
	if err := open(envs[7], t0); err != nil { // skips 5 and 6
		t.Fatal(err)
	}
	recv.Expire(t0.Add(MessageKeyWindow - time.Hour))
	if recv.Skipped() != 2 {
		t.Fatalf("inside the window: %d skipped keys, want 2", recv.Skipped())
	}
	if err := open(envs[6], t0); err != nil {
		t.Fatalf("skipped key inside the window: %v", err)
	}
	recv.Expire(t0.Add(MessageKeyWindow + time.Hour))
	if recv.Skipped() != 0 {
		t.Fatalf("past the window: %d skipped keys", recv.Skipped())
	}
	if err := open(envs[5], t0); !errors.Is(err, ErrKeyGone) {
		t.Fatalf("expired skipped key: %v", err)
	}

	// Exactly MaxSkip ahead is allowed (the chain is at 8).
	edge := *send
	edge.SkipTo(8 + MaxSkip)
	if err := open(sealContent(t, alice, conv, &edge, string(rune('a'+8+MaxSkip))), t0); err != nil {
		t.Fatalf("skip of MaxSkip: %v", err)
	}
	if recv.Skipped() != MaxSkip {
		t.Fatalf("%d skipped keys, want %d", recv.Skipped(), MaxSkip)
	}

	// Unknown sender, unknown epoch.
	bobChain := &SendChain{Epoch: epoch, CK: ChainKey(secret, bob.id)}
	if _, err := OpenContent(sealContent(t, bob, conv, bobChain, "x"), recv, t0); !errors.Is(err, ErrUnknownChain) {
		t.Fatalf("unknown sender: %v", err)
	}
	other, _ := testEpoch()
	otherChain := &SendChain{Epoch: other, CK: ChainKey(secret, alice.id)}
	if _, err := OpenContent(sealContent(t, alice, conv, otherChain, "x"), recv, t0); !errors.Is(err, ErrUnknownChain) {
		t.Fatalf("unknown epoch: %v", err)
	}
	if got := recv.Epochs(); len(got) != 1 || got[0] != epoch || !recv.HasEpoch(epoch) || recv.HasEpoch(other) {
		t.Fatalf("epochs %v", got)
	}
	recv.DropEpoch(epoch)
	if recv.Skipped() != 0 || len(recv.Epochs()) != 0 {
		t.Fatalf("after DropEpoch: %d skipped keys, epochs %v", recv.Skipped(), recv.Epochs())
	}
}

func TestSendChainSkipTo(t *testing.T) {
	epoch, secret := testEpoch()
	a := &SendChain{Epoch: epoch, CK: ChainKey(secret, "x")}
	b := *a
	for range 5 {
		a.Next()
	}
	b.SkipTo(5)
	b.SkipTo(2) // never backwards
	if *a != b {
		t.Fatalf("SkipTo(5) is not five Next calls: index %d, want %d", b.Index, a.Index)
	}
}

func TestControl(t *testing.T) {
	alice := newDev(t)
	epoch, secret := testEpoch()
	e := envelope(alice, []byte("conv"))
	if err := SealControl(e, epoch, ControlKey(secret), []byte("add bob")); err != nil {
		t.Fatal(err)
	}
	d := signed(t, alice, e)
	if pt, err := OpenControl(d, ControlKey(secret)); err != nil || string(pt) != "add bob" {
		t.Fatalf("open control: %q %v", pt, err)
	}
	if _, err := OpenControl(d, ControlKey(NewSecret())); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("another epoch's control key: %v", err)
	}
	// A control body is no content body: the kind is in the header.
	recv := NewRecvChains()
	recv.Install(epoch, secret, []peer.ID{alice.id})
	if _, err := OpenContent(d, recv, t0); err == nil || recv.Skipped() != 0 {
		t.Fatalf("control op opened as content: %v", err)
	}
}

func TestWelcome(t *testing.T) {
	alice, bob, carol, dave, erin := newDev(t), newDev(t), newDev(t), newDev(t), newDev(t)
	conv := []byte("conversation-id-")
	secret := NewSecret()
	pb, _ := bob.ring.Current(t0)
	if err := pb.Verify(); err != nil {
		t.Fatal(err)
	}
	// dave has no prekey yet: the welcome falls back to his certificate's
	// KEM key (prekey 0).
	daveCert, err := hpke.MLKEM768X25519().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	old := ControlKeys{Epoch: bytes.Repeat([]byte{7}, 32), Key: bytes.Repeat([]byte{8}, 32)}
	keys := EpochKeys{Conv: conv, Creator: []byte(alice.id), Control: []ControlKeys{old}}
	holders := ids(dave, carol, bob, alice, bob) // any order, duplicates
	e, w := sealWelcome(t, alice, envelope(alice, conv, [32]byte{1}), secret, keys, holders, []Recipient{
		recipient(t, carol, true),
		recipient(t, bob, false),
		{ID: dave.id, KEM: daveCert.PublicKey().Bytes(), History: true},
	})
	if len(e.Epoch) != 0 || e.Index != 0 || e.Kind != KindWelcome {
		t.Fatalf("welcome header: kind %d epoch %x index %d", e.Kind, e.Epoch, e.Index)
	}
	want := ids(alice, bob, carol, dave)
	slices.Sort(want)
	if !slices.Equal(w.Holders(), want) {
		t.Fatal("holders are not sorted and unique")
	}
	if c := Commit(secret); !bytes.Equal(w.Commit, c[:]) {
		t.Fatal("commitment is not Commit(secret)")
	}
	if !slices.IsSortedFunc(w.Seals, func(a, b Seal) int { return bytes.Compare(a.Recipient, b.Recipient) }) {
		t.Fatal("shares are not sorted by recipient")
	}

	got, s, err := OpenWelcome(e, w, bob.id, bob.ring, nil)
	if err != nil || s != secret {
		t.Fatalf("bob opens: %v", err)
	}
	if !bytes.Equal(got.Conv, conv) || !bytes.Equal(got.Creator, []byte(alice.id)) || got.Secret != nil || len(got.Control) != 0 {
		t.Fatalf("bob's keys: %+v", got)
	}
	got, s, err = OpenWelcome(e, w, carol.id, carol.ring, nil)
	if err != nil || s != secret || len(got.Control) != 1 || !bytes.Equal(got.Control[0].Key, old.Key) {
		t.Fatalf("carol (history) opens: %+v %v", got, err)
	}
	if _, _, err := OpenWelcome(e, w, dave.id, dave.ring, nil); !errors.Is(err, ErrPrekeyGone) {
		t.Fatalf("dave without his certificate key: %v", err)
	}
	if _, s, err := OpenWelcome(e, w, dave.id, dave.ring, daveCert); err != nil || s != secret {
		t.Fatalf("dave opens with his certificate key: %v", err)
	}
	if _, _, err := OpenWelcome(e, w, erin.id, erin.ring, nil); !errors.Is(err, ErrNoSeal) {
		t.Fatalf("erin: %v", err)
	}
	if _, _, err := OpenWelcome(e, w, alice.id, alice.ring, nil); !errors.Is(err, ErrNoSeal) {
		t.Fatalf("the sealer holds the epoch but has no share: %v", err)
	}

	// The epoch is named by the welcome's op ID: another welcome of the
	// same header starts another epoch.
	e2, _ := sealWelcome(t, alice, envelope(alice, conv, [32]byte{1}), secret, keys, holders, []Recipient{recipient(t, bob, false)})
	if opID(t, e) == opID(t, e2) {
		t.Fatal("two welcomes name the same epoch")
	}

	// Rotation, then the retired private half is deleted after the window.
	bob.ring.Current(t0.Add(PrekeyRotation + time.Hour))
	if _, _, err := OpenWelcome(e, w, bob.id, bob.ring, nil); err != nil {
		t.Fatalf("retired prekey inside window: %v", err)
	}
	bob.ring.Expire(t0.Add(PrekeyRotation + PrekeyWindow + 2*time.Hour))
	if _, _, err := OpenWelcome(e, w, bob.id, bob.ring, nil); !errors.Is(err, ErrPrekeyGone) {
		t.Fatalf("expired prekey: %v", err)
	}
	forged := *pb
	forged.KEM = bytes.Clone(forged.KEM)
	forged.KEM[0] ^= 1
	if err := forged.Verify(); !errors.Is(err, ErrBadPrekey) {
		t.Fatalf("forged prekey: %v", err)
	}
	if err := SealWelcome(envelope(alice, conv), secret, keys, holders, []Recipient{{ID: bob.id, PrekeyID: 1, KEM: []byte("short")}}); !errors.Is(err, ErrBadPrekey) {
		t.Fatalf("bad recipient KEM key: %v", err)
	}
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
	if again, err := back.Marshal(); err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("ring round trip changed the bytes: %v", err)
	}
	if _, err := back.private(p1.ID); err != nil {
		t.Fatal("retired prekey lost in a round trip")
	}
	if cur, _ := back.Current(t0.Add(PrekeyRotation + 2*time.Hour)); cur.ID != 2 {
		t.Fatalf("current prekey %d after restore", cur.ID)
	}
	if _, err := UnmarshalPrekeyRing(raw, newDev(t).key, newDev(t).id); !errors.Is(err, ErrMalformed) {
		t.Fatalf("another device's ring: %v", err)
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
	epoch, _ := testEpoch()
	var envs []*Envelope
	for i := range 20 {
		from := alice
		if i%3 == 0 {
			from = bob
		}
		e := envelope(from, []byte("conv"))
		e.Kind, e.Epoch, e.Body = KindControl, epoch[:], []byte{byte(i)}
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

// TestStepsIsTwoSteps: the one-HMAC pair of steps gives exactly the two
// single steps (a wrong Reset would change every key on the wire).
func TestStepsIsTwoSteps(t *testing.T) {
	for i := range 64 {
		var ck Secret
		ck[0], ck[31] = byte(i), byte(3*i+1)
		mk, next := steps(ck)
		if mk != step(ck, 1) || next != step(ck, 2) {
			t.Fatalf("chain key %d: steps differ from step", i)
		}
	}
}
