package fhir

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/fhirschema"
	"github.com/medmesh/medmesh/media"
	"github.com/medmesh/medmesh/patient"
)

var t0 = time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)

type staffDir map[peer.ID]*identity.Staff

func (d staffDir) LookupStaff(key string) (*identity.Staff, bool) {
	id, err := peer.Decode(key)
	if err != nil {
		return nil, false
	}
	s, ok := d[id]
	return s, ok
}

func newPeer(t testing.TB) peer.ID {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PeerID()
}

func opID(b byte) crdt.OpID {
	var id crdt.OpID
	id[0], id[31] = b, b
	return id
}

// fixture is a conversation between Dr Asha (GMC) and Nurse Bola (NMC)
// about Jane Doe, with a carer (Cai) whose certificate is unknown here.
type fixture struct {
	asha, bola, cai peer.ID
	thumb           []byte
	conv            Conversation
	// messages by name
	hello, urgent, photo, edited, deleted, withdrawn, orphan crdt.OpID
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{asha: newPeer(t), bola: newPeer(t), cai: newPeer(t)}
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(1, 1, color.White)
	var raw bytes.Buffer
	png.Encode(&raw, img)
	_, thumb, err := media.Prepare(raw.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	f.thumb = thumb
	jane, err := patient.New("943 476 5919", "Jane Doe", "1950-03-14", t0)
	if err != nil {
		t.Fatal(err)
	}
	f.hello, f.urgent, f.photo, f.edited, f.deleted, f.withdrawn, f.orphan = opID(1), opID(2), opID(3), opID(4), opID(5), opID(6), opID(7)
	to := func(ps ...peer.ID) map[peer.ID]int {
		m := map[peer.ID]int{}
		for _, p := range ps {
			m[p] = chat.Delivered
		}
		return m
	}
	f.conv = Conversation{
		ID: chat.ConversationID{9, 9, 9}, Title: "Bay 3", Patient: &jane,
		Staff: staffDir{
			f.asha: {PeerID: f.asha, Name: "Dr Asha Patel", StaffID: "A100", Registration: "GMC 7654321", Trust: "General Hospital"},
			f.bola: {PeerID: f.bola, Name: "Bola Ade", StaffID: "B200", Registration: "NMC 12A3456B", Trust: "General Hospital"},
		},
		Messages: []chat.Message{
			{ID: f.hello, Sender: f.asha, Text: "Jane's potassium is 6.1", Time: t0, Receipts: to(f.bola, f.cai)},
			{ID: f.urgent, Sender: f.bola, Text: "Repeat ECG now?", Time: t0.Add(time.Minute), Urgent: true, ReplyTo: f.hello, Receipts: to(f.asha, f.cai)},
			{ID: f.photo, Sender: f.asha, Text: "rhythm strip", Time: t0.Add(2 * time.Minute), Photo: &chat.Photo{Thumb: thumb, Size: 9999}, Receipts: to(f.bola, f.cai)},
			{ID: f.edited, Sender: f.cai, Text: "Calcium gluconate given 09:20", Time: t0.Add(3 * time.Minute), Edited: true, Receipts: to(f.asha, f.bola)},
			{ID: f.deleted, Sender: f.bola, Time: t0.Add(4 * time.Minute), Deleted: true, Receipts: to(f.asha, f.cai)},
			{ID: f.withdrawn, Sender: f.cai, Time: t0.Add(5 * time.Minute), Withdrawn: "sender removed", Receipts: to(f.asha, f.bola)},
			{ID: f.orphan, Sender: f.asha, Text: "ignore that", Time: t0.Add(6 * time.Minute), ReplyTo: f.deleted, Receipts: to(f.bola, f.cai)},
		},
		// The hello reached a recipient 30 s after it was sent; nobody
		// has signed for the others yet.
		Received: map[crdt.OpID]time.Time{f.hello: t0.Add(30 * time.Second)},
		Photo: func(m crdt.OpID, full bool) ([]byte, error) {
			if m != f.photo || full {
				return nil, chat.ErrNoSuchMessage
			}
			return thumb, nil
		},
	}
	return f
}

// export renders the fixture's bundle, checks it against the FHIR R4
// schema and decodes it.
func (f *fixture) export(t *testing.T, sel ...crdt.OpID) map[string]any {
	t.Helper()
	b, err := f.conv.Bundle(sel, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := fhirschema.Validate(out); err != nil {
		t.Fatalf("bundle fails the FHIR R4 schema: %v\n%s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// resources indexes a bundle's entries: by fullUrl, and by type in order.
func resources(t *testing.T, b map[string]any) (byURL map[string]map[string]any, byType map[string][]map[string]any) {
	t.Helper()
	byURL, byType = map[string]map[string]any{}, map[string][]map[string]any{}
	for _, e := range b["entry"].([]any) {
		e := e.(map[string]any)
		r := e["resource"].(map[string]any)
		u := e["fullUrl"].(string)
		if !strings.HasPrefix(u, "urn:uuid:") || strings.TrimPrefix(u, "urn:uuid:") != r["id"] {
			t.Fatalf("entry fullUrl %s, resource id %v", u, r["id"])
		}
		byURL[u] = r
		byType[r["resourceType"].(string)] = append(byType[r["resourceType"].(string)], r)
	}
	return byURL, byType
}

func refOf(t *testing.T, v any) string {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("not a reference: %v", v)
	}
	s, _ := m["reference"].(string)
	return s
}

// identifiers maps an identifier list to system → value ("" for none).
func identifiers(v any) map[string]string {
	out := map[string]string{}
	list, _ := v.([]any)
	for _, x := range list {
		m := x.(map[string]any)
		sys, _ := m["system"].(string)
		val, _ := m["value"].(string)
		out[sys] = val
	}
	return out
}

func TestBundleContent(t *testing.T) {
	f := newFixture(t)
	b := f.export(t)
	if b["resourceType"] != "Bundle" || b["type"] != "collection" || b["timestamp"] == nil {
		t.Fatalf("bundle header: %v %v %v", b["resourceType"], b["type"], b["timestamp"])
	}
	if got := b["identifier"].(map[string]any); got["system"] != SystemConversationID || got["value"] != f.conv.ID.String() {
		t.Fatalf("bundle identifier %v", got)
	}
	byURL, byType := resources(t, b)

	// The patient.
	if len(byType["Patient"]) != 1 {
		t.Fatalf("%d patients", len(byType["Patient"]))
	}
	pt := byType["Patient"][0]
	if ids := identifiers(pt["identifier"]); ids[SystemNHSNumber] != "9434765919" {
		t.Fatalf("patient identifiers %v", ids)
	}
	if pt["birthDate"] != "1950-03-14" || pt["name"].([]any)[0].(map[string]any)["text"] != "Jane Doe" {
		t.Fatalf("patient %v", pt)
	}

	// Practitioners: the three people, with what their certificates hold.
	prs := map[string]map[string]string{}
	for _, p := range byType["Practitioner"] {
		ids := identifiers(p["identifier"])
		prs[ids[SystemPeerID]] = ids
	}
	if len(prs) != 3 {
		t.Fatalf("%d practitioners: %v", len(prs), prs)
	}
	if a := prs[f.asha.String()]; a[SystemStaffID] != "A100" || a[SystemGMC] != "7654321" {
		t.Fatalf("asha's identifiers %v", a)
	}
	if b := prs[f.bola.String()]; b[SystemStaffID] != "B200" || b[SystemNMC] != "12A3456B" {
		t.Fatalf("bola's identifiers %v", b)
	}
	if c := prs[f.cai.String()]; len(c) != 1 {
		t.Fatalf("cai (certificate unknown here) filed with %v", c)
	}
	peerOf := func(ref string) string {
		r := byURL[ref]
		if r == nil || r["resourceType"] != "Practitioner" {
			t.Fatalf("reference %q is not a Practitioner in the bundle", ref)
		}
		return identifiers(r["identifier"])[SystemPeerID]
	}

	// Communications: deleted and withdrawn ones left out, order kept.
	coms := byType["Communication"]
	var ids []string
	for _, c := range coms {
		ids = append(ids, identifiers(c["identifier"])[SystemMessageID])
	}
	if want := []string{f.hello.String(), f.urgent.String(), f.photo.String(), f.edited.String(), f.orphan.String()}; !slices.Equal(ids, want) {
		t.Fatalf("filed %v, want %v", ids, want)
	}
	patientURL := ""
	for u, r := range byURL {
		if r["resourceType"] == "Patient" {
			patientURL = u
		}
	}
	for i, c := range coms {
		m := f.conv.Messages[[]int{0, 1, 2, 3, 6}[i]]
		if c["status"] != "completed" || refOf(t, c["subject"]) != patientURL {
			t.Fatalf("communication %d: status %v subject %v", i, c["status"], c["subject"])
		}
		if sent, err := time.Parse(time.RFC3339Nano, c["sent"].(string)); err != nil || !sent.Equal(m.Time) {
			t.Fatalf("communication %d sent %v (%v), want %v", i, c["sent"], err, m.Time)
		}
		if peerOf(refOf(t, c["sender"])) != m.Sender.String() {
			t.Fatalf("communication %d: wrong sender", i)
		}
		var rcpt []string
		for _, r := range c["recipient"].([]any) {
			rcpt = append(rcpt, peerOf(refOf(t, r)))
		}
		var want []string
		for p := range m.Receipts {
			want = append(want, p.String())
		}
		slices.Sort(rcpt)
		slices.Sort(want)
		if !slices.Equal(rcpt, want) {
			t.Fatalf("communication %d recipients %v, want %v", i, rcpt, want)
		}
		wantPrio := "routine"
		if m.Urgent {
			wantPrio = "urgent"
		}
		if c["priority"] != wantPrio {
			t.Fatalf("communication %d priority %v", i, c["priority"])
		}
		got, has := c["received"]
		if want, known := f.conv.Received[m.ID]; known {
			if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got)); err != nil || !at.Equal(want) {
				t.Fatalf("communication %d received %v, want %v", i, got, want)
			}
		} else if has {
			t.Fatalf("communication %d has received %v though no recipient signed for it", i, got)
		}
	}
	payload := func(c map[string]any) []map[string]any {
		var out []map[string]any
		for _, p := range c["payload"].([]any) {
			out = append(out, p.(map[string]any))
		}
		return out
	}
	if p := payload(coms[0]); len(p) != 1 || p[0]["contentString"] != "Jane's potassium is 6.1" {
		t.Fatalf("text payload %v", p)
	}
	// The urgent reply points at the message it answers, in the bundle.
	if irt := coms[1]["inResponseTo"].([]any); len(irt) != 1 || refOf(t, irt[0]) != "urn:uuid:"+coms[0]["id"].(string) {
		t.Fatalf("inResponseTo %v", coms[1]["inResponseTo"])
	}
	// The photo: the JPEG, base64, with its size and SHA-1, and its caption.
	p := payload(coms[2])
	if len(p) != 2 || p[1]["contentString"] != "rhythm strip" {
		t.Fatalf("photo payload %v", p)
	}
	att := p[0]["contentAttachment"].(map[string]any)
	data, err := base64.StdEncoding.DecodeString(att["data"].(string))
	sum := sha1.Sum(f.thumb)
	if err != nil || !bytes.Equal(data, f.thumb) || att["contentType"] != "image/jpeg" ||
		att["size"] != float64(len(f.thumb)) || att["hash"] != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("attachment %v (data %d bytes, err %v)", att["contentType"], len(data), err)
	}
	if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
		t.Fatalf("attached image does not decode: %v", err)
	}
	if !strings.Contains(att["title"].(string), "thumbnail") {
		t.Fatalf("a photo not yet whole is filed as %q", att["title"])
	}
	// Edited: the current text, and a note.
	if p := payload(coms[3]); p[0]["contentString"] != "Calcium gluconate given 09:20" || coms[3]["note"] == nil {
		t.Fatalf("edited message %v, note %v", p, coms[3]["note"])
	}
	// A reply to a deleted message keeps a logical reference only.
	irt := coms[4]["inResponseTo"].([]any)[0].(map[string]any)
	if irt["reference"] != nil || irt["identifier"].(map[string]any)["value"] != f.deleted.String() {
		t.Fatalf("reply to a deleted message: %v", irt)
	}
}

func TestBundleIsDeterministic(t *testing.T) {
	f := newFixture(t)
	b1, _ := json.Marshal(f.export(t))
	b2, _ := json.Marshal(f.export(t))
	if !bytes.Equal(b1, b2) {
		t.Fatal("two exports of the same conversation differ")
	}
}

func TestSelectedMessages(t *testing.T) {
	f := newFixture(t)
	_, byType := resources(t, f.export(t, f.urgent))
	coms := byType["Communication"]
	if len(coms) != 1 || identifiers(coms[0]["identifier"])[SystemMessageID] != f.urgent.String() {
		t.Fatalf("selected one message, filed %v", coms)
	}
	// Its reply target was not selected: a logical reference.
	irt := coms[0]["inResponseTo"].([]any)[0].(map[string]any)
	if irt["identifier"].(map[string]any)["value"] != f.hello.String() {
		t.Fatalf("inResponseTo %v", irt)
	}
	// Only the two people of that message.
	if len(byType["Practitioner"]) != 3 { // bola sent it to asha and cai
		t.Fatalf("%d practitioners", len(byType["Practitioner"]))
	}
	for _, c := range []struct {
		sel  crdt.OpID
		want error
	}{{opID(42), ErrNoMessage}, {f.deleted, ErrNotFiled}, {f.withdrawn, ErrNotFiled}} {
		if _, err := f.conv.Bundle([]crdt.OpID{f.hello, c.sel}, t0); !errors.Is(err, c.want) {
			t.Fatalf("selecting %s: %v, want %v", c.sel, err, c.want)
		}
	}
}

func TestNoPatientNoSubject(t *testing.T) {
	f := newFixture(t)
	f.conv.Patient = nil
	_, byType := resources(t, f.export(t))
	if len(byType["Patient"]) != 0 {
		t.Fatal("a patient in a bundle about nobody")
	}
	for _, c := range byType["Communication"] {
		if c["subject"] != nil {
			t.Fatalf("subject %v", c["subject"])
		}
	}
}

func TestRegistrationSystems(t *testing.T) {
	for _, c := range []struct{ in, sys, val string }{
		{"GMC 1234567", SystemGMC, "1234567"},
		{"nmc 12A3456B", SystemNMC, "12A3456B"},
		{"HCPC PA12345", SystemHCPC, "PA12345"},
		{"GPhC 2012345", SystemGPhC, "2012345"},
		{"1234567", "", "1234567"},
		{"ABC 99", "", "ABC 99"},
		{"GMC ", "", "GMC "},
	} {
		id := registration(c.in)
		if id.GetSystem().GetValue() != c.sys || id.GetValue().GetValue() != c.val {
			t.Errorf("%q: system %q value %q", c.in, id.GetSystem().GetValue(), id.GetValue().GetValue())
		}
	}
}

// TestSchemaRejectsBrokenBundles: the schema check is real — a bundle
// broken in ways a record system would refuse fails it.
func TestSchemaRejectsBrokenBundles(t *testing.T) {
	f := newFixture(t)
	b, err := f.conv.Bundle(nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	good, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	firstCom := func(m map[string]any) map[string]any {
		for _, e := range m["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			if r["resourceType"] == "Communication" {
				return r
			}
		}
		t.Fatal("no communication")
		return nil
	}
	for name, breakIt := range map[string]func(m map[string]any){
		// The R4 schema checks a code's form, not its value set (the
		// proto model's enums keep codes in their sets).
		"status not a code":     func(m map[string]any) { firstCom(m)["status"] = "completed " },
		"priority not a string": func(m map[string]any) { firstCom(m)["priority"] = 5 },
		"no resource type":      func(m map[string]any) { delete(firstCom(m), "resourceType") },
		"unknown resource type": func(m map[string]any) { firstCom(m)["resourceType"] = "Chat" },
		"bundle type":           func(m map[string]any) { m["type"] = "folder" },
		"sent not a date":       func(m map[string]any) { firstCom(m)["sent"] = "yesterday" },
		"empty text":            func(m map[string]any) { firstCom(m)["payload"] = []any{map[string]any{"contentString": ""}} },
		"unknown element":       func(m map[string]any) { firstCom(m)["mood"] = "calm" },
		"entry not a list":      func(m map[string]any) { m["entry"] = map[string]any{} },
	} {
		t.Run(name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			breakIt(m)
			bad, _ := json.Marshal(m)
			if err := fhirschema.Validate(bad); err == nil {
				t.Fatal("a broken bundle passed the schema")
			}
		})
	}
	if err := fhirschema.Validate(good); err != nil {
		t.Fatalf("the unbroken bundle fails: %v", err)
	}
}

// source is a Source over a fixture (conversations.Service's methods).
type source struct {
	f *fixture
}

func (s source) Conversation(id chat.ConversationID) (conversations.Summary, error) {
	if id != s.f.conv.ID {
		return conversations.Summary{}, conversations.ErrNoConversation
	}
	return conversations.Summary{ID: id, Title: s.f.conv.Title, Patient: s.f.conv.Patient}, nil
}

func (s source) Messages(id chat.ConversationID) ([]conversations.Message, error) {
	if id != s.f.conv.ID {
		return nil, conversations.ErrNoConversation
	}
	var out []conversations.Message
	for _, m := range s.f.conv.Messages {
		out = append(out, conversations.Message{Message: m})
	}
	return out, nil
}

func (s source) Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error) {
	return s.f.conv.Photo(msg, full)
}

type recorder struct {
	conv chat.ConversationID
	msgs []crdt.OpID
	err  error
}

func (r *recorder) RecordExport(conv chat.ConversationID, msgs []crdt.OpID) error {
	r.conv, r.msgs = conv, msgs
	return r.err
}

func TestExportRecordsAndRefusesUnknown(t *testing.T) {
	f := newFixture(t)
	src := source{f}
	rec := &recorder{}
	out, err := Export(src, f.conv.Staff, f.conv.ID, Options{Recorder: rec, Messages: []crdt.OpID{f.photo, f.hello}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fhirschema.Validate(out); err != nil {
		t.Fatal(err)
	}
	if rec.conv != f.conv.ID || !slices.Equal(rec.msgs, []crdt.OpID{f.hello, f.photo}) {
		t.Fatalf("recorded %v %v", rec.conv, rec.msgs)
	}
	rec.err = errors.New("audit log full")
	if out, err := Export(src, f.conv.Staff, f.conv.ID, Options{Recorder: rec}); err == nil || out != nil {
		t.Fatal("an export the audit trail could not record was returned")
	}
	if _, err := Export(src, f.conv.Staff, chat.ConversationID{1}, Options{}); !errors.Is(err, conversations.ErrNoConversation) {
		t.Fatalf("unknown conversation: %v", err)
	}
	// Errors never carry patient data or message text.
	_, err = Export(src, f.conv.Staff, f.conv.ID, Options{Messages: []crdt.OpID{f.deleted}})
	for _, secret := range []string{"9434765919", "943 476 5919", "Jane", "potassium"} {
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Fatalf("error %v", err)
		}
	}
}
