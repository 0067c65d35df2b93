package web

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/fhir"
	"github.com/medmesh/medmesh/internal/fhirschema"
	"github.com/medmesh/medmesh/internal/testnet"
)

// fhirBundle GETs a conversation's FHIR export from p and checks the media
// type and the FHIR R4 schema.
func fhirBundle(t *testing.T, p *dev, path string) map[string]any {
	t.Helper()
	code, hdr, raw := p.do(t, "GET", path, nil)
	if code != http.StatusOK || hdr.Get("Content-Type") != fhir.ContentType || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET %s: %d, %q, Cache-Control %q: %.300s", path, code, hdr.Get("Content-Type"), hdr.Get("Cache-Control"), raw)
	}
	if err := fhirschema.Validate(raw); err != nil {
		t.Fatalf("GET %s: fails the FHIR R4 schema: %v", path, err)
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func communications(b map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, e := range b["entry"].([]any) {
		r := e.(map[string]any)["resource"].(map[string]any)
		if r["resourceType"] != "Communication" {
			continue
		}
		for _, id := range r["identifier"].([]any) {
			if id := id.(map[string]any); id["system"] == fhir.SystemMessageID {
				out[id["value"].(string)] = r
			}
		}
	}
	return out
}

// TestConversationFHIR: both members' APIs file the same conversation — a
// text, an urgent reply, a photo — about a patient; ?messages= selects;
// a device outside the conversation, an unknown conversation and an
// unknown message get 404; the route is guarded like every /api/v1 route.
func TestConversationFHIR(t *testing.T) {
	w := newWard(t, "bola", "chidi")
	a, b, c := w.asha, w.staff[0], w.staff[1]
	out := a.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Bay 3","members":["bola"],"patient":`+janeJSON+`}`)
	id := out["id"].(string)
	path := "/api/v1/conversations/" + id + "/fhir"
	hello := post(t, a, mustConv(t, id), `{"text":"K+ 6.1 in bay 3"}`)
	reply := post(t, a, mustConv(t, id), `{"text":"ECG now please","urgent":true,"reply_to":"`+hello+`"}`)
	code, _, raw := a.do(t, "POST", "/api/v1/conversations/"+id+"/photos?caption="+url.QueryEscape("rhythm strip"), testImage(t, "png"))
	if code != http.StatusCreated {
		t.Fatalf("post photo: %d %s", code, raw)
	}
	var ph map[string]any
	json.Unmarshal(raw, &ph)
	photo := ph["id"].(string)
	_, full := getPhoto(t, a, mustConv(t, id), photo, true)
	testnet.Eventually(t, within, "bola lists the conversation", func() bool { return b.listed(t, mustConv(t, id)) != nil })
	waitMessage(t, b, mustConv(t, id), photo, "the whole photo", func(m apiMessage) bool {
		p, _ := m["photo"].(map[string]any)
		return p["ready"] == true
	})

	// received: when bola's device signed for the message, after it was sent.
	testnet.Eventually(t, within, "asha's export says when bola received the hello", func() bool {
		com := communications(fhirBundle(t, a, path))[hello]
		got, _ := com["received"].(string)
		at, err1 := time.Parse(time.RFC3339Nano, got)
		sent, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(com["sent"]))
		return err1 == nil && err2 == nil && !at.Before(sent)
	})

	for _, p := range []*dev{a, b} {
		bundle := fhirBundle(t, p, path)
		if bundle["type"] != "collection" {
			t.Fatalf("%s: bundle type %v", p.Ident.Name, bundle["type"])
		}
		coms := communications(bundle)
		if len(coms) != 3 {
			t.Fatalf("%s: %d communications", p.Ident.Name, len(coms))
		}
		for msg, com := range coms {
			if com["status"] != "completed" || com["sent"] == nil || com["sender"] == nil || com["recipient"] == nil || com["subject"] == nil {
				t.Fatalf("%s: communication %s lacks a required field: %v", p.Ident.Name, msg, com)
			}
		}
		if coms[reply]["priority"] != "urgent" || coms[hello]["priority"] != "routine" || coms[reply]["inResponseTo"] == nil {
			t.Fatalf("%s: priorities %v %v, inResponseTo %v", p.Ident.Name, coms[reply]["priority"], coms[hello]["priority"], coms[reply]["inResponseTo"])
		}
		att := coms[photo]["payload"].([]any)[0].(map[string]any)["contentAttachment"].(map[string]any)
		if att["contentType"] != "image/jpeg" || att["data"] != base64.StdEncoding.EncodeToString(full) {
			t.Fatalf("%s: the photo is not the stored JPEG", p.Ident.Name)
		}
		var nhs string
		for _, e := range bundle["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			if r["resourceType"] == "Patient" {
				nhs = r["identifier"].([]any)[0].(map[string]any)["value"].(string)
			}
		}
		if nhs != "9434765919" {
			t.Fatalf("%s: patient NHS number %q", p.Ident.Name, nhs)
		}
	}

	// Selected messages.
	if coms := communications(fhirBundle(t, b, path+"?messages="+reply+","+hello)); len(coms) != 2 || coms[photo] != nil {
		t.Fatalf("selected two, got %d", len(coms))
	}
	a.must(t, http.StatusBadRequest, "GET", path+"?messages=nope", "")
	a.must(t, http.StatusNotFound, "GET", path+"?messages="+strings.Repeat("ab", 32), "")

	// Not a member: chidi's device does not hold the conversation.
	c.must(t, http.StatusNotFound, "GET", path, "")
	a.must(t, http.StatusNotFound, "GET", "/api/v1/conversations/"+strings.Repeat("0f", 16)+"/fhir", "")
	a.must(t, http.StatusNotFound, "GET", "/api/v1/conversations/not-an-id/fhir", "")

	// Guarded like the others: no token, a wrong token, a foreign origin,
	// a rebinding host name — and none of them gets patient data.
	for name, mod := range map[string]func(*http.Request){
		"no token":    func(r *http.Request) {},
		"wrong token": func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") },
		"foreign origin": func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+apiToken)
			r.Header.Set("Origin", "http://evil.example")
		},
		"foreign host": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+apiToken); r.Host = "evil.example" },
	} {
		req, _ := http.NewRequest("GET", a.srv.URL+path, nil)
		mod(req)
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 || body["error"] == nil || body["entry"] != nil {
			t.Fatalf("%s: %d %v", name, resp.StatusCode, body)
		}
	}
}

func mustConv(t *testing.T, s string) chat.ConversationID {
	t.Helper()
	id, err := chat.ParseConversationID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
