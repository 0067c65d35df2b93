package rota

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/hdevalence/ed25519consensus"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Domain separates rota op signatures from every other signature made
// with a device key.
const Domain = "medmesh rota op v1\x00"

// AdminRole is the certificate role that may define on-call roles.
const AdminRole = "rota-admin"

// Bounds.
const (
	MaxOpSize   = 2048 // bytes of one encoded op
	MaxRoles    = 64   // defined on-call roles per site
	MaxChain    = 8    // roles in an escalation chain
	MaxSeen     = 16   // superseded ops one op names
	MaxLive     = 32   // unsuperseded take/hand-over/release ops per role
	MaxDefs     = 8    // definitions kept per role (each signer's greatest by (Seq, ID))
	MaxPending  = 64   // ops held until their role's definition arrives
	MaxGone     = 1024 // IDs of compacted ops remembered per role
	MaxNameLen  = 128  // bytes of a display name
	maxIDLen    = 64   // bytes of a role ID, site or certificate role
	version     = 1
	sigSize     = ed25519.SignatureSize
	maxSignerID = 64
)

// MaxPendingPerSigner is one signer's share of MaxPending: a colleague
// signing takes of roles nobody defined cannot fill it for everyone.
const MaxPendingPerSigner = MaxPending / 8

// MaxNamedPerSigner is one signer's share of a role's gone list for IDs
// its compacted ops named that never arrived: made-up IDs in Seen push
// out only the signer's own.
const MaxNamedPerSigner = MaxGone / 8

// Kind is what an op does.
type Kind uint8

// Op kinds.
const (
	KindDefine   Kind = 1
	KindTake     Kind = 2
	KindHandover Kind = 3
	KindRelease  Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindDefine:
		return "define"
	case KindTake:
		return "take"
	case KindHandover:
		return "handover"
	case KindRelease:
		return "release"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// RoleID names an on-call role within its site: lower-case letters,
// digits and dashes, 1 to 64 bytes.
type RoleID string

var roleIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// Valid reports whether id is well formed.
func (id RoleID) Valid() bool { return roleIDRe.MatchString(string(id)) }

func (id RoleID) String() string { return string(id) }

// OpID is the SHA-256 of an op's encoding.
type OpID [32]byte

func (id OpID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler.
func (id OpID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// IsZero reports whether id is the zero ID.
func (id OpID) IsZero() bool { return id == OpID{} }

// Op is one decoded, signature-checked rota op.
type Op struct {
	ID     OpID
	Kind   Kind
	Role   RoleID
	Site   string
	Signer peer.ID
	Time   time.Time // the signer's clock: shown as "since"; orders one signer's ops only as View says
	Seen   []OpID    // take, hand-over, release: the ops this one supersedes
	// Define only.
	Seq      uint64
	Name     string
	Requires string
	Chain    []RoleID
	// Hand-over only: the new holder.
	To peer.ID

	raw []byte
}

// Raw is the op's encoding, as it travels and is stored.
func (o *Op) Raw() []byte { return o.raw }

// Holder is who holds the role through this op (take: the signer,
// hand-over: To); "" for a define or release.
func (o *Op) Holder() peer.ID {
	switch o.Kind {
	case KindTake:
		return o.Signer
	case KindHandover:
		return o.To
	}
	return ""
}

// body is the signed part of an op.
type body struct {
	V        uint8    `cbor:"1,keyasint"`
	Kind     uint8    `cbor:"2,keyasint"`
	Role     string   `cbor:"3,keyasint"`
	Site     string   `cbor:"4,keyasint"`
	Signer   []byte   `cbor:"5,keyasint"`
	Time     int64    `cbor:"6,keyasint"` // unix milliseconds
	Seen     [][]byte `cbor:"7,keyasint,omitempty"`
	Seq      uint64   `cbor:"8,keyasint,omitempty"`
	Name     string   `cbor:"9,keyasint,omitempty"`
	Requires string   `cbor:"10,keyasint,omitempty"`
	Chain    []string `cbor:"11,keyasint,omitempty"`
	To       []byte   `cbor:"12,keyasint,omitempty"`
}

type record struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

// Draft is an op before it is signed.
type Draft struct {
	Kind     Kind
	Role     RoleID
	Site     string
	Time     time.Time
	Seen     []OpID
	Seq      uint64
	Name     string
	Requires string
	Chain    []RoleID
	To       peer.ID
}

// Sign signs d with key and returns the op as Decode would return it.
func Sign(key ed25519.PrivateKey, d Draft) (*Op, error) {
	pub, err := crypto.UnmarshalEd25519PublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	signer, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return nil, err
	}
	b := body{V: version, Kind: uint8(d.Kind), Role: string(d.Role), Site: d.Site, Signer: []byte(signer),
		Time: d.Time.UnixMilli(), Seq: d.Seq, Name: d.Name, Requires: d.Requires, To: []byte(d.To)}
	for _, s := range d.Seen {
		b.Seen = append(b.Seen, s[:])
	}
	for _, c := range d.Chain {
		b.Chain = append(b.Chain, string(c))
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	braw, err := detcbor.Marshal(b)
	if err != nil {
		return nil, err
	}
	raw, err := detcbor.Marshal(record{Body: braw, Sig: ed25519.Sign(key, append([]byte(Domain), braw...))})
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxOpSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(raw))
	}
	return Decode(raw)
}

// Decode reads an op: canonical encoding, shapes within bounds, and a valid
// signature by the key its signer's peer ID embeds. What the signer may do
// is not judged here (see View).
func Decode(raw []byte) (*Op, error) {
	if len(raw) > MaxOpSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(raw))
	}
	var r record
	if err := detcbor.Unmarshal(raw, &r, MaxOpSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var b body
	if err := detcbor.Unmarshal(r.Body, &b, MaxOpSize); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	signer, err := peer.IDFromBytes(b.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer", ErrMalformed)
	}
	pk, err := signer.ExtractPublicKey()
	if err != nil || pk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: signer key", ErrMalformed)
	}
	pub, err := pk.Raw()
	if err != nil || len(pub) != ed25519.PublicKeySize || len(r.Sig) != sigSize {
		return nil, fmt.Errorf("%w: signer key", ErrMalformed)
	}
	if !ed25519consensus.Verify(pub, append([]byte(Domain), r.Body...), r.Sig) {
		return nil, ErrBadSignature
	}
	op := &Op{ID: sha256.Sum256(raw), Kind: Kind(b.Kind), Role: RoleID(b.Role), Site: b.Site, Signer: signer,
		Time: time.UnixMilli(b.Time).UTC(), Seq: b.Seq, Name: b.Name, Requires: b.Requires, raw: raw}
	for _, s := range b.Seen {
		op.Seen = append(op.Seen, OpID(s))
	}
	for _, c := range b.Chain {
		op.Chain = append(op.Chain, RoleID(c))
	}
	if len(b.To) > 0 {
		to, err := peer.IDFromBytes(b.To)
		if err != nil {
			return nil, fmt.Errorf("%w: hand-over target", ErrMalformed)
		}
		op.To = to
	}
	return op, nil
}

func shortText(s string, max int) bool { return len(s) <= max && utf8.ValidString(s) }

// check bounds the body's shapes by kind.
func (b *body) check() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }
	switch {
	case b.V != version:
		return bad("version")
	case !RoleID(b.Role).Valid():
		return bad("role ID")
	case !shortText(b.Site, maxIDLen):
		return bad("site")
	case len(b.Signer) == 0 || len(b.Signer) > maxSignerID:
		return bad("signer")
	case len(b.Seen) > MaxSeen:
		return bad("too many superseded ops")
	}
	for i, s := range b.Seen {
		if len(s) != sha256.Size {
			return bad("superseded op ID")
		}
		for _, t := range b.Seen[:i] {
			if string(s) == string(t) {
				return bad("superseded op named twice")
			}
		}
	}
	define := Kind(b.Kind) == KindDefine
	if !define && (b.Seq != 0 || b.Name != "" || b.Requires != "" || len(b.Chain) != 0) {
		return bad("definition fields on a holder op")
	}
	if (Kind(b.Kind) == KindHandover) != (len(b.To) != 0) || len(b.To) > maxSignerID {
		return bad("hand-over target")
	}
	switch Kind(b.Kind) {
	case KindDefine:
		switch {
		case len(b.Seen) != 0:
			return bad("definition naming ops")
		case b.Seq == 0:
			return bad("definition sequence")
		case b.Name == "" || !shortText(b.Name, MaxNameLen):
			return bad("role name")
		case b.Requires == "" || !shortText(b.Requires, maxIDLen):
			return bad("required role")
		case len(b.Chain) > MaxChain:
			return bad("escalation chain too long")
		}
		for i, c := range b.Chain {
			if !RoleID(c).Valid() || c == b.Role {
				return bad("escalation chain role")
			}
			for _, d := range b.Chain[:i] {
				if c == d {
					return bad("escalation chain names a role twice")
				}
			}
		}
	case KindTake, KindHandover, KindRelease:
	default:
		return bad("kind")
	}
	return nil
}
