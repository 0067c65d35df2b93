package mesh

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/medmesh/medmesh/internal/detcbor"
)

func sameFrameAsDetcbor(t *testing.T, f *frame) {
	t.Helper()
	sameAsDetcbor(t, *f, appendFrame(nil, f), frameLen(f))
}

// sameAsDetcbor fails unless got, a hand encoder's bytes for v, are
// detcbor's and no longer than bound, the length the encoder reserved.
func sameAsDetcbor(t *testing.T, v any, got []byte, bound int) {
	t.Helper()
	want, err := detcbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%+v:\n got %x\nwant %x", v, got, want)
	}
	if len(got) > bound {
		t.Fatalf("length bound %d below the encoding's %d bytes", bound, len(got))
	}
}

// randomField is nil, empty or up to max random bytes.
func randomField(r *rand.Rand, max int) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, r.IntN(max))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestAppendFrameMatchesDetcbor: the hand encoder writes exactly the
// reflective encoder's bytes, so decodeFrame's canonical check (against
// the hand encoder) refuses what detcbor would.
func TestAppendFrameMatchesDetcbor(t *testing.T) {
	b := func(n int) []byte { return bytes.Repeat([]byte{0xcd}, n) }
	cases := map[string]*frame{
		"zero":         {},
		"empty fields": {Tags: [][]byte{}, Tag: []byte{}, Msg: []byte{}, IDs: [][]byte{}, Envs: [][]byte{}, FPs: [][]byte{}, Hand: [][]byte{}, Copies: []uint32{}, Only: [][]byte{}},
		"envelopes":    {Kind: fEnvs, Tag: b(16), Envs: [][]byte{b(1200), b(70000), nil, {}}},
		"offer":        {Kind: fOffer, Tags: [][]byte{b(16), b(16)}, FPs: [][]byte{b(32), b(32)}, More: true, Carry: true, Only: [][]byte{b(16)}, Urgent: true},
		"hand":         {Kind: fHand, Hand: [][]byte{b(handLen)}, Copies: []uint32{0, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1}},
		"recon":        {Kind: fRecon, Tag: b(16), Msg: b(300), IDs: [][]byte{b(32)}},
		"boundaries":   {Kind: 255, Msg: b(23), Tag: b(24), IDs: make([][]byte, 24)},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) { sameFrameAsDetcbor(t, f) })
	}
	r := rand.New(rand.NewPCG(3, 4))
	field := func() []byte { return randomField(r, 400) }
	list := func() [][]byte {
		if r.IntN(3) == 0 {
			return nil
		}
		l := make([][]byte, r.IntN(30))
		for i := range l {
			l[i] = field()
		}
		return l
	}
	for range 500 {
		f := &frame{Kind: uint8(r.IntN(256)), Tags: list(), Tag: field(), Msg: field(), IDs: list(), Envs: list(),
			More: r.IntN(2) == 0, FPs: list(), Carry: r.IntN(2) == 0, Hand: list(), Only: list(), Urgent: r.IntN(2) == 0}
		for range r.IntN(5) {
			f.Copies = append(f.Copies, r.Uint32()>>r.IntN(32))
		}
		sameFrameAsDetcbor(t, f)
	}
}

// FuzzAppendFrame: any frame the fuzzer builds encodes by hand exactly as
// detcbor encodes it.
func FuzzAppendFrame(f *testing.F) {
	f.Add(uint8(fEnvs), []byte("tag"), []byte("msg"), []byte("abcdefgh"), uint32(7), uint16(0))
	f.Add(uint8(fOffer), []byte{}, []byte(nil), []byte{}, uint32(0), uint16(0xffff))
	f.Fuzz(func(t *testing.T, kind uint8, tag, msg, items []byte, copies uint32, bits uint16) {
		split := func(bit int) [][]byte {
			if bits&(1<<bit) == 0 {
				return nil
			}
			l := [][]byte{}
			for rest := items; len(rest) > 0; {
				n := min(len(rest), int(rest[0])%40)
				if n == 0 {
					l = append(l, nil)
					n = 1
				} else {
					l = append(l, rest[:n])
				}
				rest = rest[n:]
			}
			return l
		}
		fr := &frame{Kind: kind, Tag: tag, Msg: msg, Tags: split(0), IDs: split(1), Envs: split(2), FPs: split(3),
			Hand: split(4), Only: split(5), More: bits&(1<<6) != 0, Carry: bits&(1<<7) != 0, Urgent: bits&(1<<8) != 0}
		if bits&(1<<9) != 0 {
			fr.Copies = []uint32{copies, copies >> 7, copies >> 20}
		}
		sameFrameAsDetcbor(t, fr)
	})
}
