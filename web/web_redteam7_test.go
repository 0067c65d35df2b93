package web

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/internal/fhirschema"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestRedteam7RemovedMemberStillExportsFHIR — attack: a colleague is
// removed from a conversation about a patient (e.g. moved off the ward,
// or removed because her device is suspected lost). Her device has
// learned of the removal — it no longer lists itself as a member — yet
// its local API still answers GET /api/v1/conversations/{id}/fhir with
// 200 and the full FHIR bundle: the patient's NHS number, name and birth
// date and every message it held, ready to be carried off as a clinical
// document. web/fhir.go says a conversation this device is not a member
// of is 404, and the export guarantee is "members only; a removed member
// exports nothing after its removal"; fhir.Export never checks that the
// exporting device is still a member (conversations.Conversation returns
// a removed device's old replica like any other), so the CLI export on a
// removed device's directory leaks the same way.
// Impact: the member/removal rule for exports does not hold at all.
func TestRedteam7RemovedMemberStillExportsFHIR(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	out := a.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Bay 3","members":["bola"],"patient":`+janeJSON+`}`)
	id := mustConv(t, out["id"].(string))
	hello := post(t, a, id, `{"text":"K+ 6.1 in bay 3"}`)
	testnet.Eventually(t, within, "bola lists the conversation", func() bool { return b.listed(t, id) != nil })
	waitMessage(t, b, id, hello, "the message", func(m apiMessage) bool { return m["text"] == "K+ 6.1 in bay 3" })

	if err := a.C.Remove(id, b.ID); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "bola's device knows it was removed", func() bool {
		sum, err := b.C.Conversation(id)
		return err == nil && !slices.Contains(sum.Members, b.ID) && slices.Contains(sum.Members, a.ID)
	})

	code, _, raw := b.do(t, "GET", convPath(id)+"/fhir", nil)
	if code != http.StatusNotFound || strings.Contains(string(raw), "9434765919") || strings.Contains(string(raw), "K+ 6.1") {
		t.Fatalf("a removed member's API exports the conversation: %d, NHS number present %v, message present %v",
			code, strings.Contains(string(raw), "9434765919"), strings.Contains(string(raw), "K+ 6.1"))
	}
}

// TestRedteam7FormFeedBreaksFHIRBundle — attack: any member (no modified
// code needed: her own app's API) sends a message whose text holds a
// form feed ("\f"; a paste from a PDF or a terminal does it too). chat
// and the API accept any UTF-8; package fhir copies the text into
// payload.contentString unchanged, and Google's marshaller does not
// check FHIR's string rule ([ \r\n\t\S]+), so every member's export of
// the conversation is no longer valid FHIR R4: the bundle fails the
// official R4 schema, and a FHIR server receiving it rejects the whole
// collection. Impact: one message from one colleague makes the whole
// conversation unfileable to the patient's record (the "bundle is valid
// FHIR R4" guarantee), silently — the export still answers 200.
func TestRedteam7FormFeedBreaksFHIRBundle(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	out := a.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Bay 3","members":["bola"],"patient":`+janeJSON+`}`)
	id := mustConv(t, out["id"].(string))
	post(t, a, id, `{"text":"K+ 6.1 in bay 3"}`)
	testnet.Eventually(t, within, "bola lists the conversation", func() bool { return b.listed(t, id) != nil })
	var ff string
	testnet.Eventually(t, within, "bola can send", func() bool {
		code, body := b.call(t, "POST", convPath(id)+"/messages", `{"text":"seen\fok"}`)
		if code == http.StatusCreated {
			ff, _ = body["id"].(string)
		}
		return ff != ""
	})
	waitMessage(t, a, id, ff, "bola's message", func(m apiMessage) bool { return m["text"] == "seen\fok" })

	code, _, raw := a.do(t, "GET", convPath(id)+"/fhir", nil)
	if code != http.StatusOK {
		t.Fatalf("export: %d %s", code, raw)
	}
	if err := fhirschema.Validate(raw); err != nil {
		t.Fatalf("one member's message makes the conversation's export invalid FHIR R4: %.400v", err)
	}
}
