package e2e

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Prekey windows (documented in doc.go).
const (
	PrekeyRotation = 7 * 24 * time.Hour  // a new prekey at least weekly
	PrekeyWindow   = 14 * 24 * time.Hour // private half kept this long after it stops being current
)

// KEM is the HPKE suite of prekeys and welcomes.
var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.ChaCha20Poly1305()
)

// Prekey is a device's signed KEM public key for welcomes.
type Prekey struct {
	Owner   []byte `cbor:"1,keyasint"` // peer ID
	ID      uint32 `cbor:"2,keyasint"`
	KEM     []byte `cbor:"3,keyasint"`
	Created int64  `cbor:"4,keyasint"` // Unix seconds
	Sig     []byte `cbor:"5,keyasint"`
}

const prekeyContext = "medmesh prekey v1\x00"

func (p *Prekey) signed() ([]byte, error) {
	u := *p
	u.Sig = nil
	b, err := detcbor.Marshal(u)
	return append([]byte(prekeyContext), b...), err
}

// Verify checks the prekey's signature by its owner's identity key.
func (p *Prekey) Verify() error {
	owner, err := peer.IDFromBytes(p.Owner)
	if err != nil {
		return fmt.Errorf("%w: owner", ErrBadPrekey)
	}
	pk, err := owner.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: owner key", ErrBadPrekey)
	}
	raw, err := pk.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: owner key", ErrBadPrekey)
	}
	msg, err := p.signed()
	if err != nil || !ed25519.Verify(raw, msg, p.Sig) {
		return fmt.Errorf("%w: signature", ErrBadPrekey)
	}
	if _, err := kem.NewPublicKey(p.KEM); err != nil {
		return fmt.Errorf("%w: KEM key", ErrBadPrekey)
	}
	return nil
}

type ringEntry struct {
	pub     Prekey
	priv    hpke.PrivateKey
	retired time.Time // when it stopped being current; zero while current
}

// PrekeyRing holds a device's prekeys: the current one and the retired ones
// whose private halves are still inside PrekeyWindow.
type PrekeyRing struct {
	mu       sync.Mutex // the node rotates while conversations open welcomes
	identity ed25519.PrivateKey
	owner    peer.ID
	keys     map[uint32]*ringEntry
	current  uint32
}

// NewPrekeyRing makes a ring for a device identity.
func NewPrekeyRing(identity ed25519.PrivateKey, owner peer.ID) *PrekeyRing {
	return &PrekeyRing{identity: identity, owner: owner, keys: map[uint32]*ringEntry{}}
}

// Current returns the current prekey, making a new one when there is none
// or the current one is older than PrekeyRotation.
func (r *PrekeyRing) Current(now time.Time) (*Prekey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.keys[r.current]; e != nil && now.Sub(time.Unix(e.pub.Created, 0)) < PrekeyRotation {
		return &e.pub, nil
	}
	priv, err := kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	if e := r.keys[r.current]; e != nil {
		e.retired = now
	}
	r.current++
	p := Prekey{Owner: []byte(r.owner), ID: r.current, KEM: priv.PublicKey().Bytes(), Created: now.Unix()}
	msg, err := p.signed()
	if err != nil {
		return nil, err
	}
	p.Sig = ed25519.Sign(r.identity, msg)
	r.keys[p.ID] = &ringEntry{pub: p, priv: priv}
	return &p, nil
}

// Expire deletes private halves retired longer than PrekeyWindow ago.
func (r *PrekeyRing) Expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, e := range r.keys {
		if !e.retired.IsZero() && now.Sub(e.retired) > PrekeyWindow {
			delete(r.keys, id)
		}
	}
}

func (r *PrekeyRing) private(id uint32) (hpke.PrivateKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.keys[id]
	if e == nil {
		return nil, ErrPrekeyGone
	}
	return e.priv, nil
}

// Recipient is a member a welcome is sealed to: its current prekey, or (as
// a last resort) its certificate's KEM key with PrekeyID 0.
type Recipient struct {
	ID       peer.ID
	PrekeyID uint32
	KEM      []byte
	// History: the recipient gets keys.Control, the control keys of
	// earlier epochs (existing members hold them already). Control, if
	// set, is the recipient's own list instead: the control keys of the
	// epochs it did not hold.
	History bool
	Control []ControlKeys
}

// Seal is one recipient's share of a welcome.
type Seal struct {
	Recipient []byte `cbor:"1,keyasint"`
	Prekey    uint32 `cbor:"2,keyasint"`
	Enc       []byte `cbor:"3,keyasint"` // HPKE encapsulation + ciphertext
}

// Welcome is the body of a welcome envelope. Members (who holds the epoch,
// the sealer included; sorted, unique) and the recipients of the shares are
// public, so every replica knows who an epoch reaches and can judge the
// welcome without opening it. Commit binds the epoch secret (see Commit).
type Welcome struct {
	Members [][]byte `cbor:"1,keyasint"`
	Commit  []byte   `cbor:"2,keyasint"`
	Seals   []Seal   `cbor:"3,keyasint"`
	// ControlCommit commits to the epoch's control key (ControlCommit):
	// a control key handed on as history later is checked against it, so
	// nobody can plant a control key of an epoch it did not make.
	ControlCommit []byte `cbor:"4,keyasint"`
}

// Holders returns the members as peer IDs.
func (w *Welcome) Holders() []peer.ID {
	out := make([]peer.ID, len(w.Members))
	for i, m := range w.Members {
		out[i] = peer.ID(m)
	}
	return out
}

// EpochKeys is what a welcome gives each recipient.
type EpochKeys struct {
	Conv    []byte        `cbor:"1,keyasint"` // conversation ID
	Creator []byte        `cbor:"2,keyasint"` // conversation creator's peer ID
	Secret  []byte        `cbor:"3,keyasint"` // the epoch secret
	Control []ControlKeys `cbor:"4,keyasint"` // control keys of earlier epochs
}

func (k *EpochKeys) tag() []byte { return Tag(k.Conv, peer.ID(k.Creator)) }

// ControlKeys pairs an epoch with its control key.
type ControlKeys struct {
	Epoch []byte `cbor:"1,keyasint"`
	Key   []byte `cbor:"2,keyasint"`
}

const maxWelcome = 8 << 20

// welcomeInfo binds a share to the welcome that carries it — its signed
// header (conversation tag, sender, deps, clock) and its holder list — and
// to its recipient: a share lifted into another welcome, or a welcome
// whose holders were edited, does not open.
func welcomeInfo(header []byte, members [][]byte, recipient peer.ID) []byte {
	h := sha256.New()
	h.Write([]byte("medmesh welcome v2\x00"))
	hh := sha256.Sum256(header)
	h.Write(hh[:])
	for _, m := range members {
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], uint16(len(m)))
		h.Write(n[:])
		h.Write(m)
	}
	h.Write([]byte(recipient))
	return h.Sum(nil)
}

func canonMembers(members []peer.ID) [][]byte {
	ids := slices.Clone(members)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make([][]byte, len(ids))
	for i, m := range ids {
		out[i] = []byte(m)
	}
	return out
}

// SealWelcome makes e (sender, tag, deps and clock set) a welcome starting
// a new epoch with secret: it seals keys to every recipient and fills the
// body. members lists every device holding the epoch (recipients and
// sealer). keys.Control goes only to recipients marked History. Sign e
// afterwards; its op ID names the epoch.
func SealWelcome(e *Envelope, secret Secret, keys EpochKeys, members []peer.ID, to []Recipient) error {
	e.Kind, e.Epoch, e.Index = KindWelcome, nil, 0
	keys.Secret = secret[:]
	full, err := detcbor.Marshal(keys)
	if err != nil {
		return err
	}
	short := keys
	short.Control = nil
	brief, err := detcbor.Marshal(short)
	if err != nil {
		return err
	}
	header := e.header()
	c, cc := Commit(secret), ControlCommit(ControlKey(secret))
	w := Welcome{Members: canonMembers(members), Commit: c[:], ControlCommit: cc[:], Seals: make([]Seal, 0, len(to))}
	if len(w.Members) == 0 {
		return fmt.Errorf("%w: a welcome without holders", ErrMalformed)
	}
	for i, r := range to {
		if !slices.Contains(members, r.ID) || slices.ContainsFunc(to[:i], func(o Recipient) bool { return o.ID == r.ID }) {
			return fmt.Errorf("%w: recipient %s is not a holder, or twice", ErrMalformed, r.ID)
		}
		pk, err := kem.NewPublicKey(r.KEM)
		if err != nil {
			return fmt.Errorf("%w: recipient %s", ErrBadPrekey, r.ID)
		}
		plain := brief
		switch {
		case len(r.Control) > 0:
			own := short
			own.Control = r.Control
			if plain, err = detcbor.Marshal(own); err != nil {
				return err
			}
		case r.History:
			plain = full
		}
		ct, err := hpke.Seal(pk, kdf, aead, welcomeInfo(header, w.Members, r.ID), plain)
		if err != nil {
			return err
		}
		w.Seals = append(w.Seals, Seal{Recipient: []byte(r.ID), Prekey: r.PrekeyID, Enc: ct})
	}
	slices.SortFunc(w.Seals, func(a, b Seal) int { return bytes.Compare(a.Recipient, b.Recipient) })
	e.Body, err = detcbor.Marshal(w)
	return err
}

// DecodeWelcome parses a welcome body and checks its shape: holders sorted
// and unique, a 32-byte commitment, at most one share per recipient, each
// a holder.
func DecodeWelcome(body []byte) (*Welcome, error) {
	var w Welcome
	if err := detcbor.Unmarshal(body, &w, maxWelcome); err != nil {
		return nil, fmt.Errorf("%w: welcome: %v", ErrMalformed, err)
	}
	if len(w.Commit) != 32 || len(w.ControlCommit) != 32 || len(w.Members) == 0 {
		return nil, fmt.Errorf("%w: welcome shape", ErrMalformed)
	}
	for i, m := range w.Members {
		if len(m) == 0 || len(m) > maxPeerID || (i > 0 && bytes.Compare(w.Members[i-1], m) >= 0) {
			return nil, fmt.Errorf("%w: welcome holders", ErrMalformed)
		}
	}
	for i, s := range w.Seals {
		if (i > 0 && bytes.Compare(w.Seals[i-1].Recipient, s.Recipient) >= 0) ||
			!slices.ContainsFunc(w.Members, func(m []byte) bool { return bytes.Equal(m, s.Recipient) }) {
			return nil, fmt.Errorf("%w: welcome shares", ErrMalformed)
		}
	}
	return &w, nil
}

// OpenWelcome finds self's share in the welcome envelope e (body w) and
// opens it with the prekey it names (or the certificate KEM key for prekey
// 0). It returns the keys and the epoch secret, checked against the
// welcome's commitment (ErrBadCommit: the issuer gave this device a secret
// other than the one it committed to).
func OpenWelcome(e *Envelope, w *Welcome, self peer.ID, ring *PrekeyRing, certKEM hpke.PrivateKey) (*EpochKeys, Secret, error) {
	header := e.header()
	for _, s := range w.Seals {
		if !bytes.Equal(s.Recipient, []byte(self)) {
			continue
		}
		priv := certKEM
		if s.Prekey != 0 {
			if ring == nil {
				return nil, Secret{}, ErrPrekeyGone
			}
			var err error
			if priv, err = ring.private(s.Prekey); err != nil {
				return nil, Secret{}, err
			}
		}
		if priv == nil {
			return nil, Secret{}, ErrPrekeyGone
		}
		plain, err := hpke.Open(priv, kdf, aead, welcomeInfo(header, w.Members, self), s.Enc)
		if err != nil {
			return nil, Secret{}, ErrDecrypt
		}
		var k EpochKeys
		if err := detcbor.Unmarshal(plain, &k, maxWelcome); err != nil || len(k.Secret) != 32 || !bytes.Equal(k.tag(), e.Tag) {
			return nil, Secret{}, fmt.Errorf("%w: welcome keys", ErrMalformed)
		}
		var secret Secret
		copy(secret[:], k.Secret)
		clear(k.Secret)
		k.Secret = nil
		if c := Commit(secret); !hmac.Equal(c[:], w.Commit) {
			clear(secret[:])
			return nil, Secret{}, ErrBadCommit
		}
		return &k, secret, nil
	}
	return nil, Secret{}, ErrNoSeal
}

type ringFile struct {
	Current uint32       `cbor:"1,keyasint"`
	Keys    []ringRecord `cbor:"2,keyasint"`
}

type ringRecord struct {
	Pub     Prekey `cbor:"1,keyasint"`
	Priv    []byte `cbor:"2,keyasint"`
	Retired int64  `cbor:"3,keyasint"` // Unix seconds; 0 while current
}

// Marshal serialises the ring, private halves included, for the device's
// encrypted store (never anywhere else).
func (r *PrekeyRing) Marshal() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := ringFile{Current: r.current}
	for _, e := range r.keys {
		priv, err := e.priv.Bytes()
		if err != nil {
			return nil, err
		}
		re := ringRecord{Pub: e.pub, Priv: priv}
		if !e.retired.IsZero() {
			re.Retired = e.retired.Unix()
		}
		f.Keys = append(f.Keys, re)
	}
	slices.SortFunc(f.Keys, func(a, b ringRecord) int { return cmp.Compare(a.Pub.ID, b.Pub.ID) })
	return detcbor.Marshal(f)
}

// UnmarshalPrekeyRing restores a ring saved by Marshal.
func UnmarshalPrekeyRing(data []byte, identity ed25519.PrivateKey, owner peer.ID) (*PrekeyRing, error) {
	var f ringFile
	if err := detcbor.Unmarshal(data, &f, 1<<20); err != nil {
		return nil, fmt.Errorf("%w: prekey ring: %v", ErrMalformed, err)
	}
	r := NewPrekeyRing(identity, owner)
	r.current = f.Current
	for i, e := range f.Keys {
		priv, err := kem.NewPrivateKey(e.Priv)
		if err != nil || string(e.Pub.Owner) != string(owner) || (i > 0 && e.Pub.ID <= f.Keys[i-1].Pub.ID) ||
			!bytes.Equal(priv.PublicKey().Bytes(), e.Pub.KEM) {
			return nil, fmt.Errorf("%w: prekey ring entry", ErrMalformed)
		}
		re := &ringEntry{pub: e.Pub, priv: priv}
		if e.Retired != 0 {
			re.retired = time.Unix(e.Retired, 0)
		}
		r.keys[e.Pub.ID] = re
	}
	if (f.Current != 0 && r.keys[f.Current] == nil) || (len(f.Keys) > 0 && f.Keys[len(f.Keys)-1].Pub.ID > f.Current) {
		return nil, fmt.Errorf("%w: prekey ring current", ErrMalformed)
	}
	return r, nil
}

// EncodePrekey and DecodePrekey move a signed prekey in directory entries.
func EncodePrekey(p *Prekey) ([]byte, error) { return detcbor.Marshal(p) }

// DecodePrekey parses and verifies a signed prekey.
func DecodePrekey(b []byte) (*Prekey, error) {
	var p Prekey
	if err := detcbor.Unmarshal(b, &p, 8192); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPrekey, err)
	}
	if err := p.Verify(); err != nil {
		return nil, err
	}
	return &p, nil
}
