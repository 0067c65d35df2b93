package mesh

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// TestReconCodecMatchesDetcbor: the hand encoder writes exactly the
// reflective encoder's bytes for any message, and the hand decoder reads
// them back to what the reflective decoder reads.
func TestReconCodecMatchesDetcbor(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	field := func() []byte { return randomField(r, 40) }
	for range 500 {
		rs := make([]rng, r.IntN(40))
		for i := range rs {
			rs[i] = rng{Bound: field(), Mode: uint8(r.IntN(256)), FP: field()}
			if n := r.IntN(30) - 5; n >= 0 {
				rs[i].IDs = make([][]byte, n)
				for j := range rs[i].IDs {
					rs[i].IDs[j] = bytes.Repeat([]byte{byte(j)}, 32) // op IDs: the decoder takes no other
				}
			}
			for range r.IntN(6) {
				rs[i].Keys = append(rs[i].Keys, r.Uint64()>>r.IntN(64))
			}
		}
		enc := appendRecon(nil, rs)
		sameAsDetcbor(t, reconMsg{Ranges: rs}, enc, reconLen(rs))
		var ref reconMsg
		if err := detcbor.Unmarshal(enc, &ref, MaxMsgBytes); err != nil {
			t.Fatal(err)
		}
		dec, err := decodeRecon(enc)
		if err != nil {
			t.Fatalf("decoding %x: %v", enc, err)
		}
		if !reflect.DeepEqual(dec, ref.Ranges) && !(len(dec) == 0 && len(ref.Ranges) == 0) {
			t.Fatalf("decoded %+v, detcbor %+v", dec, ref.Ranges)
		}
	}
}

// TestDecodeReconRefuses: what detcbor refuses, the hand decoder refuses.
func TestDecodeReconRefuses(t *testing.T) {
	good := appendRecon(nil, []rng{{Bound: []byte{7}, Mode: modeList, IDs: [][]byte{bytes.Repeat([]byte{1}, 32)}, Keys: []uint64{3}}, {Mode: modeFP, FP: []byte{9, 9}}})
	if _, err := decodeRecon(good); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"empty":               {},
		"trailing byte":       append(slices.Clone(good), 0),
		"cut short":           good[:len(good)-1],
		"non-minimal count":   append([]byte{0xa1, 0x01, 0x98, 0x01}, good[4:]...),
		"unknown field":       {0xa1, 0x01, 0x81, 0xa2, 0x02, 0x01, 0x06, 0x01},
		"fields out of order": {0xa1, 0x01, 0x81, 0xa2, 0x03, 0x41, 0x09, 0x02, 0x01},
		"duplicate field":     {0xa1, 0x01, 0x81, 0xa2, 0x02, 0x01, 0x02, 0x01},
		"mode missing":        {0xa1, 0x01, 0x81, 0xa1, 0x03, 0x41, 0x09},
		"mode too large":      {0xa1, 0x01, 0x81, 0xa1, 0x02, 0x19, 0x01, 0x00},
		"empty bound":         {0xa1, 0x01, 0x81, 0xa2, 0x01, 0x40, 0x02, 0x01},
		"empty key list":      {0xa1, 0x01, 0x81, 0xa2, 0x02, 0x02, 0x05, 0x80},
		"short listed ID":     {0xa1, 0x01, 0x81, 0xa3, 0x02, 0x02, 0x04, 0x81, 0x41, 0x07, 0x05, 0x81, 0x00},
		"many empty IDs":      append([]byte{0xa1, 0x01, 0x81, 0xa2, 0x02, 0x02, 0x04, 0x99, 0xff, 0xff}, bytes.Repeat([]byte{0x40}, 0xffff)...),
		"indefinite array":    {0xa1, 0x01, 0x9f, 0xa1, 0x02, 0x01, 0xff},
		"huge count":          {0xa1, 0x01, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"too many ranges":     append([]byte{0xa1, 0x01, 0x99, 0x20, 0x01}, bytes.Repeat([]byte{0xa1, 0x02, 0x00}, maxRanges+1)...),
	} {
		if _, err := decodeRecon(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeRecon: the hand decoder accepts only what detcbor accepts, to
// the same value, and refuses what detcbor accepts only where Reply
// refuses it anyway (no ranges, more than maxRanges, a listed ID that is
// not 32 bytes).
func FuzzDecodeRecon(f *testing.F) {
	ids := make([]crdt.OpID, 300)
	for i := range ids {
		ids[i][0], ids[i][1] = byte(i), byte(i>>8)
	}
	a, b := NewSession(ids[:200]), NewSession(ids[100:])
	m, _ := a.Initiate()
	f.Add(m)
	f.Add([]byte{0xa1, 0x01, 0xf6}) // {1: null}: no ranges
	for m != nil {
		var err error
		if m, err = b.Reply(m); err != nil || m == nil {
			break
		}
		f.Add(m)
		a, b = b, a
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeRecon(data)
		var ref reconMsg
		refErr := detcbor.Unmarshal(data, &ref, MaxMsgBytes)
		if err == nil {
			if refErr != nil {
				t.Fatalf("accepted %x, which detcbor refuses: %v", data, refErr)
			}
			if !reflect.DeepEqual(got, ref.Ranges) && !(len(got) == 0 && len(ref.Ranges) == 0) {
				t.Fatalf("decoded %+v, detcbor %+v", got, ref.Ranges)
			}
			return
		}
		// What Reply refuses anyway: no ranges, too many, a listed ID not
		// of 32 bytes (or null).
		badID := func(r rng) bool {
			return slices.ContainsFunc(r.IDs, func(id []byte) bool { return len(id) != len(crdt.OpID{}) })
		}
		if refErr == nil && len(ref.Ranges) > 0 && len(ref.Ranges) <= maxRanges && !slices.ContainsFunc(ref.Ranges, badID) {
			t.Fatalf("refused %x, which detcbor accepts: %v", data, err)
		}
	})
}
