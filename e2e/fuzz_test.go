package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Fuzz targets for every decoder of bytes from the network or the disk.
// Each checks a round trip on what it accepts, not only that it does not
// crash. Seeds are real encodings.

// fixedDev is a device whose identity and prekeys are fixed by seed, so that
// inputs saved under testdata/fuzz mean the same in every run: a ring of
// prekeys 1..prekeys, one made each PrekeyRotation from t0, all but the
// last retired.
func fixedDev(t testing.TB, seed byte, prekeys int) dev {
	t.Helper()
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pk, err := crypto.UnmarshalEd25519PublicKey(k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	d := dev{key: k, id: id, ring: NewPrekeyRing(k, id)}
	for i := range prekeys {
		priv, err := kem.NewPrivateKey(bytes.Repeat([]byte{seed, byte(i)}, 16))
		if err != nil {
			t.Fatal(err)
		}
		p := Prekey{Owner: []byte(id), ID: uint32(i + 1), KEM: priv.PublicKey().Bytes(), Created: t0.Add(time.Duration(i) * PrekeyRotation).Unix()}
		msg, err := p.signed()
		if err != nil {
			t.Fatal(err)
		}
		p.Sig = ed25519.Sign(k, msg)
		if prev := d.ring.keys[d.ring.current]; prev != nil {
			prev.retired = time.Unix(p.Created, 0)
		}
		d.ring.keys[p.ID] = &ringEntry{pub: p, priv: priv}
		d.ring.current = p.ID
	}
	return d
}

// fuzzWorld is one conversation's worth of real encodings.
type fuzzWorld struct {
	alice, bob dev
	bobCert    hpke.PrivateKey
	epoch      EpochID
	secret     Secret
	welcome    *Envelope // alice's welcome to bob (prekey) and carol (certificate key)
	content    []*Envelope
	control    *Envelope
	urgent     *Envelope   // alice's urgent content op
	chains     *RecvChains // bob's, with skipped keys
}

func newFuzzWorld(t testing.TB) *fuzzWorld {
	t.Helper()
	conv := []byte("conversation-id-")
	w := &fuzzWorld{alice: fixedDev(t, 1, 0), bob: fixedDev(t, 2, 1), secret: NewSecret()}
	cert, err := kem.NewPrivateKey(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	w.bobCert = cert
	carol := fixedDev(t, 4, 0)
	keys := EpochKeys{Conv: conv, Creator: []byte(w.alice.id), Control: []ControlKeys{{Epoch: make([]byte, 32), Key: make([]byte, 32)}}}
	w.welcome, _ = sealWelcome(t, w.alice, envelope(w.alice, conv, [32]byte{9}), w.secret, keys, ids(w.alice, w.bob, carol), []Recipient{
		recipient(t, w.bob, false),
		{ID: carol.id, KEM: cert.PublicKey().Bytes(), History: true},
	})
	w.epoch = opID(t, w.welcome)
	send := &SendChain{Epoch: w.epoch, CK: ChainKey(w.secret, w.alice.id)}
	for _, i := range []uint32{0, 1, 5} {
		send.SkipTo(i)
		w.content = append(w.content, sealContent(t, w.alice, conv, send, "message"))
	}
	u := envelope(w.alice, conv, opID(t, w.welcome))
	u.Urgent = true
	if err := SealContent(u, send, []byte("urgent")); err != nil {
		t.Fatal(err)
	}
	w.urgent = signed(t, w.alice, u)
	c := envelope(w.alice, conv, opID(t, w.welcome))
	if err := SealControl(c, w.epoch, ControlKey(w.secret), []byte("add dave")); err != nil {
		t.Fatal(err)
	}
	w.control = signed(t, w.alice, c)
	w.chains = NewRecvChains()
	w.chains.Install(w.epoch, w.secret, ids(w.alice, w.bob, carol))
	if _, err := OpenContent(w.content[2], w.chains, t0); err != nil { // skips 0 to 4
		t.Fatal(err)
	}
	return w
}

func encoded(t testing.TB, e *Envelope) []byte {
	t.Helper()
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecode(f *testing.F) {
	w := newFuzzWorld(f)
	for _, e := range append([]*Envelope{w.welcome, w.control, w.urgent}, w.content...) {
		f.Add(encoded(f, e))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode(data)
		if err != nil {
			return
		}
		again, err := d.Encode()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted bytes do not re-encode identically: %v", err)
		}
		sameAsDetcbor(t, d) // signed bytes and header as detcbor makes them
		// One rule for single and batch verification.
		single, batch := d.Verify(), VerifyBatch([]*Envelope{d})[0]
		if (single == nil) != (batch == nil) {
			t.Fatalf("Verify says %v, VerifyBatch says %v", single, batch)
		}
	})
}

// decodeDetcbor is Decode as it was first written: detcbor's reflective
// decoder, held to the hand encoder, then the same shape checks.
func decodeDetcbor(b []byte) (*Envelope, error) {
	if len(b) > MaxEnvelope {
		return nil, ErrTooLarge
	}
	var e Envelope
	if err := detcbor.UnmarshalAgainst(b, &e, MaxEnvelope, func() []byte { return e.appendEncoded(nil, e.Body, e.Sig) }); err != nil {
		return nil, err
	}
	return &e, e.checkShape()
}

// FuzzDecodeMatchesDetcbor: the hand decoder accepts exactly what
// detcbor's reflective decoder accepts, with the same fields, and what it
// returns holds none of the caller's bytes.
func FuzzDecodeMatchesDetcbor(f *testing.F) {
	w := newFuzzWorld(f)
	for _, e := range append([]*Envelope{w.welcome, w.control, w.urgent}, w.content...) {
		b := encoded(f, e)
		f.Add(b)
		f.Add(append(b[:len(b):len(b)], 0))                                // trailing byte
		f.Add(append([]byte{b[0] + 1}, b[1:]...))                          // one field more than present
		f.Add(bytes.Replace(b, []byte{0x07, 0x81}, []byte{0x07, 0xf6}, 1)) // deps null
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, gerr := Decode(data)
		want, werr := decodeDetcbor(data)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("hand decoder: %v; detcbor: %v", gerr, werr)
		}
		if gerr != nil {
			return
		}
		if a, b := got.appendEncoded(nil, got.Body, got.Sig), want.appendEncoded(nil, want.Body, want.Sig); !bytes.Equal(a, b) {
			t.Fatal("decoders disagree on the fields")
		}
		for i := range data { // the result is the decoder's own
			data[i] ^= 0xff
		}
		if a, err := got.Encode(); err != nil || bytes.Equal(a, data) {
			t.Fatal("the decoded envelope shares the input's bytes")
		}
	})
}

func FuzzDecodeWelcome(f *testing.F) {
	w := newFuzzWorld(f)
	f.Add(w.welcome.Body)
	ww, _ := DecodeWelcome(w.welcome.Body)
	one := *ww
	one.Seals = one.Seals[:1]
	b, _ := detcbor.Marshal(one)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		dw, err := DecodeWelcome(data)
		if err != nil {
			return
		}
		again, err := detcbor.Marshal(dw)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted body does not re-encode identically: %v", err)
		}
		for _, self := range []peer.ID{w.bob.id, peer.ID(dw.Members[0])} {
			_, s, err := OpenWelcome(w.welcome, dw, self, w.bob.ring, w.bobCert)
			if c := Commit(s); err == nil && !bytes.Equal(c[:], dw.Commit) {
				t.Fatal("opened a secret that does not match the commitment")
			}
		}
	})
}

func FuzzUnmarshalRecvChains(f *testing.F) {
	w := newFuzzWorld(f)
	for _, r := range []*RecvChains{NewRecvChains(), w.chains} {
		b, err := r.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalRecvChains(data)
		if err != nil {
			return
		}
		checkSkipped(t, r)
		saved, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnmarshalRecvChains(saved)
		if err != nil {
			t.Fatalf("chains saved by Marshal do not load: %v", err)
		}
		if again, err := back.Marshal(); err != nil || !bytes.Equal(again, saved) {
			t.Fatalf("a second round trip changed the bytes: %v", err)
		}
		// Restored chains are safe to use.
		for _, e := range w.content {
			OpenContent(e, r, t0)
			checkSkipped(t, r)
		}
		r.Expire(t0.Add(MessageKeyWindow + time.Hour))
		checkSkipped(t, r)
		for _, ep := range r.Epochs() {
			r.DropEpoch(ep)
		}
		if r.Skipped() != 0 || len(r.Epochs()) != 0 {
			t.Fatalf("%d skipped keys left after dropping every epoch", r.Skipped())
		}
	})
}

func FuzzUnmarshalPrekeyRing(f *testing.F) {
	bob := fixedDev(f, 2, 0)
	for n := range 4 {
		b, err := fixedDev(f, 2, n).ring.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := UnmarshalPrekeyRing(data, bob.key, bob.id)
		if err != nil {
			return
		}
		again, err := r.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted ring does not re-encode identically: %v", err)
		}
		// A restored ring is safe to use.
		r.Expire(t0.Add(PrekeyRotation + PrekeyWindow + 2*time.Hour))
		r.Current(t0.Add(3 * PrekeyRotation))
	})
}

func FuzzDecodePrekey(f *testing.F) {
	bob := fixedDev(f, 2, 1)
	p, err := bob.ring.Current(t0)
	if err != nil {
		f.Fatal(err)
	}
	b, err := EncodePrekey(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodePrekey(data)
		if err != nil {
			return
		}
		again, err := EncodePrekey(p)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted prekey does not re-encode identically: %v", err)
		}
		if err := p.Verify(); err != nil {
			t.Fatalf("accepted prekey does not verify: %v", err)
		}
	})
}

// BenchmarkDecode: a content envelope, by the hand decoder and by
// detcbor's reflective one.
func BenchmarkDecode(b *testing.B) {
	w := newFuzzWorld(b)
	raw := encoded(b, w.content[0])
	for _, d := range []struct {
		name string
		f    func([]byte) (*Envelope, error)
	}{{"hand", Decode}, {"detcbor", decodeDetcbor}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.f(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
