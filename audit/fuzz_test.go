package audit

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// FuzzDecode: whatever Decode accepts re-encodes to the same bytes, hashes
// its body, and verifies only if its signature does; it never panics.
// Seeds are real records (testdata/fuzz/FuzzDecode).
func FuzzDecode(f *testing.F) {
	key := fixedKey(1)
	for _, ev := range []Event{{Kind: Sent, IDs: IDs{Conversation: "c", Ops: []string{"o"}}}, {Kind: Unlocked}} {
		_, rec, err := seal(key, 1, t0, ev, [32]byte{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		e, err := Decode(rec)
		if err != nil {
			return
		}
		again, err := detcbor.Marshal(record{Body: e.Body, Sig: e.Sig})
		if err != nil || !bytes.Equal(again, rec) {
			t.Fatalf("accepted input does not re-encode to itself")
		}
		if e.Hash != hashBody(EntryDomain, e.Body) || e.Seq == 0 || !knownKind(e.Kind) {
			t.Fatalf("accepted entry %+v", e)
		}
		c := NewChain(e.Key)
		if _, err := c.Add(rec); err == nil && !e.VerifySignature() {
			t.Fatalf("chain took an entry whose signature fails")
		}
	})
}

// FuzzDecodeHead: a stored head is accepted only if the device signed it,
// and what is accepted re-encodes to the same bytes.
func FuzzDecodeHead(f *testing.F) {
	key := fixedKey(1)
	_, rec, err := signHead(key, 3, [32]byte{1}, [32]byte{2}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, rec []byte) {
		h, err := decodeHead(rec, pub)
		if err != nil {
			return
		}
		again, err := detcbor.Marshal(record{Body: h.Body, Sig: h.Sig})
		if err != nil || !bytes.Equal(again, rec) || !h.Key.Equal(pub) {
			t.Fatalf("accepted head does not re-encode to itself")
		}
	})
}
