package chat

import (
	"fmt"
	"slices"

	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/patient"
)

// Op kinds. Content kinds are sealed with sender chains, control kinds with
// the epoch's control key.
const (
	kindText    uint8 = 1
	kindEdit    uint8 = 2
	kindDelete  uint8 = 3
	kindReact   uint8 = 4
	kindUnreact uint8 = 5
	kindPhoto   uint8 = 6 // a photo: thumbnail inline, full image in chunk ops
	kindChunk   uint8 = 7 // one chunk of a photo

	kindCreate    uint8 = 10
	kindAdd       uint8 = 11
	kindRemove    uint8 = 12
	kindPromote   uint8 = 13
	kindLeave     uint8 = 14
	kindReceipt   uint8 = 15
	kindRetention uint8 = 16
	kindPatient   uint8 = 17 // sets, corrects or clears the conversation's patient
	kindRole      uint8 = 18 // links the conversation to an on-call role (set at creation)
	kindEscalate  uint8 = 19 // escalation step k of an urgent message to new targets (escalate.go)

	kindWelcome uint8 = 100 // not a payload: the welcome envelope itself
)

// isControl: sealed with the epoch's control key. A delete is a control op:
// every member — later ones too, through history — reads it, so whether a
// message was deleted never depends on which epochs a device held.
func isControl(k uint8) bool { return k == kindDelete || (k >= kindCreate && k < kindWelcome) }

func isMembership(k uint8) bool {
	switch k {
	case kindCreate, kindAdd, kindRemove, kindPromote, kindLeave, kindRetention, kindEscalate:
		return true
	}
	return false
}

// Receipt levels.
const (
	Delivered    = 1
	Read         = 2
	Acknowledged = 3
)

// Limits.
const (
	MaxText      = 16 << 10
	MaxPhoto     = 8 << 20   // bytes of one photo, after re-encoding
	MaxChunk     = 512 << 10 // bytes of photo data in one op
	maxTargets   = 1024
	maxMembers   = 4096
	maxPayload   = 1 << 20
	maxTitle     = 256
	maxEmojiText = 32
)

// payload is the encrypted part of an op.
type payload struct {
	Kind      uint8    `cbor:"1,keyasint"`
	Text      string   `cbor:"2,keyasint,omitempty"`
	Target    []byte   `cbor:"3,keyasint,omitempty"` // op ID: reply-to, edit, delete, react
	Urgent    bool     `cbor:"4,keyasint,omitempty"`
	Tags      [][]byte `cbor:"5,keyasint,omitempty"`  // reaction tags observed (unreact)
	Member    []byte   `cbor:"6,keyasint,omitempty"`  // peer ID (add, remove, promote)
	Members   [][]byte `cbor:"7,keyasint,omitempty"`  // create: initial members; admins are the creator
	Level     uint8    `cbor:"8,keyasint,omitempty"`  // receipt level
	Targets   [][]byte `cbor:"9,keyasint,omitempty"`  // explicit receipt: the messages it names
	Retention int64    `cbor:"10,keyasint,omitempty"` // seconds; 0 keeps forever
	Data      []byte   `cbor:"11,keyasint,omitempty"` // photo thumbnail, or a chunk's bytes
	Chunks    [][]byte `cbor:"12,keyasint,omitempty"` // photo: its chunk op IDs, in order
	Size      int64    `cbor:"13,keyasint,omitempty"` // photo: bytes of the full image
	// Cumulative receipts (see "Receipts" in doc.go): Past covers the
	// receipt's own causal past, Heads the ops named and their causal
	// past; Except names messages in that cover its sender holds but
	// cannot read.
	Past   bool     `cbor:"14,keyasint,omitempty"`
	Heads  [][]byte `cbor:"15,keyasint,omitempty"`
	Except [][]byte `cbor:"16,keyasint,omitempty"`
	// Patient: who the conversation is about (kindPatient only; absent
	// there, the link is cleared).
	Patient *patientBody `cbor:"17,keyasint,omitempty"`
	// Role: the on-call role the conversation was addressed to (kindRole
	// only; absent there, the link is cleared).
	Role *roleBody `cbor:"18,keyasint,omitempty"`
	// Urgent escalation (escalate.go): AckWithin on an urgent message is
	// the seconds it wants an acknowledgement within; an escalation op
	// quotes it (with Urgent and Text), names the message in Target, its
	// Step and the colleagues it brings in (To), and a Label for them.
	AckWithin int64    `cbor:"30,keyasint,omitempty"`
	Step      uint32   `cbor:"31,keyasint,omitempty"`
	To        [][]byte `cbor:"32,keyasint,omitempty"`
	Label     string   `cbor:"33,keyasint,omitempty"`
}

// patientBody is a patient inside a patient op: never anywhere but in
// the encrypted payload.
type patientBody struct {
	NHS   string `cbor:"1,keyasint"` // ten digits, check digit valid
	Name  string `cbor:"2,keyasint,omitempty"`
	Birth string `cbor:"3,keyasint,omitempty"` // YYYY-MM-DD
}

func (b *patientBody) patient() patient.Patient {
	return patient.Patient{NHSNumber: patient.NHSNumber(b.NHS), Name: b.Name, BirthDate: b.Birth}
}

// cumulative reports whether a receipt covers a causal past rather than
// naming each message.
func (p *payload) cumulative() bool { return p.Past || len(p.Heads) > 0 }

func knownKind(k uint8) bool {
	return (k >= kindText && k <= kindChunk) || (k >= kindCreate && k <= kindEscalate)
}

func (p *payload) check() error {
	switch {
	case !knownKind(p.Kind):
		return fmt.Errorf("%w: kind %d", ErrInvalidPayload, p.Kind)
	case len(p.Text) > MaxText && p.Kind != kindCreate:
		return fmt.Errorf("%w: text of %d bytes", ErrTooLarge, len(p.Text))
	case p.Kind == kindCreate && len(p.Text) > maxTitle:
		return fmt.Errorf("%w: title", ErrTooLarge)
	case len(p.Data) > MaxChunk || len(p.Chunks) > MaxPhoto/MaxChunk+1 || p.Size > MaxPhoto:
		return fmt.Errorf("%w: photo data", ErrTooLarge)
	case len(p.Targets) > maxTargets || len(p.Tags) > maxTargets || len(p.Members) > maxMembers:
		return fmt.Errorf("%w: too many targets or members", ErrInvalidPayload)
	case p.Target != nil && len(p.Target) != 32:
		return fmt.Errorf("%w: target", ErrInvalidPayload)
	case p.Level > Acknowledged:
		return fmt.Errorf("%w: receipt level", ErrInvalidPayload)
	case len(p.Heads) > maxTargets || len(p.Except) > maxTargets:
		return fmt.Errorf("%w: too many heads or exceptions", ErrInvalidPayload)
	case p.Kind != kindReceipt && (p.cumulative() || len(p.Except) > 0):
		return fmt.Errorf("%w: receipt fields on kind %d", ErrInvalidPayload, p.Kind)
	case p.Kind == kindReceipt && len(p.Except) > 0 && !p.cumulative():
		return fmt.Errorf("%w: exceptions without a cumulative receipt", ErrInvalidPayload)
	case p.Urgent && p.Kind != kindText && p.Kind != kindEscalate && (p.Kind != kindReceipt || p.Level != Acknowledged):
		// Only these are urgent (and say so in the signed header): a
		// text message, its escalation, an acknowledgement of it.
		return fmt.Errorf("%w: urgent kind %d", ErrInvalidPayload, p.Kind)
	case p.cumulative() && ((p.Level != Delivered && p.Level != Read) || len(p.Targets) > 0):
		// Acknowledgements stay explicit, per message.
		return fmt.Errorf("%w: cumulative receipt of level %d or with targets", ErrInvalidPayload, p.Level)
	}
	if err := p.checkEscalation(); err != nil {
		return err
	}
	if p.Patient != nil {
		if p.Kind != kindPatient {
			return fmt.Errorf("%w: patient on kind %d", ErrInvalidPayload, p.Kind)
		}
		if err := p.Patient.patient().Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidPayload, err)
		}
	}
	if p.Role != nil && (p.Kind != kindRole || p.Role.check() != nil) {
		return fmt.Errorf("%w: role link", ErrInvalidPayload)
	}
	for _, t := range slices.Concat(p.Targets, p.Tags, p.Chunks, p.Heads, p.Except) {
		if len(t) != 32 {
			return fmt.Errorf("%w: target", ErrInvalidPayload)
		}
	}
	return nil
}

func decodePayload(b []byte) (*payload, error) {
	var p payload
	if err := detcbor.Unmarshal(b, &p, maxPayload); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPayload, err)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return &p, nil
}

// marshalPayload is detcbor.Marshal(p), encoded by hand for the shape of
// almost every op a device creates — a message or reply: kind, text,
// target, urgent — and by the reflective encoder otherwise. The bytes are
// the same either way (TestMarshalPayloadMatchesDetcbor sets every field
// in turn); the reflective encoder cost a twentieth of creating an op.
func marshalPayload(p *payload) ([]byte, error) {
	if !p.onlyMessage() {
		return detcbor.Marshal(p)
	}
	fields := 1
	size := 2 + 9 + len(p.Text) + 9 + len(p.Target) + 2
	if p.Text != "" {
		fields++
	}
	if len(p.Target) > 0 {
		fields++
	}
	if p.Urgent {
		fields++
	}
	b := make([]byte, 0, size)
	b = detcbor.AppendHead(b, detcbor.MajorMap, uint64(fields))
	b = detcbor.AppendHead(append(b, 1), detcbor.MajorUint, uint64(p.Kind))
	if p.Text != "" {
		b = detcbor.AppendHead(append(b, 2), detcbor.MajorText, uint64(len(p.Text)))
		b = append(b, p.Text...)
	}
	if len(p.Target) > 0 {
		b = detcbor.AppendBytes(append(b, 3), p.Target)
	}
	if p.Urgent {
		b = append(b, 4, detcbor.True)
	}
	return b, nil
}

// onlyMessage reports whether p sets no field but Kind, Text, Target and
// Urgent.
func (p *payload) onlyMessage() bool {
	return len(p.Tags) == 0 && len(p.Member) == 0 && len(p.Members) == 0 && p.Level == 0 &&
		len(p.Targets) == 0 && p.Retention == 0 && len(p.Data) == 0 && len(p.Chunks) == 0 &&
		p.Size == 0 && !p.Past && len(p.Heads) == 0 && len(p.Except) == 0 && p.Patient == nil &&
		p.Role == nil && p.AckWithin == 0 && p.Step == 0 && len(p.To) == 0 && p.Label == ""
}
