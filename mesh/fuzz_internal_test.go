package mesh

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"runtime"
	"testing"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Fuzz tests of every decoder of network or disk bytes in the mesh. Seed
// corpora are in testdata/fuzz/<FuzzName>/ (go test runs them).

// FuzzDecodeFrame: sync and held frames. A frame that decodes has the
// shapes decodeFrame promises and survives a round trip.
func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if fr.Kind < fOffer || fr.Kind > fTake || len(fr.Tags) > offerPage || len(fr.IDs) > fetchBatch || len(fr.Envs) > fetchBatch {
			t.Fatalf("decoded a frame out of shape: kind %d, %d tags, %d IDs, %d envelopes", fr.Kind, len(fr.Tags), len(fr.IDs), len(fr.Envs))
		}
		// sync/6's hand phase (as sync/4's, without urgent flags): entries of a tag and
		// an ID, copies (at least one) per entry, only in hand and take frames.
		if len(fr.Hand) > maxHand || (fr.Kind != fHand && fr.Kind != fTake && len(fr.Hand) > 0) ||
			(fr.Kind == fHand && len(fr.Copies) != len(fr.Hand)) || (fr.Kind != fHand && len(fr.Copies) > 0) ||
			(fr.Carry && fr.Kind != fOffer) {
			t.Fatalf("decoded a hand frame out of shape: kind %d, %d entries, %d copies", fr.Kind, len(fr.Hand), len(fr.Copies))
		}
		for i, h := range fr.Hand {
			if len(h) != handLen || (fr.Kind == fHand && fr.Copies[i] == 0) {
				t.Fatalf("hand entry %d out of shape", i)
			}
		}
		again, err := encodeFrame(fr)
		if err != nil {
			t.Fatal(err)
		}
		fr2, err := decodeFrame(again)
		if err != nil || !reflect.DeepEqual(fr, fr2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// fuzzItems is a fixed set of op IDs a fuzzed session reconciles against.
func fuzzItems() []crdt.OpID {
	out := make([]crdt.OpID, 300)
	for i := range out {
		binary.BigEndian.PutUint64(out[i][:], uint64(i)*0x0123456789abcdef)
	}
	return out
}

// fuzzKeys are causal keys of fuzzItems.
func fuzzKeys() []uint64 {
	out := make([]uint64, 300)
	for i := range out {
		out[i] = uint64(i) << 20
	}
	return out
}

// FuzzReconReply: a reconciliation message from a peer (sync/3: listed
// IDs carry causal keys). Reply never panics, answers within MaxMsgBytes,
// and needs only what the peer listed.
func FuzzReconReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		s := NewKeyedSession(fuzzItems(), fuzzKeys())
		out, err := s.Reply(msg)
		if err != nil {
			return
		}
		if len(out) > MaxMsgBytes {
			t.Fatalf("answer of %d bytes", len(out))
		}
		if len(s.Need()) > len(msg)/32 {
			t.Fatalf("needs %d IDs from a message of %d bytes", len(s.Need()), len(msg))
		}
	})
}

// FuzzDecodeHeld: a held acknowledgement names a 16-byte tag and 1 to
// fetchBatch op IDs.
func FuzzDecodeHeld(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		tag, ids, err := decodeHeld(b)
		if err != nil {
			return
		}
		if len(tag) != tagLen || len(ids) == 0 || len(ids) > fetchBatch {
			t.Fatalf("held: tag of %d bytes, %d IDs", len(tag), len(ids))
		}
	})
}

// FuzzDecodeCarried: a carried envelope read back from the store is the
// op its key names.
func FuzzDecodeCarried(f *testing.F) {
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		tag, id, rec, sender, _, err := decodeCarried(key, value)
		if err != nil {
			return
		}
		if len(tag) != tagLen || crdt.OpID(e2e.ID(rec.Raw)) != id || sender == "" {
			t.Fatalf("carried: tag of %d bytes, ID %s, sender %q", len(tag), id, sender)
		}
	})
}

// FuzzDecodeToken: a stored token (an own op's copies left to spray). One
// that decodes has a 16-byte tag.
func FuzzDecodeToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		tag, _, _, err := decodeToken(key, value)
		if err == nil && len(tag) != tagLen {
			t.Fatalf("token: tag of %d bytes", len(tag))
		}
	})
}

// decodeFrameDetcbor is decodeFrame as it was first written: detcbor's
// reflective decoder, held to the hand encoder, then the same shape checks.
func decodeFrameDetcbor(b []byte) (frame, error) {
	var f frame
	if err := detcbor.UnmarshalAgainst(b, &f, maxFrame, func() []byte { return appendFrame(nil, &f) }); err != nil {
		return frame{}, err
	}
	return f, f.check()
}

// FuzzDecodeFrameMatchesDetcbor: the hand decoder accepts exactly the
// frames detcbor's reflective decoder accepts, with the same fields, and
// what it returns holds none of the input's bytes (the input buffer goes
// back to its pool).
func FuzzDecodeFrameMatchesDetcbor(f *testing.F) {
	id := make([]byte, 32)
	for _, fr := range []frame{
		{Kind: fOffer, Tags: [][]byte{make([]byte, tagLen)}, FPs: [][]byte{make([]byte, fpLen)}, More: true, Carry: true, Only: [][]byte{make([]byte, tagLen)}},
		{Kind: fRecon, Tag: make([]byte, tagLen), Msg: []byte{0xa1, 1, 0x80}},
		{Kind: fWant, Tag: make([]byte, tagLen), IDs: [][]byte{id, id}},
		{Kind: fEnvs, Envs: [][]byte{{1, 2, 3}, nil}},
		{Kind: fHand, Hand: [][]byte{make([]byte, handLen)}, Copies: []uint32{4}},
		{Kind: fOffer, Urgent: true},
	} {
		b := appendFrame(nil, &fr)
		f.Add(b)
		f.Add(append(b[:len(b):len(b)], 0))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := decodeFrame(b)
		want, werr := decodeFrameDetcbor(b)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("hand decoder: %v; detcbor: %v", gerr, werr)
		}
		if gerr != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decoders disagree:\n%+v\n%+v", got, want)
		}
		for i := range b {
			b[i] ^= 0xff
		}
		if again := appendFrame(nil, &got); !reflect.DeepEqual(got, want) || bytes.Equal(again, b) {
			t.Fatal("the decoded frame shares the input's bytes")
		}
	})
}

// BenchmarkDecodeFrame: a want of a full batch of IDs, by the hand decoder
// and by detcbor's reflective one.
func BenchmarkDecodeFrame(b *testing.B) {
	fr := frame{Kind: fWant, Tag: make([]byte, tagLen)}
	for i := range askBatch {
		id := make([]byte, 32)
		id[0] = byte(i)
		fr.IDs = append(fr.IDs, id)
	}
	raw := appendFrame(nil, &fr)
	for _, d := range []struct {
		name string
		f    func([]byte) (frame, error)
	}{{"hand", decodeFrame}, {"detcbor", decodeFrameDetcbor}} {
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

// TestDecodeFrameRefusesCheaply: a frame that repeats a list field, or
// holds a list longer than any frame may, is refused before the decoder
// builds more than one list — a peer cannot make a refused frame cost
// many times its size (a reviewer's finding: 14 repeats of a list of
// 65,536 nulls cost 24 × the input).
func TestDecodeFrameRefusesCheaply(t *testing.T) {
	lists := func(keys []byte, n int) []byte {
		b := detcbor.AppendHead(nil, detcbor.MajorMap, uint64(len(keys)))
		for _, k := range keys {
			b = detcbor.AppendHead(append(b, k), detcbor.MajorArray, uint64(n))
			for range n {
				b = append(b, detcbor.Null)
			}
		}
		return b
	}
	repeated := lists([]byte{2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, offerPage)
	long := lists([]byte{2, 5, 6, 8, 10, 13}, 1<<16)
	for name, in := range map[string][]byte{"repeated field": repeated, "lists too long": long} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := decodeFrame(in)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; err == nil || n > 4*uint64(len(in)) {
			t.Errorf("%s: %v; %d bytes allocated for %d read", name, err, n, len(in))
		}
	}
}
