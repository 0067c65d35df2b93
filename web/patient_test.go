package web

import (
	"net/http"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/testnet"
)

const janeJSON = `{"nhs_number":"943 476 5919","name":"Jane Doe","birth_date":"1950-03-14"}`

// search lists the IDs of the conversations p's API finds for query.
func (p *dev) search(t *testing.T, query string) []string {
	t.Helper()
	var list []map[string]any
	p.getJSON(t, "/api/v1/conversations?patient="+strings.ReplaceAll(query, " ", "+"), &list)
	var out []string
	for _, c := range list {
		out = append(out, c["id"].(string))
	}
	return sorted(out...)
}

func patientField(c map[string]any) map[string]any {
	p, _ := c["patient"].(map[string]any)
	return p
}

// TestConversationPatient: a conversation created about a patient through
// the API shows the patient on both devices (list and single view); a
// member corrects it and clears it; search by NHS number or name finds it
// on each device; invalid NHS numbers and birth dates are refused with a
// 400 that names the field and not the value, and make no conversation.
func TestConversationPatient(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	out := a.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Bay 3","members":["bola"],"patient":`+janeJSON+`}`)
	id, err := chat.ParseConversationID(out["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"nhs_number": "9434765919", "name": "Jane Doe", "birth_date": "1950-03-14", "set_by": a.ID.String()}
	for _, p := range []*dev{a, b} {
		testnet.Eventually(t, within, p.Ident.Name+" lists the patient", func() bool {
			c := p.listed(t, id)
			return c != nil && equalMap(patientField(c), want)
		})
		single := p.must(t, http.StatusOK, "GET", convPath(id), "")
		if single["id"] != id.String() || single["title"] != "Bay 3" || !equalMap(patientField(single), want) {
			t.Fatalf("single view on %s: %v", p.Ident.Name, single)
		}
	}
	other := w.create(t, "Ward round", b)
	if c := a.summary(t, other); c["patient"] != nil {
		t.Fatalf("a conversation about nobody shows %v", c["patient"])
	}

	// Search, on each device, over what it holds.
	for _, p := range []*dev{a, b} {
		for _, q := range []string{"943 476 5919", "9434765919", "476-59", "jane", "DOE"} {
			if got := p.search(t, q); len(got) != 1 || got[0] != id.String() {
				t.Fatalf("%s: search %q found %v", p.Ident.Name, q, got)
			}
		}
		for _, q := range []string{"943 476 5918", "john", "Ward"} {
			if got := p.search(t, q); len(got) != 0 {
				t.Fatalf("%s: search %q found %v", p.Ident.Name, q, got)
			}
		}
		if got := p.search(t, ""); len(got) != 2 {
			t.Fatalf("%s: an empty search lists %v", p.Ident.Name, got)
		}
	}

	// Bola, a member but not an admin, corrects the link.
	b.must(t, http.StatusOK, "PUT", convPath(id)+"/patient", `{"nhs_number":"4010232137","name":"John Roe"}`)
	testnet.Eventually(t, within, "asha sees the correction", func() bool {
		p := patientField(a.summary(t, id))
		return p["nhs_number"] == "4010232137" && p["name"] == "John Roe" && p["birth_date"] == nil && p["set_by"] == b.ID.String()
	})
	if got := a.search(t, "roe"); len(got) != 1 {
		t.Fatalf("search after correction: %v", got)
	}
	if got := a.search(t, "jane"); len(got) != 0 {
		t.Fatalf("search finds the patient before the correction: %v", got)
	}
	a.must(t, http.StatusOK, "DELETE", convPath(id)+"/patient", "")
	testnet.Eventually(t, within, "bola sees the link cleared", func() bool { return b.summary(t, id)["patient"] == nil })

	// Refused: each names the field, never echoes the value.
	before := len(a.search(t, ""))
	for _, c := range []struct{ body, field string }{
		{`{"nhs_number":"943 476 5918","name":"Zebedee Quux"}`, "check digit"},
		{`{"nhs_number":"123 456 7890","name":"Zebedee Quux"}`, "nhs_number"},
		{`{"nhs_number":"943 476 591","name":"Zebedee Quux"}`, "10 digits"},
		{`{"name":"Zebedee Quux"}`, "nhs_number: required"},
		{`{"nhs_number":"9434765919","name":"Zebedee Quux","birth_date":"2999-01-01"}`, "future"},
		{`{"nhs_number":"9434765919","name":"Zebedee Quux","birth_date":"14/03/1950"}`, "YYYY-MM-DD"},
	} {
		code, out := a.call(t, "POST", "/api/v1/conversations", `{"title":"x","members":["bola"],"patient":`+c.body+`}`)
		msg, _ := out["error"].(string)
		if code != http.StatusBadRequest || !strings.Contains(msg, c.field) || strings.Contains(msg, "Zebedee") ||
			strings.Contains(msg, "943") || strings.Contains(msg, "2999") {
			t.Fatalf("create with %s: %d %q", c.body, code, msg)
		}
		code, out = a.call(t, "PUT", convPath(id)+"/patient", c.body)
		if msg, _ := out["error"].(string); code != http.StatusBadRequest || !strings.Contains(msg, c.field) {
			t.Fatalf("correct with %s: %d %q", c.body, code, msg)
		}
	}
	if after := len(a.search(t, "")); after != before {
		t.Fatalf("refused creates made conversations: %d → %d", before, after)
	}
	if code, _ := a.call(t, "GET", "/api/v1/conversations/"+strings.Repeat("ab", 16), ""); code != http.StatusNotFound {
		t.Fatalf("unknown conversation: %d", code)
	}
}

func equalMap(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
