package witness

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hdevalence/ed25519consensus"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// AnswerDomain separates what a witness signs.
const AnswerDomain = "medmesh witness answer v1\x00"

// Wire limits.
const (
	maxDeposit = 4 << 10  // a head (~230 bytes) and a proof of at most audit.MaxProof hashes
	maxAnswer  = 16 << 10 // two heads and the witness's certificate chain (PEM, ~3 KB)
)

// Errors of the exchange.
var (
	// ErrAnswer: an answer that is malformed, not signed by the witness it
	// names, or not about this device.
	ErrAnswer = errors.New("witness answer malformed or not signed by its witness")
	// ErrNotWitness: the answer's signer is not a witness under these trust
	// roots (certificate chain, revocation or role).
	ErrNotWitness = errors.New("witness answer not from an admitted anchor or archive member")
	// ErrConflict: a witness holds a head signed by this device's key that
	// does not extend the head it held: the log was cut and grown again.
	ErrConflict = errors.New("a witness holds two heads signed by this device that do not extend each other (the log was cut and rewritten)")
	// ErrAnswerTime: an answer timed too far from the receiving device's
	// clock to be kept (a witness with a wrong clock, or a hostile one).
	ErrAnswerTime = errors.New("witness answer timed too far from this device's clock")
)

// deposit is what a device sends: its head and, when the witness holds an
// older head (From, its entry number), the consistency proof from the tree
// of From entries to the new head's tree (audit.Reader.Consistency).
type deposit struct {
	Head  []byte   `cbor:"1,keyasint"`
	From  uint64   `cbor:"2,keyasint,omitempty"`
	Proof [][]byte `cbor:"3,keyasint,omitempty"`
}

func decodeDeposit(raw []byte) (deposit, error) {
	var d deposit
	if err := detcbor.Unmarshal(raw, &d, maxDeposit); err != nil {
		return deposit{}, fmt.Errorf("deposit: %w", err)
	}
	if len(d.Proof) > audit.MaxProof || (d.From == 0 && len(d.Proof) > 0) {
		return deposit{}, fmt.Errorf("deposit: proof of %d hashes from entry %d", len(d.Proof), d.From)
	}
	for _, h := range d.Proof {
		if len(h) != 32 {
			return deposit{}, errors.New("deposit: a proof hash of the wrong size")
		}
	}
	return d, nil
}

func (d deposit) proof() [][32]byte {
	out := make([][32]byte, len(d.Proof))
	for i, h := range d.Proof {
		out[i] = [32]byte(h)
	}
	return out
}

type answerBody struct {
	V        uint8  `cbor:"1,keyasint"`
	Device   []byte `cbor:"2,keyasint"` // the device's peer ID
	Witness  []byte `cbor:"3,keyasint"` // the witness's peer ID: its key signs
	Time     int64  `cbor:"4,keyasint"` // Unix nanoseconds, the witness's clock
	Held     []byte `cbor:"5,keyasint,omitempty"`
	Conflict []byte `cbor:"6,keyasint,omitempty"`
	Want     uint64 `cbor:"7,keyasint,omitempty"`
	Certs    []byte `cbor:"8,keyasint,omitempty"` // the witness's certificate chain (device.crt, PEM)
}

type signedAnswer struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

// Answer is a witness's signed answer to a deposit: the head of Device's
// log it holds, and — if it was ever given one that does not extend the
// held head — the first such head, as evidence. Want asks for a proof from
// that entry (the deposit's head was newer but came without one).
type Answer struct {
	Device   peer.ID
	Witness  peer.ID
	Time     time.Time
	Held     audit.Head // Seq 0: none
	Conflict *audit.Head
	Want     uint64
	Certs    []byte
	Raw      []byte // the signed record, as kept
}

func signAnswer(sk ed25519.PrivateKey, b answerBody) ([]byte, error) {
	if len(sk) != ed25519.PrivateKeySize {
		return nil, errors.New("witness answer: no identity key to sign with")
	}
	b.V = 1
	body, err := detcbor.Marshal(b)
	if err != nil {
		return nil, err
	}
	return detcbor.Marshal(signedAnswer{Body: body, Sig: ed25519.Sign(sk, append([]byte(AnswerDomain), body...))})
}

// DecodeAnswer parses a witness's answer and checks that the witness it
// names signed it, that it is about the device whose key is key, and that
// the heads in it are that device's. It does not check that the signer is
// a witness: see CheckWitness.
func DecodeAnswer(raw []byte, key ed25519.PublicKey) (Answer, error) {
	var s signedAnswer
	if err := detcbor.Unmarshal(raw, &s, maxAnswer); err != nil {
		return Answer{}, fmt.Errorf("%w: %v", ErrAnswer, err)
	}
	var b answerBody
	if err := detcbor.Unmarshal(s.Body, &b, maxAnswer); err != nil {
		return Answer{}, fmt.Errorf("%w: %v", ErrAnswer, err)
	}
	if b.V != 1 || len(s.Sig) != ed25519.SignatureSize {
		return Answer{}, fmt.Errorf("%w: version %d", ErrAnswer, b.V)
	}
	w, err1 := peer.IDFromBytes(b.Witness)
	d, err2 := peer.IDFromBytes(b.Device)
	if err1 != nil || err2 != nil {
		return Answer{}, fmt.Errorf("%w: peer IDs", ErrAnswer)
	}
	wk, err := KeyOf(w)
	if err != nil {
		return Answer{}, fmt.Errorf("%w: %v", ErrAnswer, err)
	}
	if !ed25519consensus.Verify(wk, append([]byte(AnswerDomain), s.Body...), s.Sig) {
		return Answer{}, fmt.Errorf("%w: the signature of %s does not verify", ErrAnswer, w)
	}
	if dk, err := KeyOf(d); err != nil || !dk.Equal(key) {
		return Answer{}, fmt.Errorf("%w: it is about another device (%s)", ErrAnswer, d)
	}
	if w == d {
		// No device deposits with itself: only its own key holder writes this.
		return Answer{}, fmt.Errorf("%w: it names the device itself as its witness", ErrAnswer)
	}
	if len(b.Conflict) > 0 && len(b.Held) == 0 {
		// Evidence is two heads; a witness holding none has no evidence.
		return Answer{}, fmt.Errorf("%w: a conflicting head without a held one", ErrAnswer)
	}
	a := Answer{Device: d, Witness: w, Time: time.Unix(0, b.Time).UTC(), Want: b.Want, Certs: b.Certs, Raw: raw}
	if len(b.Held) > 0 {
		if a.Held, err = audit.DecodeHead(b.Held, key); err != nil {
			return Answer{}, fmt.Errorf("%w: the held head: %v", ErrAnswer, err)
		}
	}
	if len(b.Conflict) > 0 {
		c, err := audit.DecodeHead(b.Conflict, key)
		if err != nil {
			return Answer{}, fmt.Errorf("%w: the conflicting head: %v", ErrAnswer, err)
		}
		a.Conflict = &c
	}
	return a, nil
}

// CheckWitness checks that a's signer was, when it answered, a device
// admitted under trust whose certificate carries one of roles (anchor,
// archive): its certificate chain (in the answer) verifies to the trust's
// roots, against the CRLs the trust holds, for the witness's peer ID.
func CheckWitness(a Answer, trust *identity.Trust, roles ...string) error {
	if a.Witness == a.Device {
		return fmt.Errorf("%w: %s names itself as its witness", ErrNotWitness, a.Witness)
	}
	certs, err := identity.ParseCertificates(a.Certs)
	if err != nil {
		return fmt.Errorf("%w: %s's certificates: %v", ErrNotWitness, a.Witness, err)
	}
	chain, cred := identity.SplitBundle(certs)
	var has []string
	if cred != nil {
		c, err := trust.AdmitCredential(cred, a.Witness, a.Time)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotWitness, a.Witness, err)
		}
		has = c.Roles
	} else {
		s, err := trust.Admit(chain, a.Witness, a.Time)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotWitness, a.Witness, err)
		}
		has = s.Roles
	}
	for _, r := range roles {
		if slices.Contains(has, r) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s has none of the roles %v", ErrNotWitness, a.Witness, roles)
}

// Check is what a kept answer says of the log r: nil if the log holds the
// held head's entry, unchanged, and the witness saw no conflicting head —
// or the log vouches for both (then they do extend each other: a witness
// cannot make a device's genuine heads look like evidence). With r nil,
// any conflict is an error.
func (a Answer) Check(ctx context.Context, r *audit.Reader) error {
	if a.Conflict != nil && a.Held.Seq == 0 {
		return fmt.Errorf("%w: a conflicting head without a held one", ErrAnswer) // not evidence (DecodeAnswer refuses it)
	}
	if a.Conflict != nil && !Disproved(ctx, r, a.Held, *a.Conflict) {
		return fmt.Errorf("%w: %s holds entry %d (hash %x) and was given entry %d (hash %x) that does not extend it",
			ErrConflict, a.Witness, a.Held.Seq, a.Held.Hash[:8], a.Conflict.Seq, a.Conflict.Hash[:8])
	}
	if a.Held.Seq == 0 || r == nil {
		return nil
	}
	if err := r.Vouched(ctx, a.Held); err != nil {
		return fmt.Errorf("%w: %v", ErrWitnessed, err)
	}
	return nil
}

// Disproved says whether the log r vouches for both held and conflict
// (audit.Reader.Vouched: each one's entry and tree), which shows that the
// two heads extend each other whatever a witness claims.
func Disproved(ctx context.Context, r *audit.Reader, held, conflict audit.Head) bool {
	return r != nil && held.Seq > 0 && r.Vouched(ctx, held) == nil && r.Vouched(ctx, conflict) == nil
}
