package fhir

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	compb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/communication_go_proto"
	patpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	prapb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/practitioner_go_proto"
	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/patient"
)

// ContentType is the media type of an exported bundle.
const ContentType = "application/fhir+json"

// Identifier systems.
const (
	// SystemNHSNumber is the NHS number's system (NHS England).
	SystemNHSNumber = "https://fhir.nhs.uk/Id/nhs-number"
	// The UK Core systems of the professional regulators.
	SystemGMC  = "https://fhir.hl7.org.uk/Id/gmc-number"
	SystemNMC  = "https://fhir.hl7.org.uk/Id/nmc-number"
	SystemHCPC = "https://fhir.hl7.org.uk/Id/hcpc-number"
	SystemGPhC = "https://fhir.hl7.org.uk/Id/gphc-number"
	// medmesh's own: the trust's staff ID from the certificate, the
	// device's peer ID, and conversation and message IDs.
	SystemStaffID        = "urn:medmesh:staff-id"
	SystemPeerID         = "urn:medmesh:peer-id"
	SystemConversationID = "urn:medmesh:conversation-id"
	SystemMessageID      = "urn:medmesh:message-id"
)

// Source is what an export reads: the conversations layer
// (conversations.Service).
type Source interface {
	Conversation(id chat.ConversationID) (conversations.Summary, error)
	Messages(id chat.ConversationID) ([]conversations.Message, error)
	Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error)
}

// ReceivedSource is a Source that knows when recipients signed for
// messages (conversations.Service); with it, Communications carry
// received.
type ReceivedSource interface {
	ReceivedAt(id chat.ConversationID, msgs []crdt.OpID) (map[crdt.OpID]time.Time, error)
}

// Staff resolves a colleague's certificate details by peer ID
// (node.Node's LookupStaff).
type Staff interface {
	LookupStaff(key string) (*identity.Staff, bool)
}

// Recorder records an export in the device's audit trail: the audit
// event "exported", with the conversation and the IDs of the messages
// filed — never their content.
type Recorder interface {
	RecordExport(conv chat.ConversationID, msgs []crdt.OpID) error
}

// Options select what is exported.
type Options struct {
	// Messages, if set, are the only messages exported (in the
	// conversation's order); an unknown one is ErrNoMessage, a deleted
	// or withdrawn one ErrNotFiled.
	Messages []crdt.OpID
	// Now stamps the bundle (default time.Now).
	Now func() time.Time
	// Recorder, if set, is told of the export before Export returns it;
	// if it fails, nothing is returned.
	Recorder Recorder
	// Self, if set, is the exporting device: Export refuses
	// (conversations.ErrNoConversation) unless it is a current member —
	// a removed member's old replica is not exported. The CLI and the API
	// set it; an archive's export of what it filed (FromFiled) does not
	// go through Export.
	Self peer.ID
}

// Export builds the FHIR R4 bundle of conversation id as src holds it and
// returns its JSON. Every export — the CLI's and the API's, a member's or
// an archive's — comes through Conversation.Export, and so through its one
// audit call site.
func Export(src Source, staff Staff, id chat.ConversationID, o Options) ([]byte, error) {
	sum, err := src.Conversation(id)
	if err != nil {
		return nil, err
	}
	if o.Self != "" && !slices.Contains(sum.Members, o.Self) {
		return nil, fmt.Errorf("not a member: %w", conversations.ErrNoConversation)
	}
	msgs, err := src.Messages(id)
	if err != nil {
		return nil, err
	}
	c := Conversation{ID: id, Title: sum.Title, Patient: sum.Patient, Staff: staff,
		Photo: func(m crdt.OpID, full bool) ([]byte, error) { return src.Photo(id, m, full) }}
	ids := make([]crdt.OpID, 0, len(msgs))
	for _, m := range msgs {
		c.Messages = append(c.Messages, m.Message)
		ids = append(ids, m.ID)
	}
	if rs, ok := src.(ReceivedSource); ok {
		if c.Received, err = rs.ReceivedAt(id, ids); err != nil {
			return nil, err
		}
	}
	return c.Export(o)
}

// Export builds c's bundle (of the selected messages if o.Messages is
// set) and returns its JSON, telling o.Recorder first.
func (c *Conversation) Export(o Options) ([]byte, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	b, filed, err := c.bundle(o.Messages, now())
	if err != nil {
		return nil, err
	}
	out, err := Marshal(b)
	if err != nil {
		return nil, err
	}
	// AUDIT: the one call site of the audit trail's "exported" event
	// (issue 17 item 1). Options.Recorder is wired by the callers
	// (web/fhir.go, cmd/medmesh/export.go) once the audit trail lands.
	if o.Recorder != nil {
		if err := o.Recorder.RecordExport(c.ID, filed); err != nil {
			return nil, fmt.Errorf("record export in audit trail: %w", err)
		}
	}
	return out, nil
}

// Conversation is what gets filed: a conversation as one device sees it.
type Conversation struct {
	ID       chat.ConversationID
	Title    string
	Patient  *patient.Patient // nil: not about a patient
	Messages []chat.Message   // in the conversation's order
	// Staff resolves senders and recipients (nil: peer IDs only).
	Staff Staff
	// Photo returns a photo message's full image (full) or thumbnail.
	Photo func(msg crdt.OpID, full bool) ([]byte, error)
	// Received is when each message was received (see doc.go); a message
	// absent from it is filed without received.
	Received map[crdt.OpID]time.Time
	// Filed, set for what an archive filed (FromFiled): each message's
	// filed version (meta.versionId), whether it was entered in error,
	// and whether its photo is the full image.
	Filed map[crdt.OpID]Filing
}

// Filing is how an archive filed one message.
type Filing struct {
	Version        int
	EnteredInError bool
	PhotoFull      bool
	// PhotoUnavailable: a photo message filed without its image.
	PhotoUnavailable bool
}

// FromFiled is the conversation an archive filed: the latest version of
// each message (records as archive.Filed lists them), with the patient
// of the latest filing. Photos come from the records.
func FromFiled(id chat.ConversationID, recs []archive.Record, staff Staff) *Conversation {
	latest := map[crdt.OpID]archive.Record{}
	var order []crdt.OpID
	var newest int64
	c := &Conversation{ID: id, Staff: staff, Filed: map[crdt.OpID]Filing{}, Received: map[crdt.OpID]time.Time{}}
	for _, r := range recs {
		if _, seen := latest[r.Message]; !seen {
			order = append(order, r.Message)
		}
		at := time.UnixMicro(r.FiledUs).UTC() // the record received it when it first filed it
		if cur, ok := c.Received[r.Message]; !ok || at.Before(cur) {
			c.Received[r.Message] = at
		}
		latest[r.Message] = r
		if r.FiledUs >= newest {
			newest, c.Patient = r.FiledUs, r.Patient
		}
	}
	photos := map[crdt.OpID][]byte{}
	for _, mid := range order {
		r := latest[mid]
		sender, _ := peer.Decode(r.Sender)
		m := chat.Message{ID: r.Message, Sender: sender, Text: r.Text, Time: time.UnixMicro(r.SentUs).UTC(), Urgent: r.Urgent,
			ReplyTo: r.ReplyTo, Edited: r.Edited, Receipts: map[peer.ID]int{}}
		for _, s := range r.Recipients {
			if p, err := peer.Decode(s); err == nil {
				m.Receipts[p] = 0
			}
		}
		if r.Photo != nil {
			m.Photo = &chat.Photo{Size: int64(len(r.Photo))}
			photos[r.Message] = r.Photo
		} else if r.PhotoUnavailable {
			m.Photo = &chat.Photo{}
		}
		c.Messages = append(c.Messages, m)
		c.Filed[r.Message] = Filing{Version: r.Version, EnteredInError: r.Status == archive.StatusEnteredInError, PhotoFull: !r.PhotoThumb,
			PhotoUnavailable: r.PhotoUnavailable}
	}
	c.Photo = func(msg crdt.OpID, _ bool) ([]byte, error) {
		if b, ok := photos[msg]; ok {
			return b, nil
		}
		return nil, chat.ErrNoSuchMessage
	}
	return c
}

// Bundle builds the bundle of c (of the selected messages if sel is not
// empty), stamped now.
func (c *Conversation) Bundle(sel []crdt.OpID, now time.Time) (*bcrpb.Bundle, error) {
	b, _, err := c.bundle(sel, now)
	return b, err
}

// Marshal renders a bundle as FHIR R4 JSON.
func Marshal(b *bcrpb.Bundle) ([]byte, error) {
	m, err := jsonformat.NewPrettyMarshaller(fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhir marshaller: %w", err)
	}
	out, err := m.Marshal(&bcrpb.ContainedResource{OneofResource: &bcrpb.ContainedResource_Bundle{Bundle: b}})
	if err != nil {
		// The marshaller's error may quote a value: say only that it failed.
		return nil, errors.New("render FHIR bundle: invalid resource")
	}
	return out, nil
}

// bundle builds the bundle and returns the IDs of the messages it files.
func (c *Conversation) bundle(sel []crdt.OpID, now time.Time) (*bcrpb.Bundle, []crdt.OpID, error) {
	msgs, err := c.selected(sel)
	if err != nil {
		return nil, nil, err
	}
	ns := uuid.NewSHA1(uuid.NameSpaceURL, []byte(SystemConversationID+":"+c.ID.String()))
	urn := func(kind, key string) string { return "urn:uuid:" + uuid.NewSHA1(ns, []byte(kind+"/"+key)).String() }
	b := &bcrpb.Bundle{
		Id:         &dpb.Id{Value: uuid.NewSHA1(ns, []byte("bundle")).String()},
		Identifier: ident(SystemConversationID, c.ID.String()),
		Type:       &bcrpb.Bundle_TypeCode{Value: cpb.BundleTypeCode_COLLECTION},
		Timestamp:  &dpb.Instant{ValueUs: now.UnixMicro(), Timezone: "UTC", Precision: dpb.Instant_MICROSECOND},
	}
	add := func(fullURL string, r *bcrpb.ContainedResource) {
		b.Entry = append(b.Entry, &bcrpb.Bundle_Entry{FullUrl: &dpb.Uri{Value: fullURL}, Resource: r})
	}
	var subject *dpb.Reference
	if p := c.Patient; p != nil {
		u := urn("Patient", string(p.NHSNumber))
		subject = ref(u)
		add(u, &bcrpb.ContainedResource{OneofResource: &bcrpb.ContainedResource_Patient{Patient: patientResource(u, p)}})
	}
	// Practitioners: everyone who sent or received a filed message, by peer ID.
	var people []peer.ID
	for _, m := range msgs {
		people = append(people, m.Sender)
		for p := range m.Receipts {
			people = append(people, p)
		}
	}
	slices.Sort(people)
	people = slices.Compact(people)
	for _, p := range people {
		u := urn("Practitioner", p.String())
		add(u, &bcrpb.ContainedResource{OneofResource: &bcrpb.ContainedResource_Practitioner{Practitioner: c.practitioner(u, p)}})
	}
	inBundle := map[crdt.OpID]bool{}
	for _, m := range msgs {
		inBundle[m.ID] = true
	}
	filed := make([]crdt.OpID, 0, len(msgs))
	for _, m := range msgs {
		u := urn("Communication", m.ID.String())
		com, err := c.communication(u, m, subject, inBundle, urn)
		if err != nil {
			return nil, nil, err
		}
		add(u, &bcrpb.ContainedResource{OneofResource: &bcrpb.ContainedResource_Communication{Communication: com}})
		filed = append(filed, m.ID)
	}
	return b, filed, nil
}

// filable reports whether a message is filed: it stands and is not deleted.
func filable(m *chat.Message) bool { return !m.Deleted && m.Withdrawn == "" }

// selected returns the messages to file, in the conversation's order.
func (c *Conversation) selected(sel []crdt.OpID) ([]*chat.Message, error) {
	var out []*chat.Message
	if len(sel) == 0 {
		for i := range c.Messages {
			if filable(&c.Messages[i]) {
				out = append(out, &c.Messages[i])
			}
		}
		return out, nil
	}
	want := map[crdt.OpID]bool{}
	for _, id := range sel {
		want[id] = true
	}
	for i := range c.Messages {
		m := &c.Messages[i]
		if !want[m.ID] {
			continue
		}
		delete(want, m.ID)
		if !filable(m) {
			return nil, fmt.Errorf("message %s: %w", m.ID, ErrNotFiled)
		}
		out = append(out, m)
	}
	for id := range want {
		return nil, fmt.Errorf("message %s: %w", id, ErrNoMessage)
	}
	return out, nil
}

func (c *Conversation) communication(u string, m *chat.Message, subject *dpb.Reference, inBundle map[crdt.OpID]bool,
	urn func(kind, key string) string) (*compb.Communication, error) {
	com := &compb.Communication{
		Id:         &dpb.Id{Value: strings.TrimPrefix(u, "urn:uuid:")},
		Identifier: []*dpb.Identifier{ident(SystemMessageID, m.ID.String())},
		Status:     &compb.Communication_StatusCode{Value: cpb.EventStatusCode_COMPLETED},
		Priority:   &compb.Communication_PriorityCode{Value: cpb.RequestPriorityCode_ROUTINE},
		Subject:    subject,
		Sent:       dateTime(m.Time),
		Sender:     ref(urn("Practitioner", m.Sender.String())),
	}
	if at, ok := c.Received[m.ID]; ok {
		com.Received = dateTime(at)
	}
	if m.Urgent {
		com.Priority.Value = cpb.RequestPriorityCode_URGENT
	}
	recipients := make([]peer.ID, 0, len(m.Receipts))
	for p := range m.Receipts {
		recipients = append(recipients, p)
	}
	slices.Sort(recipients)
	for _, p := range recipients {
		com.Recipient = append(com.Recipient, ref(urn("Practitioner", p.String())))
	}
	if !m.ReplyTo.IsZero() {
		if inBundle[m.ReplyTo] {
			com.InResponseTo = []*dpb.Reference{ref(urn("Communication", m.ReplyTo.String()))}
		} else { // not filed here: a logical reference by message ID
			com.InResponseTo = []*dpb.Reference{{Type: &dpb.Uri{Value: "Communication"}, Identifier: ident(SystemMessageID, m.ReplyTo.String())}}
		}
	}
	if m.Photo != nil {
		if att, ok := c.attachment(m); ok {
			com.Payload = append(com.Payload, &compb.Communication_Payload{Content: &compb.Communication_Payload_ContentX{
				Choice: &compb.Communication_Payload_ContentX_Attachment{Attachment: att}}})
		} else { // one unreadable photo never stops the export
			com.Payload = append(com.Payload, &compb.Communication_Payload{Content: &compb.Communication_Payload_ContentX{
				Choice: &compb.Communication_Payload_ContentX_StringValue{StringValue: &dpb.String{Value: PhotoUnavailable}}}})
			com.Note = append(com.Note, note(PhotoUnavailable))
		}
	}
	if m.Text != "" {
		com.Payload = append(com.Payload, &compb.Communication_Payload{Content: &compb.Communication_Payload_ContentX{
			Choice: &compb.Communication_Payload_ContentX_StringValue{StringValue: &dpb.String{Value: fhirText(m.Text)}}}})
	}
	if f, ok := c.Filed[m.ID]; ok {
		com.Meta = &dpb.Meta{VersionId: &dpb.Id{Value: strconv.Itoa(f.Version)}}
		if f.EnteredInError {
			com.Status.Value = cpb.EventStatusCode_ENTERED_IN_ERROR
			com.Note = append(com.Note, note("Deleted or withdrawn in the conversation after it was filed."))
		}
	}
	if m.Edited {
		com.Note = append(com.Note, note("Edited after it was sent; this is the current text."))
	}
	if m.Skewed {
		com.Note = append(com.Note, note("The sender's clock was ahead when this message arrived; sent is the sender's own time."))
	}
	return com, nil
}

// PhotoUnavailable is the payload (and note) of a photo message whose
// image could not be read: it is exported without it.
const PhotoUnavailable = "Photo unavailable: its image could not be read on this device."

// attachment is a photo message's image: the full image when all of it
// has arrived, else its thumbnail (titled so); false if it cannot be read
// (or was filed without it).
func (c *Conversation) attachment(m *chat.Message) (*dpb.Attachment, bool) {
	if c.Photo == nil {
		return nil, false
	}
	full := m.Photo.Ready()
	if f, ok := c.Filed[m.ID]; ok {
		if f.PhotoUnavailable {
			return nil, false
		}
		full = f.PhotoFull
	}
	img, err := c.Photo(m.ID, full)
	if err != nil || len(img) == 0 {
		return nil, false
	}
	sum := sha1.Sum(img) // Attachment.hash is SHA-1 by the FHIR R4 specification
	att := &dpb.Attachment{
		ContentType: &dpb.Attachment_ContentTypeCode{Value: "image/jpeg"},
		Data:        &dpb.Base64Binary{Value: img},
		Size:        &dpb.UnsignedInt{Value: uint32(len(img))},
		Hash:        &dpb.Base64Binary{Value: sum[:]},
		Creation:    dateTime(m.Time),
		Title:       &dpb.String{Value: "photo"},
	}
	if !full {
		att.Title.Value = "photo thumbnail (the full image had not arrived on this device)"
	}
	return att, true
}

func (c *Conversation) practitioner(u string, p peer.ID) *prapb.Practitioner {
	pr := &prapb.Practitioner{Id: &dpb.Id{Value: strings.TrimPrefix(u, "urn:uuid:")}}
	var s *identity.Staff
	if c.Staff != nil {
		s, _ = c.Staff.LookupStaff(p.String())
	}
	if s != nil {
		id := ident(SystemStaffID, s.StaffID)
		id.Type = &dpb.CodeableConcept{Text: &dpb.String{Value: "Staff ID"}}
		if s.Trust != "" {
			id.Assigner = &dpb.Reference{Display: &dpb.String{Value: fhirText(s.Trust)}}
		}
		pr.Identifier = append(pr.Identifier, id)
		if s.Registration != "" {
			pr.Identifier = append(pr.Identifier, registration(s.Registration))
		}
		if s.Name != "" {
			pr.Name = []*dpb.HumanName{{Text: &dpb.String{Value: fhirText(s.Name)}}}
		}
	}
	pr.Identifier = append(pr.Identifier, ident(SystemPeerID, p.String()))
	return pr
}

// registration is a professional registration as the certificate holds it
// ("GMC 1234567"): with its regulator's system when the prefix names one.
func registration(r string) *dpb.Identifier {
	systems := map[string]string{"GMC": SystemGMC, "NMC": SystemNMC, "HCPC": SystemHCPC, "GPHC": SystemGPhC}
	id := &dpb.Identifier{Type: &dpb.CodeableConcept{Text: &dpb.String{Value: "Professional registration"}}, Value: &dpb.String{Value: fhirText(r)}}
	if body, num, ok := strings.Cut(strings.TrimSpace(r), " "); ok {
		if sys, known := systems[strings.ToUpper(body)]; known && strings.TrimSpace(num) != "" {
			id.System = &dpb.Uri{Value: sys}
			id.Value.Value = strings.TrimSpace(num)
		}
	}
	return id
}

func patientResource(u string, p *patient.Patient) *patpb.Patient {
	pt := &patpb.Patient{
		Id:         &dpb.Id{Value: strings.TrimPrefix(u, "urn:uuid:")},
		Identifier: []*dpb.Identifier{ident(SystemNHSNumber, string(p.NHSNumber))},
	}
	if p.Name != "" {
		pt.Name = []*dpb.HumanName{{Text: &dpb.String{Value: fhirText(p.Name)}}}
	}
	if d, err := time.Parse(time.DateOnly, p.BirthDate); err == nil {
		pt.BirthDate = &dpb.Date{ValueUs: d.UnixMicro(), Timezone: "UTC", Precision: dpb.Date_DAY}
	}
	return pt
}

func ident(system, value string) *dpb.Identifier {
	return &dpb.Identifier{System: &dpb.Uri{Value: system}, Value: &dpb.String{Value: fhirText(value)}}
}

func ref(u string) *dpb.Reference {
	return &dpb.Reference{Reference: &dpb.Reference_Uri{Uri: &dpb.String{Value: u}}}
}

func note(text string) *dpb.Annotation {
	return &dpb.Annotation{Text: &dpb.Markdown{Value: fhirText(text)}}
}

func dateTime(t time.Time) *dpb.DateTime {
	return &dpb.DateTime{ValueUs: t.UnixMicro(), Timezone: "UTC", Precision: dpb.DateTime_MICROSECOND}
}

// fhirText makes s a valid FHIR string ([ \r\n\t\S]+): whitespace other
// than space, tab, CR and LF (form feed, vertical tab, line and paragraph
// separators, no-break spaces) becomes a space and other control
// characters U+FFFD — one member's odd character must not make a whole
// conversation's bundle invalid.
func fhirText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case unicode.IsSpace(r) || r == '\ufeff': // JavaScript's \s has U+FEFF too
			return ' '
		case unicode.Is(unicode.Cc, r):
			return unicode.ReplacementChar
		}
		return r
	}, s)
}
