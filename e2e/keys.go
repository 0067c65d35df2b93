package e2e

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Windows and bounds (documented in doc.go).
const (
	MessageKeyWindow = 7 * 24 * time.Hour // skipped message keys, and superseded epochs' chains, are kept this long
	MaxSkip          = 1000               // message keys one op may skip ahead in a chain
	MaxSkippedChain  = 2000               // skipped keys kept per chain; the lowest indexes go first
	MaxSkippedTotal  = 10000              // skipped keys kept across every chain; the oldest go first
)

// EpochID names a key epoch: the op ID of the welcome that started it.
type EpochID [epochLen]byte

func (e EpochID) String() string { return hex.EncodeToString(e[:]) }

// IsZero reports whether e is unset.
func (e EpochID) IsZero() bool { return e == EpochID{} }

// EpochIDFromBytes converts a slice.
func EpochIDFromBytes(b []byte) (EpochID, error) {
	var e EpochID
	if len(b) != len(e) {
		return e, fmt.Errorf("%w: epoch ID of %d bytes", ErrMalformed, len(b))
	}
	copy(e[:], b)
	return e, nil
}

// Secret is 32 bytes of key material.
type Secret [32]byte

// NewSecret makes a random epoch secret.
func NewSecret() Secret {
	var s Secret
	rand.Read(s[:])
	return s
}

func derive(s Secret, label string, ctx []byte) Secret {
	var out Secret
	r := hkdf.New(sha256.New, s[:], nil, append([]byte("medmesh "+label+"\x00"), ctx...))
	io.ReadFull(r, out[:])
	return out
}

// ControlKey is the epoch's key for control ops.
func ControlKey(s Secret) Secret { return derive(s, "control", nil) }

// ChainKey is sender's first chain key in the epoch.
func ChainKey(s Secret, sender peer.ID) Secret { return derive(s, "chain", []byte(sender)) }

// Commit is the public commitment to an epoch secret a welcome carries:
// every recipient checks its share against it, so an issuer cannot give
// members different secrets unnoticed.
func Commit(s Secret) Secret { return derive(s, "commit", nil) }

// ControlCommit is the public commitment to an epoch's control key a
// welcome carries: a control key handed on as history is accepted only if
// it matches the commitment of the welcome that started its epoch.
func ControlCommit(control Secret) Secret { return derive(control, "control commit", nil) }

// Tag is the opaque conversation tag (and topic name) of a conversation:
// it binds the conversation ID and its creator, so only the creator's root
// welcome can found it.
func Tag(conv []byte, creator peer.ID) []byte {
	h := sha256.New()
	h.Write([]byte("medmesh tag\x00"))
	h.Write(conv)
	h.Write([]byte(creator))
	return h.Sum(nil)[:tagLen]
}

// step is HMAC-SHA256(ck, [b]): the chain's one-way step.
func step(ck Secret, b byte) Secret {
	m := hmac.New(sha256.New, ck[:])
	m.Write([]byte{b})
	var out Secret
	m.Sum(out[:0])
	return out
}

// SendChain is this device's sending chain in one epoch.
type SendChain struct {
	Epoch EpochID
	CK    Secret
	Index uint32
}

// Next returns the next message key and its index, and moves the chain on:
// the key cannot be derived again.
func (c *SendChain) Next() (uint32, Secret) {
	mk, next := steps(c.CK)
	i := c.Index
	c.CK = next
	c.Index++
	return i, mk
}

// steps is step(ck, 1) and step(ck, 2) from one keyed HMAC: the message
// key and the chain's next key.
func steps(ck Secret) (mk, next Secret) {
	m := hmac.New(sha256.New, ck[:])
	m.Write([]byte{1})
	m.Sum(mk[:0])
	m.Reset()
	m.Write([]byte{2})
	m.Sum(next[:0])
	return mk, next
}

// SkipTo moves the chain on to index (no-op if it is already there or
// past it): after a restart, never reuse an index an op of ours holds.
func (c *SendChain) SkipTo(index uint32) {
	for c.Index < index {
		c.CK = step(c.CK, 2)
		c.Index++
	}
}

type chainKey struct {
	epoch  EpochID
	sender peer.ID
}

type recvChain struct {
	ck      Secret
	next    uint32
	skipped map[uint32]skippedKey
}

type skippedKey struct {
	mk Secret
	at time.Time
}

// RecvChains holds the receiving chains of every (epoch, sender) this device
// may read. Not safe for concurrent use (one replica owns it).
type RecvChains struct {
	chains  map[chainKey]*recvChain
	skipped int // skipped keys held across all chains
}

// NewRecvChains returns an empty set.
func NewRecvChains() *RecvChains { return &RecvChains{chains: map[chainKey]*recvChain{}} }

// Install derives the chains of every member of an epoch from its secret.
// The caller then forgets the secret.
func (r *RecvChains) Install(epoch EpochID, s Secret, members []peer.ID) {
	for _, m := range members {
		k := chainKey{epoch, m}
		if _, ok := r.chains[k]; !ok {
			r.chains[k] = &recvChain{ck: ChainKey(s, m), skipped: map[uint32]skippedKey{}}
		}
	}
}

// HasEpoch reports whether any chain of epoch is installed.
func (r *RecvChains) HasEpoch(epoch EpochID) bool {
	for k := range r.chains {
		if k.epoch == epoch {
			return true
		}
	}
	return false
}

// Skipped is the number of skipped message keys held.
func (r *RecvChains) Skipped() int { return r.skipped }

// open finds the message key for (epoch, sender, index) and opens body with
// it. Nothing changes unless the body authenticates: only then is the key
// deleted, the chain moved on and the keys of indexes skipped on the way
// kept — so garbage bodies and huge indexes cost the receiver nothing.
func (r *RecvChains) open(epoch EpochID, sender peer.ID, index uint32, now time.Time, header, body []byte) ([]byte, error) {
	c := r.chains[chainKey{epoch, sender}]
	if c == nil {
		return nil, ErrUnknownChain
	}
	if index < c.next {
		sk, ok := c.skipped[index]
		if !ok {
			return nil, ErrKeyGone
		}
		pt, err := OpenBody(sk.mk, header, body)
		if err != nil {
			return nil, err
		}
		delete(c.skipped, index)
		r.skipped--
		return pt, nil
	}
	if index-c.next > MaxSkip {
		return nil, ErrKeyGone
	}
	ck := c.ck
	for i := c.next; i < index; i++ {
		ck = step(ck, 2)
	}
	mk, after := steps(ck)
	pt, err := OpenBody(mk, header, body)
	if err != nil {
		return nil, err
	}
	for c.next < index {
		skipped, next := steps(c.ck)
		c.skipped[c.next] = skippedKey{mk: skipped, at: now}
		c.ck = next
		c.next++
		r.skipped++
	}
	c.ck = after
	c.next++
	r.bound(c)
	return pt, nil
}

// bound keeps the skipped keys under MaxSkippedChain in c and
// MaxSkippedTotal in all: a sender jumping ahead again and again evicts
// its own oldest keys first, then the oldest anywhere.
func (r *RecvChains) bound(c *recvChain) {
	for len(c.skipped) > MaxSkippedChain {
		lowest := uint32(0)
		first := true
		for i := range c.skipped {
			if first || i < lowest {
				lowest, first = i, false
			}
		}
		delete(c.skipped, lowest)
		r.skipped--
	}
	if r.skipped <= MaxSkippedTotal {
		return
	}
	type ref struct {
		c  *recvChain
		i  uint32
		at time.Time
	}
	var all []ref
	for _, ch := range r.chains {
		for i, sk := range ch.skipped {
			all = append(all, ref{ch, i, sk.at})
		}
	}
	slices.SortFunc(all, func(a, b ref) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	for _, x := range all[:r.skipped-MaxSkippedTotal] {
		delete(x.c.skipped, x.i)
	}
	r.skipped = MaxSkippedTotal
}

// Expire deletes skipped keys older than MessageKeyWindow.
func (r *RecvChains) Expire(now time.Time) {
	for _, c := range r.chains {
		for i, sk := range c.skipped {
			if now.Sub(sk.at) > MessageKeyWindow {
				delete(c.skipped, i)
				r.skipped--
			}
		}
	}
}

// DropEpoch deletes every chain of an epoch (retention, or a superseded
// epoch past its window).
func (r *RecvChains) DropEpoch(epoch EpochID) {
	for k, c := range r.chains {
		if k.epoch == epoch {
			r.skipped -= len(c.skipped)
			delete(r.chains, k)
		}
	}
}

// Epochs lists the epochs with installed chains.
func (r *RecvChains) Epochs() []EpochID {
	seen := map[EpochID]bool{}
	var out []EpochID
	for k := range r.chains {
		if !seen[k.epoch] {
			seen[k.epoch] = true
			out = append(out, k.epoch)
		}
	}
	slices.SortFunc(out, func(a, b EpochID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// SealBody encrypts plaintext under key with header as associated data:
// a random 24-byte nonce, then XChaCha20-Poly1305 ciphertext.
func SealBody(key Secret, header, plaintext []byte) []byte {
	aead, _ := chacha20poly1305.NewX(key[:])
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(plaintext)+aead.Overhead())
	rand.Read(out)
	return aead.Seal(out, out, plaintext, header)
}

// OpenBody reverses SealBody.
func OpenBody(key Secret, header, body []byte) ([]byte, error) {
	if len(body) < chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return nil, ErrDecrypt
	}
	aead, _ := chacha20poly1305.NewX(key[:])
	pt, err := aead.Open(nil, body[:chacha20poly1305.NonceSizeX], body[chacha20poly1305.NonceSizeX:], header)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// SealContent fills e's body with plaintext sealed under the next key of
// chain; e's other fields must be set (Sign afterwards).
func SealContent(e *Envelope, chain *SendChain, plaintext []byte) error {
	e.Kind, e.Epoch = KindContent, chain.Epoch[:]
	i, mk := chain.Next()
	e.Index = i
	e.withHeader(func(h []byte) { e.Body = SealBody(mk, h, plaintext) })
	clear(mk[:])
	return nil
}

// OpenContent decrypts a content envelope with the receiving chains. The
// chains change only if the body authenticates. The caller has verified
// the envelope's signature and that its sender may write in its epoch.
func OpenContent(e *Envelope, chains *RecvChains, now time.Time) ([]byte, error) {
	epoch, err := EpochIDFromBytes(e.Epoch)
	if err != nil {
		return nil, err
	}
	sender, err := e.SenderID()
	if err != nil {
		return nil, fmt.Errorf("%w: sender", ErrMalformed)
	}
	var pt []byte
	e.withHeader(func(h []byte) { pt, err = chains.open(epoch, sender, e.Index, now, h, e.Body) })
	return pt, err
}

// SealControl fills e's body with plaintext sealed under a control key.
func SealControl(e *Envelope, epoch EpochID, key Secret, plaintext []byte) error {
	e.Kind, e.Epoch, e.Index = KindControl, epoch[:], 0
	e.withHeader(func(h []byte) { e.Body = SealBody(key, h, plaintext) })
	return nil
}

// OpenControl decrypts a control envelope.
func OpenControl(e *Envelope, key Secret) ([]byte, error) {
	var pt []byte
	var err error
	e.withHeader(func(h []byte) { pt, err = OpenBody(key, h, e.Body) })
	return pt, err
}

// maxChains bounds the encoded chains: MaxSkippedTotal keys and a chain
// for every member of many epochs fit well inside.
const maxChains = 16 << 20

type chainRecord struct {
	Epoch   []byte          `cbor:"1,keyasint"`
	Sender  []byte          `cbor:"2,keyasint"`
	CK      []byte          `cbor:"3,keyasint"`
	Next    uint32          `cbor:"4,keyasint"`
	Skipped []skippedRecord `cbor:"5,keyasint,omitempty"`
}

type skippedRecord struct {
	Index uint32 `cbor:"1,keyasint"`
	MK    []byte `cbor:"2,keyasint"`
	At    int64  `cbor:"3,keyasint"`
}

// Marshal serialises the chains (for the device's encrypted store only):
// detcbor's encoding of the chainRecords, chains ordered by epoch then
// sender, skipped keys by index — written directly, since a replica saves
// its key state after every batch it applies and a large group holds a
// chain per member and epoch (TestRecvChainsMarshalMatchesDetcbor). The
// output is the only copy of the keys it makes on the heap.
func (r *RecvChains) Marshal() ([]byte, error) {
	if len(r.chains) == 0 {
		return []byte{detcbor.Null}, nil // as detcbor encodes no records
	}
	keys := make([]chainKey, 0, len(r.chains))
	size := 1 + 9
	for k, c := range r.chains {
		keys = append(keys, k)
		size += 1 + 5*(1+9) + len(k.epoch) + len(k.sender) + len(c.ck) + len(c.skipped)*(1+3*(1+9)+len(Secret{}))
	}
	slices.SortFunc(keys, func(a, b chainKey) int {
		if c := bytes.Compare(a.epoch[:], b.epoch[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.sender, b.sender)
	})
	b := detcbor.AppendHead(make([]byte, 0, size), detcbor.MajorArray, uint64(len(keys)))
	var idx []uint32
	for _, k := range keys {
		c := r.chains[k]
		fields := uint64(4)
		if len(c.skipped) > 0 {
			fields++
		}
		b = detcbor.AppendHead(b, detcbor.MajorMap, fields)
		b = detcbor.AppendBytes(append(b, 1), k.epoch[:])
		b = detcbor.AppendBytes(append(b, 2), []byte(k.sender))
		b = detcbor.AppendBytes(append(b, 3), c.ck[:])
		b = detcbor.AppendHead(append(b, 4), detcbor.MajorUint, uint64(c.next))
		if len(c.skipped) == 0 {
			continue
		}
		idx = idx[:0]
		for i := range c.skipped {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		b = detcbor.AppendHead(append(b, 5), detcbor.MajorArray, uint64(len(idx)))
		for _, i := range idx {
			sk := c.skipped[i]
			b = detcbor.AppendHead(b, detcbor.MajorMap, 3)
			b = detcbor.AppendHead(append(b, 1), detcbor.MajorUint, uint64(i))
			b = detcbor.AppendBytes(append(b, 2), sk.mk[:])
			b = appendInt(append(b, 3), sk.at.Unix())
		}
	}
	return b, nil
}

// UnmarshalRecvChains restores chains saved by Marshal.
func UnmarshalRecvChains(b []byte) (*RecvChains, error) {
	var recs []chainRecord
	if err := detcbor.Unmarshal(b, &recs, maxChains); err != nil {
		return nil, fmt.Errorf("%w: chains: %v", ErrMalformed, err)
	}
	r := NewRecvChains()
	for _, rec := range recs {
		ep, err := EpochIDFromBytes(rec.Epoch)
		if err != nil || len(rec.CK) != 32 || len(rec.Sender) == 0 || len(rec.Sender) > maxPeerID {
			return nil, fmt.Errorf("%w: chain record", ErrMalformed)
		}
		c := &recvChain{next: rec.Next, skipped: map[uint32]skippedKey{}}
		copy(c.ck[:], rec.CK)
		for _, sk := range rec.Skipped {
			if len(sk.MK) != 32 || sk.Index >= rec.Next {
				return nil, fmt.Errorf("%w: skipped key record", ErrMalformed)
			}
			var mk Secret
			copy(mk[:], sk.MK)
			c.skipped[sk.Index] = skippedKey{mk: mk, at: time.Unix(sk.At, 0)}
		}
		k := chainKey{ep, peer.ID(rec.Sender)}
		if _, dup := r.chains[k]; dup || len(c.skipped) != len(rec.Skipped) || len(c.skipped) > MaxSkippedChain {
			return nil, fmt.Errorf("%w: chain record", ErrMalformed)
		}
		r.chains[k] = c
		r.skipped += len(c.skipped)
	}
	if r.skipped > MaxSkippedTotal {
		return nil, fmt.Errorf("%w: %d skipped keys", ErrMalformed, r.skipped)
	}
	return r, nil
}
