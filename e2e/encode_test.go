package e2e

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/medmesh/medmesh/internal/detcbor"
)

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

func checkEncoders(t testing.TB, e *Envelope) {
	t.Helper()
	s, _ := e.signed()
	if want := referenceSigned(t, e); !bytes.Equal(s, want) {
		t.Fatalf("signed bytes differ from detcbor's:\n%x\n%x", s, want)
	}
	h, _ := e.header()
	if want := referenceHeader(t, e); !bytes.Equal(h, want) {
		t.Fatalf("header differs from detcbor's:\n%x\n%x", h, want)
	}
	full, err := detcbor.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.appendEnvelope(nil, e.Body, e.Sig); !bytes.Equal(got, full) {
		t.Fatalf("encoding differs from detcbor's:\n%x\n%x", got, full)
	}
}

// TestAppendMatchesDetcbor: the hand-written encoder makes exactly the
// bytes detcbor.Marshal makes, for every head length, sign of the clock,
// nil and empty slices, and envelopes with and without an epoch.
func TestAppendMatchesDetcbor(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bytesOf := func(n int) []byte {
		if n < 0 {
			return nil
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	ints := []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64}
	lens := []int{-1, 0, 1, 23, 24, 255, 256, 1024, 65535, 65536}
	for i := range 2000 {
		e := &Envelope{
			Version: uint8(rng.Uint32()), Kind: uint8(rng.Uint32()),
			Tag: bytesOf(lens[rng.IntN(4)]), Sender: bytesOf(lens[rng.IntN(6)]),
			Epoch: bytesOf(lens[rng.IntN(5)]), Index: uint32(ints[rng.IntN(9)]),
			Body: bytesOf(lens[rng.IntN(len(lens))]), Sig: bytesOf(lens[rng.IntN(4)]),
			Wall: int64(ints[rng.IntN(len(ints))]), Logical: uint32(ints[rng.IntN(9)]),
		}
		if i%2 == 0 {
			e.Wall = -e.Wall - int64(rng.IntN(2))
		}
		if i%7 == 0 {
			e.Wall = math.MinInt64
		}
		switch i % 3 {
		case 0:
			e.Deps = nil
		case 1:
			e.Deps = [][]byte{}
		default:
			for range rng.IntN(30) {
				e.Deps = append(e.Deps, bytesOf(lens[rng.IntN(5)]))
			}
		}
		checkEncoders(t, e)
	}
}

func BenchmarkSignedBytes(b *testing.B) {
	e := &Envelope{Version: Version, Kind: KindContent, Tag: make([]byte, 16), Sender: make([]byte, 38), Epoch: make([]byte, 32),
		Index: 1000, Deps: [][]byte{make([]byte, 32)}, Body: make([]byte, 1100), Sig: make([]byte, 64), Wall: 1 << 40}
	b.Run("append", func(b *testing.B) {
		for range b.N {
			e.signed()
		}
	})
	b.Run("detcbor", func(b *testing.B) {
		for range b.N {
			referenceSigned(b, e)
		}
	})
}
