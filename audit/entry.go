package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	"github.com/hdevalence/ed25519consensus"

	"github.com/medmesh/medmesh/internal/detcbor"
)

// Kind is what happened.
type Kind string

// Event kinds.
const (
	Sent           Kind = "sent"              // this device sent a message or photo
	Received       Kind = "received"          // a colleague's message or photo arrived
	Read           Kind = "read"              // this device's user read messages
	Acknowledged   Kind = "acknowledged"      // this device's user acknowledged, or a colleague's acknowledgement arrived
	PhotoViewed    Kind = "photo_viewed"      // this device's user opened a photo in full
	Edited         Kind = "edited"            // a message was edited (Peer: by whom, if not this device)
	Deleted        Kind = "deleted"           // a message was deleted (Peer: by whom, if not this device)
	Created        Kind = "created"           // this device created a conversation
	MemberAdded    Kind = "member_added"      // Peer joined a conversation (Ops: the add)
	MemberRemoved  Kind = "member_removed"    // Peer was removed from, or left, a conversation
	Unlocked       Kind = "unlocked"          // the app was unlocked with the device passphrase
	Locked         Kind = "locked"            // the app was locked (by the user, or after inactivity)
	UnlockFailed   Kind = "unlock_failed"     // a wrong passphrase at the lock screen
	CRLApplied     Kind = "crl_applied"       // a newer CRL was applied (Serial: its number)
	Wiped          Kind = "wiped"             // the device learnt it was revoked and destroyed its keys
	Exported       Kind = "exported"          // data left the device (export to the record)
	Refused        Kind = "refused"           // a colleague's op arrived that this device's replica refused or voided (Peer: its sender)
	MemberVoided   Kind = "member_add_voided" // Peer's membership, recorded as added, was withdrawn: ops that arrived later voided the add
	RoleTaken      Kind = "role_taken"        // this device's user took an on-call role (Ops: the rota op)
	RoleHandedOver Kind = "role_handed_over"  // this device's user handed an on-call role over (Peer: to whom; Ops: the rota op)
	PINSet         Kind = "pin_set"           // the app's user set a quick-unlock PIN (it reopens the app after the inactivity lock)
	PINUnlocked    Kind = "pin_unlocked"      // the app was unlocked with the quick-unlock PIN
	PINFailed      Kind = "pin_failed"        // a wrong quick-unlock PIN at the lock screen
	PINCleared     Kind = "pin_cleared"       // the quick-unlock PIN was cleared (wrong PINs, a lock by hand, or the user)
	Escalated      Kind = "escalated"         // an urgent message nobody acknowledged was escalated (Ops: the message, the escalation; Peer: by whom, if not this device)
)

// Kinds lists every kind an entry may have.
var Kinds = []Kind{Sent, Received, Read, Acknowledged, PhotoViewed, Edited, Deleted, Created, MemberAdded,
	MemberRemoved, Unlocked, Locked, UnlockFailed, CRLApplied, Wiped, Exported, Refused, MemberVoided,
	PINSet, PINUnlocked, PINFailed, PINCleared, RoleTaken, RoleHandedOver, Escalated}

func knownKind(k Kind) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Limits on what an entry carries.
const (
	MaxOps    = 64  // op IDs in one entry
	MaxID     = 128 // bytes of one identifier
	maxRecord = 16 << 10
)

// IDs are the identifiers an event concerns, in their text forms. There
// is deliberately no field for text, names or content.
type IDs struct {
	Conversation string   `cbor:"1,keyasint,omitempty" json:"conversation,omitempty"`
	Ops          []string `cbor:"2,keyasint,omitempty" json:"ops,omitempty"`
	Peer         string   `cbor:"3,keyasint,omitempty" json:"peer,omitempty"`
	Serial       string   `cbor:"4,keyasint,omitempty" json:"serial,omitempty"`
}

// DigestPrefix marks an identifier longer than MaxID recorded as its
// digest (see BoundID).
const DigestPrefix = "sha256:"

// BoundID is id as an entry may carry it: unchanged if at most MaxID
// bytes, else "sha256:" and the hex SHA-256 of its bytes (71 bytes), so
// that an identifier a colleague chose (a bogus peer ID in an op) never
// puts its raw bytes, or an oversized field, into the log.
func BoundID(id string) string {
	if len(id) <= MaxID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return DigestPrefix + hex.EncodeToString(sum[:])
}

// Chunked makes events of kind about ids, with ops spread over as many
// as it takes (MaxOps each): one event at least, without ops if there
// are none.
func Chunked(kind Kind, ids IDs, ops []string) []Event {
	var evs []Event
	for len(ops) > 0 || evs == nil {
		n := min(len(ops), MaxOps)
		e := Event{Kind: kind, IDs: ids}
		e.IDs.Ops = nil
		if n > 0 {
			e.IDs.Ops = ops[:n:n]
		}
		evs = append(evs, e)
		ops = ops[n:]
	}
	return evs
}

// Valid says whether ev may be appended: a known kind, IDs within the
// limits.
func (ev Event) Valid() bool { return knownKind(ev.Kind) && ev.IDs.valid() }

func (ids IDs) valid() bool {
	if len(ids.Ops) > MaxOps || len(ids.Conversation) > MaxID || len(ids.Peer) > MaxID || len(ids.Serial) > MaxID {
		return false
	}
	for _, o := range ids.Ops {
		if len(o) > MaxID {
			return false
		}
	}
	return true
}

// Event is what a caller records: the log adds seq, time, chain and
// signature.
type Event struct {
	Kind Kind
	IDs  IDs
}

// The range of entry times: times are stored as int64 Unix nanoseconds,
// which hold 1677-09-21 to 2262-04-11. Append never stamps an entry
// outside [MinTime, MaxTime]: a clock outside it (a spoofed or broken
// clock) is ignored and the entry gets the previous entry's time + 1 ns
// (MinTime for a first entry), so an honest log always verifies.
var (
	MinTime = time.Unix(0, 0).UTC()
	MaxTime = time.Unix(0, math.MaxInt64).UTC()
)

func inRange(t time.Time) bool { return !t.Before(MinTime) && !t.After(MaxTime) }

// Domain separation of what is hashed and signed.
const (
	EntryDomain = "medmesh audit entry v1\x00"
	SigDomain   = "medmesh audit signature v1\x00"
	HeadDomain  = "medmesh audit head v1\x00"
)

const version = 1

// body is the hashed part of an entry.
type body struct {
	V    uint8  `cbor:"1,keyasint"`
	Key  []byte `cbor:"2,keyasint"` // the device's Ed25519 public key
	Seq  uint64 `cbor:"3,keyasint"`
	Time int64  `cbor:"4,keyasint"` // Unix nanoseconds
	Kind string `cbor:"5,keyasint"`
	IDs  IDs    `cbor:"6,keyasint"`
	Prev []byte `cbor:"7,keyasint"` // hash of the entry before; zeros for the first
}

// record is an entry as stored: its body's exact bytes and the signature.
type record struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

// Entry is one decoded entry of the log.
type Entry struct {
	Seq  uint64
	Time time.Time
	Kind Kind
	IDs  IDs
	Prev [32]byte
	Hash [32]byte
	Sig  []byte
	Key  ed25519.PublicKey
	Body []byte // the hashed bytes (deterministic CBOR)
}

// hashBody is SHA-256(EntryDomain || b).
func hashBody(domain string, b []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func sigMessage(hash [32]byte) []byte { return append([]byte(SigDomain), hash[:]...) }

// seal encodes and signs an entry.
func seal(key ed25519.PrivateKey, seq uint64, t time.Time, ev Event, prev [32]byte) (Entry, []byte, error) {
	pub := key.Public().(ed25519.PublicKey)
	b := body{V: version, Key: pub, Seq: seq, Time: t.UnixNano(), Kind: string(ev.Kind), IDs: ev.IDs, Prev: prev[:]}
	raw, err := detcbor.Marshal(b)
	if err != nil {
		return Entry{}, nil, err
	}
	e := Entry{Seq: seq, Time: time.Unix(0, b.Time).UTC(), Kind: ev.Kind, IDs: ev.IDs, Prev: prev, Key: pub, Body: raw}
	e.Hash = hashBody(EntryDomain, raw)
	e.Sig = ed25519.Sign(key, sigMessage(e.Hash))
	rec, err := detcbor.Marshal(record{Body: raw, Sig: e.Sig})
	return e, rec, err
}

// Decode parses a stored entry record. It checks the form (canonical
// encoding, sizes, a known kind), not the signature or the chain: see
// Chain.
func Decode(rec []byte) (Entry, error) {
	var r record
	if err := detcbor.Unmarshal(rec, &r, maxRecord); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var b body
	if err := detcbor.Unmarshal(r.Body, &b, maxRecord); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case b.V != version:
		return Entry{}, fmt.Errorf("%w: version %d", ErrMalformed, b.V)
	case len(b.Key) != ed25519.PublicKeySize, len(b.Prev) != 32, len(r.Sig) != ed25519.SignatureSize:
		return Entry{}, fmt.Errorf("%w: key, prev or signature of the wrong size", ErrMalformed)
	case b.Seq == 0:
		return Entry{}, fmt.Errorf("%w: seq 0", ErrMalformed)
	case !knownKind(Kind(b.Kind)) || !b.IDs.valid():
		return Entry{}, fmt.Errorf("%w: unknown kind or oversized IDs", ErrMalformed)
	}
	e := Entry{Seq: b.Seq, Time: time.Unix(0, b.Time).UTC(), Kind: Kind(b.Kind), IDs: b.IDs,
		Sig: r.Sig, Key: ed25519.PublicKey(b.Key), Body: r.Body}
	copy(e.Prev[:], b.Prev)
	e.Hash = hashBody(EntryDomain, r.Body)
	return e, nil
}

// VerifySignature checks the entry's signature under its own key.
func (e Entry) VerifySignature() bool {
	return len(e.Key) == ed25519.PublicKeySize && ed25519consensus.Verify(e.Key, sigMessage(e.Hash), e.Sig)
}

// Chain checks entries one after another, from the first: each must be
// well formed, of the expected device, next in sequence, chained to the
// one before, later in time, and signed.
type Chain struct {
	key  ed25519.PublicKey
	seq  uint64
	prev [32]byte
	last time.Time
}

// NewChain starts checking a log of the device with public key key.
func NewChain(key ed25519.PublicKey) *Chain { return &Chain{key: key} }

// Add checks the next record; the error is a *BrokenError naming it.
func (c *Chain) Add(rec []byte) (Entry, error) {
	want := c.seq + 1
	e, err := Decode(rec)
	if err != nil {
		return Entry{}, broken(want, err)
	}
	switch {
	case !bytes.Equal(e.Key, c.key):
		return Entry{}, broken(want, ErrForeign)
	case !e.VerifySignature():
		return Entry{}, broken(want, ErrSignature)
	case e.Seq != want:
		return Entry{}, broken(want, fmt.Errorf("%w: found seq %d", ErrSequence, e.Seq))
	case e.Prev != c.prev:
		return Entry{}, broken(want, ErrChain)
	case c.seq > 0 && !e.Time.After(c.last):
		return Entry{}, broken(want, ErrTime)
	}
	c.seq, c.prev, c.last = e.Seq, e.Hash, e.Time
	return e, nil
}

// Seq is the seq of the last entry checked (0: none).
func (c *Chain) Seq() uint64 { return c.seq }

// Hash is the hash of the last entry checked.
func (c *Chain) Hash() [32]byte { return c.prev }
