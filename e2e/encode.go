package e2e

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"math"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// An envelope is encoded three times on each side — the header as the
// body's associated data, the signed bytes, the final bytes — so the
// encoding is written directly instead of going through reflection: the
// reflective encoder cost several times the hashing of them. The bytes are
// exactly detcbor's (core deterministic CBOR of Envelope, as
// TestAppendMatchesDetcbor, FuzzAppendEnvelope and FuzzDecode check): keys
// 1..12 in order, nil slices as null, Epoch left out when empty, Urgent
// (key 12) left out when false.

func appendInt(b []byte, v int64) []byte {
	if v < 0 {
		return detcbor.AppendHead(b, detcbor.MajorNeg, uint64(-(v + 1)))
	}
	return detcbor.AppendHead(b, detcbor.MajorUint, uint64(v))
}

// encodedLen bounds the length of e's encoding with body and sig.
func (e *Envelope) encodedLen(body, sig []byte) int {
	n := 1 + 12*(1+9) + len(e.Tag) + len(e.Sender) + len(e.Epoch) + len(body) + len(sig) + 9
	for _, d := range e.Deps {
		n += 9 + len(d)
	}
	return n
}

// appendEncoded appends the encoding of e with body and sig in place of
// e.Body and e.Sig (nil for the header and the signed bytes).
func (e *Envelope) appendEncoded(b []byte, body, sig []byte) []byte {
	fields := uint64(12)
	if len(e.Epoch) == 0 {
		fields--
	}
	if !e.Urgent {
		fields--
	}
	b = detcbor.AppendHead(b, detcbor.MajorMap, fields)
	b = detcbor.AppendHead(append(b, 1), detcbor.MajorUint, uint64(e.Version))
	b = detcbor.AppendHead(append(b, 2), detcbor.MajorUint, uint64(e.Kind))
	b = detcbor.AppendBytes(append(b, 3), e.Tag)
	b = detcbor.AppendBytes(append(b, 4), e.Sender)
	if len(e.Epoch) != 0 {
		b = detcbor.AppendBytes(append(b, 5), e.Epoch)
	}
	b = detcbor.AppendHead(append(b, 6), detcbor.MajorUint, uint64(e.Index))
	b = append(b, 7)
	if e.Deps == nil {
		b = append(b, detcbor.Null)
	} else {
		b = detcbor.AppendHead(b, detcbor.MajorArray, uint64(len(e.Deps)))
		for _, d := range e.Deps {
			b = detcbor.AppendBytes(b, d)
		}
	}
	b = detcbor.AppendBytes(append(b, 8), body)
	b = detcbor.AppendBytes(append(b, 9), sig)
	b = appendInt(append(b, 10), e.Wall)
	b = detcbor.AppendHead(append(b, 11), detcbor.MajorUint, uint64(e.Logical))
	if e.Urgent {
		b = append(b, 12, detcbor.True)
	}
	return b
}

// header is the encoding of everything but body and signature: the
// associated data of the body's encryption.
func (e *Envelope) header() []byte {
	return e.appendEncoded(make([]byte, 0, e.encodedLen(nil, nil)), nil, nil)
}

// withHeader calls f with the header in a scratch buffer (valid during
// the call only): the associated data of sealing and opening the body.
func (e *Envelope) withHeader(f func(header []byte)) {
	buf := scratch.Get().(*[]byte)
	defer scratch.Put(buf)
	*buf = e.appendEncoded((*buf)[:0], nil, nil)
	f(*buf)
}

// decodeEnvelope reads the fields of an envelope's encoding from b, which
// it keeps: Sender, Deps, Body and Sig point into it (as Share makes them),
// Tag and Epoch are copies (Share leaves them, and a header kept without
// its encoding must not pin it). Shapes, field order and canonical form
// are Decode's to check.
func decodeEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	r := detcbor.NewReader(b)
	bytesOrNull := func() []byte {
		if r.Null() {
			return nil
		}
		return r.Bytes()
	}
	last := uint64(0)
	for n := r.Count(detcbor.MajorMap, 12); n > 0 && r.Err() == nil; n-- {
		key := r.Uint(math.MaxUint8)
		if r.Err() == nil && key <= last { // canonical keys ascend: no repeats
			return nil, fmt.Errorf("field %d after field %d", key, last)
		}
		last = key
		switch key {
		case 1:
			e.Version = uint8(r.Uint(math.MaxUint8))
		case 2:
			e.Kind = uint8(r.Uint(math.MaxUint8))
		case 3:
			e.Tag = bytes.Clone(bytesOrNull())
		case 4:
			e.Sender = bytesOrNull()
		case 5:
			e.Epoch = bytes.Clone(bytesOrNull())
		case 6:
			e.Index = uint32(r.Uint(math.MaxUint32))
		case 7:
			if r.Null() {
				e.Deps = nil
				continue
			}
			e.Deps = make([][]byte, r.Count(detcbor.MajorArray, maxDeps))
			for i := range e.Deps {
				e.Deps[i] = bytesOrNull()
			}
		case 8:
			e.Body = bytesOrNull()
		case 9:
			e.Sig = bytesOrNull()
		case 10:
			e.Wall = r.Int()
		case 11:
			e.Logical = uint32(r.Uint(math.MaxUint32))
		case 12:
			e.Urgent = r.Bool()
		default:
			if r.Err() == nil {
				return nil, fmt.Errorf("unknown field %d", key)
			}
		}
	}
	if r.Err() == nil && r.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the envelope", r.Len())
	}
	return &e, r.Err()
}

// signed is what the signature covers: the context, then the encoding of
// everything but the signature.
func (e *Envelope) signed() []byte {
	return e.appendSigned(make([]byte, 0, len(sigContext)+e.encodedLen(e.Body, nil)))
}

// appendSigned appends the signed bytes to b.
func (e *Envelope) appendSigned(b []byte) []byte {
	return e.appendEncoded(append(b, sigContext...), e.Body, nil)
}

// scratch holds buffers for bytes that no caller keeps past the call
// that builds them — the signed bytes being verified, the re-encoding a
// decode compares — so receiving an envelope does not allocate a copy of
// it for each.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// senderKey is the Ed25519 public key of the sender. A peer ID of an
// Ed25519 key in its usual form (ed25519IDPrefix, then the key) is read
// directly; any other form goes through the key registry, which gives the
// same key for that form and refuses what is not an Ed25519 key.
func (e *Envelope) senderKey() (ed25519.PublicKey, error) {
	if len(e.Sender) == len(ed25519IDPrefix)+ed25519.PublicKeySize && string(e.Sender[:len(ed25519IDPrefix)]) == string(ed25519IDPrefix[:]) {
		return ed25519.PublicKey(e.Sender[len(ed25519IDPrefix):]), nil
	}
	id, err := e.SenderID()
	if err != nil {
		return nil, fmt.Errorf("%w: sender: %v", ErrMalformed, err)
	}
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: sender key: %v", ErrMalformed, err)
	}
	raw, err := pk.Raw()
	if err != nil || pk.Type() != crypto.Ed25519 || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: sender key is not Ed25519", ErrMalformed)
	}
	return raw, nil
}

// ed25519IDPrefix is how a peer ID of an Ed25519 key starts: an identity
// multihash (code 0, 36 bytes) of the protobuf PublicKey{Type: Ed25519,
// Data: 32 bytes}.
var ed25519IDPrefix = [...]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}

// isSenderKey reports whether sender is the peer ID of pub, without
// building the ID through the key registry on every signature.
func isSenderKey(sender []byte, pub ed25519.PublicKey) bool {
	return len(sender) == len(ed25519IDPrefix)+ed25519.PublicKeySize &&
		string(sender[:len(ed25519IDPrefix)]) == string(ed25519IDPrefix[:]) &&
		string(sender[len(ed25519IDPrefix):]) == string(pub)
}

// headLen is the length of a CBOR head with argument n.
func headLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// Share points e's byte fields — sender, dependencies, body, signature —
// at the same bytes inside raw, e's encoding, so an envelope kept beside
// its raw bytes (as a replica keeps every op) does not hold them twice.
// raw must not be modified afterwards. A field raw does not hold where
// e's encoding puts it is left as it was, and so is every field after it.
func (e *Envelope) Share(raw []byte) {
	fields := uint64(12)
	if len(e.Epoch) == 0 {
		fields--
	}
	if !e.Urgent {
		fields--
	}
	off := headLen(fields) + 1 + headLen(uint64(e.Version)) + 1 + headLen(uint64(e.Kind)) + 1 + bytesLen(e.Tag) + 1
	// at re-points *f at its bytes in raw, if raw holds them at off, and
	// moves off past *f's encoding.
	ok := true
	at := func(f *[]byte) {
		n := bytesLen(*f)
		if ok && *f != nil && off+n <= len(raw) {
			s := raw[off+headLen(uint64(len(*f))) : off+n : off+n]
			if ok = bytes.Equal(s, *f); ok {
				*f = s
			}
		}
		off += n
	}
	at(&e.Sender)
	if len(e.Epoch) != 0 {
		off += 1 + bytesLen(e.Epoch)
	}
	off += 1 + headLen(uint64(e.Index)) + 1
	if e.Deps == nil {
		off++
	} else {
		off += headLen(uint64(len(e.Deps)))
		for i := range e.Deps {
			at(&e.Deps[i])
		}
	}
	off++
	at(&e.Body)
	off++
	at(&e.Sig)
}

// Unshared is a copy of e without its body whose byte fields hold bytes
// of their own: what a replica keeps of an op retention deleted, so that
// the encoding Share pointed e into — ciphertext included — can go.
func (e *Envelope) Unshared() *Envelope {
	c := *e
	c.Body = nil
	c.Sender, c.Epoch, c.Sig = bytes.Clone(e.Sender), bytes.Clone(e.Epoch), bytes.Clone(e.Sig)
	if e.Deps != nil {
		c.Deps = make([][]byte, len(e.Deps))
		for i, d := range e.Deps {
			c.Deps[i] = bytes.Clone(d)
		}
	}
	return &c
}

// bytesLen is the length of the encoding of s as a byte string (null when
// nil).
func bytesLen(s []byte) int {
	if s == nil {
		return 1
	}
	return headLen(uint64(len(s))) + len(s)
}
