package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hdevalence/ed25519consensus"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Head vouches for a log up to an entry: its seq and hash, at a time,
// signed by the device. A head kept elsewhere (exported, or held by
// another node) is what shows a truncated tail. A version 2 head also
// signs the root of the log's Merkle tree (merkle.go), so that a witness
// can be shown that a newer head's log holds the entry it holds.
type Head struct {
	Seq  uint64
	Hash [32]byte
	Root []byte // the Merkle tree root over entries 1..Seq (32 bytes); nil in a version 1 head
	Time time.Time
	Key  ed25519.PublicKey
	Sig  []byte
	Body []byte // the signed bytes (deterministic CBOR)
}

// headVersion is the version of the heads Append signs; version 1 heads
// (no root) still verify.
const headVersion = 2

type headBody struct {
	V    uint8  `cbor:"1,keyasint"`
	Key  []byte `cbor:"2,keyasint"`
	Seq  uint64 `cbor:"3,keyasint"`
	Time int64  `cbor:"4,keyasint"`
	Hash []byte `cbor:"5,keyasint"`
	Root []byte `cbor:"6,keyasint,omitempty"` // version 2
}

func signHead(key ed25519.PrivateKey, seq uint64, hash, root [32]byte, t time.Time) (Head, []byte, error) {
	pub := key.Public().(ed25519.PublicKey)
	raw, err := detcbor.Marshal(headBody{V: headVersion, Key: pub, Seq: seq, Time: t.UnixNano(), Hash: hash[:], Root: root[:]})
	if err != nil {
		return Head{}, nil, err
	}
	h := Head{Seq: seq, Hash: hash, Root: root[:], Time: time.Unix(0, t.UnixNano()).UTC(), Key: pub, Body: raw,
		Sig: ed25519.Sign(key, append([]byte(HeadDomain), raw...))}
	rec, err := detcbor.Marshal(record{Body: raw, Sig: h.Sig})
	return h, rec, err
}

// decodeHead parses a head (record form) and checks its signature under
// key.
func decodeHead(rec []byte, key ed25519.PublicKey) (Head, error) {
	var r record
	if err := detcbor.Unmarshal(rec, &r, maxRecord); err != nil {
		return Head{}, fmt.Errorf("%w: %v", ErrBadHead, err)
	}
	return checkHead(r.Body, r.Sig, key)
}

func checkHead(raw, sig []byte, key ed25519.PublicKey) (Head, error) {
	var b headBody
	if err := detcbor.Unmarshal(raw, &b, maxRecord); err != nil {
		return Head{}, fmt.Errorf("%w: %v", ErrBadHead, err)
	}
	okRoot := (b.V == 1 && b.Root == nil) || (b.V == headVersion && len(b.Root) == 32)
	if !okRoot || len(b.Hash) != 32 || len(b.Key) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return Head{}, fmt.Errorf("%w: malformed", ErrBadHead)
	}
	if !bytes.Equal(b.Key, key) {
		return Head{}, fmt.Errorf("%w: it is another device's", ErrBadHead)
	}
	if !ed25519consensus.Verify(key, append([]byte(HeadDomain), raw...), sig) {
		return Head{}, fmt.Errorf("%w: signature does not verify", ErrBadHead)
	}
	h := Head{Seq: b.Seq, Root: b.Root, Time: time.Unix(0, b.Time).UTC(), Key: ed25519.PublicKey(b.Key), Sig: sig, Body: raw}
	copy(h.Hash[:], b.Hash)
	return h, nil
}

// headJSON is a head as exported to a file.
type headJSON struct {
	PeerID    string    `json:"peer_id,omitempty"`
	Key       string    `json:"key"` // hex Ed25519 public key
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Hash      string    `json:"hash"`
	Signature string    `json:"signature"` // hex, over HeadDomain || cbor
	CBOR      string    `json:"cbor"`      // base64 of the signed bytes
	// Conflict: a head of the same device that does not extend this one
	// (a witness's evidence of a rewritten log).
	Conflict *headJSON `json:"conflict,omitempty"`
}

func headToJSON(h Head, peerID string) headJSON {
	return headJSON{PeerID: peerID, Key: hex.EncodeToString(h.Key), Seq: h.Seq, Time: h.Time,
		Hash: hex.EncodeToString(h.Hash[:]), Signature: hex.EncodeToString(h.Sig),
		CBOR: base64.StdEncoding.EncodeToString(h.Body)}
}

// MarshalHead renders h as JSON for a file; peerID is informative.
func MarshalHead(h Head, peerID string) ([]byte, error) {
	return MarshalHeadConflict(h, nil, peerID)
}

// MarshalHeadConflict is MarshalHead with, when conflict is not nil, a
// head of the same device that does not extend h (field "conflict").
func MarshalHeadConflict(h Head, conflict *Head, peerID string) ([]byte, error) {
	j := headToJSON(h, peerID)
	if conflict != nil {
		c := headToJSON(*conflict, peerID)
		j.Conflict = &c
	}
	return json.MarshalIndent(j, "", "  ")
}

// ParseConflict reads the conflicting head of a file written by
// MarshalHeadConflict (nil: none), checking that the device with public
// key key signed it.
func ParseConflict(data []byte, key ed25519.PublicKey) (*Head, error) {
	var j headJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadHead, err)
	}
	if j.Conflict == nil {
		return nil, nil
	}
	c, err := parseHeadJSON(*j.Conflict, key)
	if err != nil {
		return nil, fmt.Errorf("the conflicting head: %w", err)
	}
	return &c, nil
}

// ParseHead reads a head exported with MarshalHead and checks that the
// device with public key key signed it; the signed bytes decide, and the
// readable fields must agree with them.
func ParseHead(data []byte, key ed25519.PublicKey) (Head, error) {
	var j headJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Head{}, fmt.Errorf("%w: %v", ErrBadHead, err)
	}
	return parseHeadJSON(j, key)
}

func parseHeadJSON(j headJSON, key ed25519.PublicKey) (Head, error) {
	raw, err1 := base64.StdEncoding.DecodeString(j.CBOR)
	sig, err2 := hex.DecodeString(j.Signature)
	if err1 != nil || err2 != nil {
		return Head{}, fmt.Errorf("%w: cbor or signature not encoded as expected", ErrBadHead)
	}
	h, err := checkHead(raw, sig, key)
	if err != nil {
		return Head{}, err
	}
	if j.Seq != h.Seq || j.Hash != hex.EncodeToString(h.Hash[:]) {
		return Head{}, fmt.Errorf("%w: its fields disagree with its signed bytes", ErrBadHead)
	}
	return h, nil
}

// Record is h in the form the store and the wire carry: deterministic CBOR
// of the signed bytes and the signature.
func (h Head) Record() ([]byte, error) {
	if len(h.Body) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadHead)
	}
	return detcbor.Marshal(record{Body: h.Body, Sig: h.Sig})
}

// DecodeHead parses a head record (Head.Record) and checks that the device
// with public key key signed it.
func DecodeHead(rec []byte, key ed25519.PublicKey) (Head, error) { return decodeHead(rec, key) }
