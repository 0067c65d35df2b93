package e2e

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// sameAsDetcbor fails unless the hand-written encodings of e are exactly
// detcbor's: the full envelope, the header, the signed bytes.
func sameAsDetcbor(t testing.TB, e *Envelope) {
	t.Helper()
	want, err := detcbor.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.appendEncoded(nil, e.Body, e.Sig); !bytes.Equal(got, want) {
		t.Fatalf("encoding differs from detcbor:\n got %x\nwant %x", got, want)
	}
	if got, err := e.Encode(); err == nil && !bytes.Equal(got, want) {
		t.Fatalf("Encode differs from detcbor")
	}
	if got, want := e.header(), referenceHeader(t, e); !bytes.Equal(got, want) {
		t.Fatalf("header differs:\n got %x\nwant %x", got, want)
	}
	if got, want := e.signed(), referenceSigned(t, e); !bytes.Equal(got, want) {
		t.Fatalf("signed bytes differ:\n got %x\nwant %x", got, want)
	}
	if n := e.encodedLen(e.Body, e.Sig); n < len(want) {
		t.Fatalf("encodedLen %d below the encoding's %d bytes", n, len(want))
	}
}

// referenceSigned and referenceHeader are the signed bytes and header as
// the reflective encoder makes them.
func referenceSigned(t testing.TB, e *Envelope) []byte {
	s := *e
	s.Sig = nil
	b, err := detcbor.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(sigContext), b...)
}

func referenceHeader(t testing.TB, e *Envelope) []byte {
	h := *e
	h.Body, h.Sig = nil, nil
	b, err := detcbor.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendMatchesDetcbor(t *testing.T) {
	b := func(n int) []byte { return bytes.Repeat([]byte{0xab}, n) }
	cases := map[string]*Envelope{
		"zero":               {},
		"empty slices":       {Tag: []byte{}, Sender: []byte{}, Epoch: []byte{}, Deps: [][]byte{}, Body: []byte{}, Sig: []byte{}},
		"welcome":            {Version: Version, Kind: KindWelcome, Tag: b(16), Sender: b(38), Deps: [][]byte{b(32)}, Body: b(3000), Sig: b(64), Wall: 1_700_000_000_000_000_000, Logical: 3},
		"content":            {Version: Version, Kind: KindContent, Tag: b(16), Sender: b(38), Epoch: b(32), Index: 70000, Deps: [][]byte{b(32), b(32)}, Body: b(1100), Sig: b(64), Wall: 5, Logical: 1 << 20},
		"nil dep":            {Deps: [][]byte{nil, {}, b(1)}},
		"negative wall":      {Wall: -1},
		"min wall":           {Wall: math.MinInt64, Logical: math.MaxUint32, Index: math.MaxUint32},
		"max wall":           {Wall: math.MaxInt64, Version: 255, Kind: 255},
		"length boundaries":  {Tag: b(23), Sender: b(24), Epoch: b(255), Body: b(256), Sig: b(65535), Deps: [][]byte{b(65536)}},
		"many deps":          {Deps: make([][]byte, 300)},
		"integer boundaries": {Index: 23, Logical: 24, Wall: -24},
		"integer boundary 2": {Index: 255, Logical: 256, Wall: -25},
		"integer boundary 3": {Index: 65535, Logical: 65536, Wall: -257},
		"urgent":             {Version: Version, Kind: KindContent, Tag: b(16), Sender: b(38), Epoch: b(32), Index: 3, Deps: [][]byte{b(32)}, Body: b(100), Sig: b(64), Wall: 5, Logical: 1, Urgent: true},
		"urgent no epoch":    {Urgent: true},
	}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) { sameAsDetcbor(t, e) })
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		sameAsDetcbor(t, randomEnvelope(r))
	}
}

func randomEnvelope(r *rand.Rand) *Envelope {
	field := func() []byte {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, r.IntN(600))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	e := &Envelope{Version: uint8(r.Uint32()), Kind: uint8(r.Uint32()), Tag: field(), Sender: field(), Epoch: field(),
		Index: r.Uint32() >> r.IntN(32), Body: field(), Sig: field(), Wall: int64(r.Uint64()) >> r.IntN(64), Logical: r.Uint32() >> r.IntN(32), Urgent: r.IntN(2) == 0}
	if r.IntN(3) > 0 {
		e.Deps = make([][]byte, r.IntN(30))
		for i := range e.Deps {
			e.Deps[i] = field()
		}
	}
	return e
}

// FuzzAppendEnvelope holds the hand-written encoder to detcbor: for any
// fields, the bytes are the same. Bits of nils make fields nil; bit 6 sets
// Urgent.
func FuzzAppendEnvelope(f *testing.F) {
	f.Add(uint8(Version), uint8(KindContent), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 38), bytes.Repeat([]byte{3}, 32),
		uint32(7), bytes.Repeat([]byte{4}, 64), []byte("body"), bytes.Repeat([]byte{5}, 64), int64(1_700_000_000), uint32(2), uint8(0))
	f.Add(uint8(Version), uint8(KindControl), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 38), bytes.Repeat([]byte{3}, 32),
		uint32(0), []byte(nil), []byte("body"), bytes.Repeat([]byte{5}, 64), int64(1_700_000_000), uint32(2), uint8(1<<6))
	f.Add(uint8(0), uint8(0), []byte{}, []byte(nil), []byte(nil), uint32(0), []byte(nil), []byte(nil), []byte{}, int64(-1), uint32(0), uint8(0xff))
	f.Fuzz(func(t *testing.T, version, kind uint8, tag, sender, epoch []byte, index uint32, deps, body, sig []byte, wall int64, logical uint32, nils uint8) {
		nilIf := func(bit int, b []byte) []byte {
			if nils&(1<<bit) != 0 {
				return nil
			}
			return b
		}
		e := &Envelope{Version: version, Kind: kind, Tag: nilIf(0, tag), Sender: nilIf(1, sender), Epoch: nilIf(2, epoch),
			Index: index, Body: nilIf(3, body), Sig: nilIf(4, sig), Wall: wall, Logical: logical, Urgent: nils&(1<<6) != 0}
		if nils&(1<<5) == 0 {
			e.Deps = [][]byte{}
			for len(deps) > 0 { // split deps into pieces of 1..32 bytes
				n := min(len(deps), 1+int(deps[0])%32)
				e.Deps = append(e.Deps, deps[:n])
				deps = deps[n:]
			}
		}
		sameAsDetcbor(t, e)
	})
}

func TestIsSenderKey(t *testing.T) {
	for range 20 {
		pub, _, _ := ed25519.GenerateKey(nil)
		pk, err := crypto.UnmarshalEd25519PublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPublicKey(pk)
		if err != nil {
			t.Fatal(err)
		}
		if !isSenderKey([]byte(id), pub) {
			t.Fatalf("the peer ID of a key is not recognised as its sender")
		}
		other, _, _ := ed25519.GenerateKey(nil)
		if isSenderKey([]byte(id), other) || isSenderKey([]byte(id)[1:], pub) || isSenderKey(append([]byte(id), 0), pub) {
			t.Fatalf("a peer ID is taken for another key's")
		}
	}
}

// TestSenderKeyFastPath: the key read straight from an Ed25519 peer ID is
// the one the key registry extracts, and senders that are not Ed25519
// keys (another key type, a truncated or altered ID) are refused as before.
func TestSenderKeyFastPath(t *testing.T) {
	newID := func(gen func(io.Reader) (crypto.PrivKey, crypto.PubKey, error)) (crypto.PrivKey, peer.ID) {
		t.Helper()
		priv, _, err := gen(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		return priv, id
	}
	for range 20 {
		priv, id := newID(crypto.GenerateEd25519Key)
		e := &Envelope{Sender: []byte(id)}
		got, err := e.senderKey()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := priv.GetPublic().Raw()
		if !bytes.Equal(got, want) {
			t.Fatalf("fast path key %x, registry %x", got, want)
		}
	}
	_, secpID := newID(crypto.GenerateSecp256k1Key)
	_, edID := newID(crypto.GenerateEd25519Key)
	altered := []byte(edID)
	altered[3] = 0x02 // protobuf key type Secp256k1, 32 bytes of data
	for name, sender := range map[string][]byte{
		"secp256k1": []byte(secpID), "truncated": []byte(edID)[:37], "altered type": altered, "empty": nil,
	} {
		if _, err := (&Envelope{Sender: sender}).senderKey(); err == nil {
			t.Errorf("%s sender accepted", name)
		}
	}
}

// TestShare: after Share the sender, dependencies, body and signature
// are the slices of the encoding that hold them (no second copy),
// unchanged, and re-encode to the same bytes; bytes that are not e's
// encoding leave e alone.
func TestShare(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	inside := func(raw, s []byte) bool {
		for j := range raw {
			if &raw[j] == &s[0] {
				return true
			}
		}
		return false
	}
	for i := range 500 {
		e := randomEnvelope(r)
		if i%2 == 0 {
			e.Urgent = true
		}
		raw := e.appendEncoded(nil, e.Body, e.Sig)
		fields := func(e *Envelope) []*[]byte {
			f := []*[]byte{&e.Sender, &e.Body, &e.Sig}
			for i := range e.Deps {
				f = append(f, &e.Deps[i])
			}
			return f
		}
		var before [][]byte
		for _, f := range fields(e) {
			before = append(before, bytes.Clone(*f))
		}
		e.Share(raw)
		for j, f := range fields(e) {
			was := before[j]
			if !bytes.Equal(*f, was) || (was == nil) != (*f == nil) {
				t.Fatalf("field %d changed by Share", j)
			}
			if len(was) > 0 && (!inside(raw, *f) || cap(*f) != len(*f)) {
				t.Fatalf("field %d not shared with the encoding, or shared with room to grow into it", j)
			}
		}
		if again := e.appendEncoded(nil, e.Body, e.Sig); !bytes.Equal(again, raw) {
			t.Fatal("re-encoding after Share differs")
		}
		u := e.Unshared()
		if u.Body != nil || u.Wall != e.Wall || u.Kind != e.Kind || len(u.Deps) != len(e.Deps) {
			t.Fatal("Unshared changed the header or kept the body")
		}
		for j, f := range fields(u) {
			if *f == nil || j == 1 {
				continue // the body (index 1) is gone
			}
			if len(*f) > 0 && inside(raw, *f) {
				t.Fatalf("field %d of the unshared copy points into the encoding", j)
			}
			if !bytes.Equal(*f, before[j]) {
				t.Fatalf("field %d changed by Unshared", j)
			}
		}
		if len(e.Body) > 0 {
			body := bytes.Clone(e.Body)
			other := *e
			other.Body = bytes.Clone(body)
			kept := other.Body
			junk := bytes.Clone(raw)
			junk[len(junk)-len(e.Sig)-8] ^= 0xff // inside the body or the head before the signature
			other.Share(junk)
			if &other.Body[0] != &kept[0] && !bytes.Equal(other.Body, body) {
				t.Fatal("shared with bytes that are not the body")
			}
		}
	}
}
