package web

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/testnet"
)

// requireAll is set by CI: a test that would skip for a missing tool fails.
func requireAll() bool { return os.Getenv("MEDMESH_REQUIRE_ALL") == "1" }

// apiToken is the bearer token of every test API.
const apiToken = "tok"

// dev is a real device (internal/testnet: device.Open on loopback) with
// its local API served over HTTP, as `medmesh run` serves it.
type dev struct {
	*testnet.Peer
	api *Server
	srv *httptest.Server
}

// serve serves p's local API until the test ends (before p stops).
func serve(t *testing.T, p *testnet.Peer, opts ...Option) *dev {
	t.Helper()
	h := New(p.N, apiToken, testnet.Logger(), append([]Option{WithConversations(p.C, p.N)}, opts...)...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &dev{Peer: p, api: h, srv: srv}
}

// start runs a device for id, bootstrapped to boot, and serves its API.
func start(t *testing.T, ca *testnet.CA, id *testnet.Identity, boot ...*testnet.Peer) *dev {
	t.Helper()
	return serve(t, testnet.Start(t, ca, id, testnet.Boot(boot...)))
}

// do makes an API request with the token; body is JSON text (or an image).
func (p *dev) do(t *testing.T, method, path string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, out
}

// call makes a JSON request and decodes the JSON object answered; every
// answer, error or not, must be JSON.
func (p *dev) call(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	code, hdr, raw := p.do(t, method, path, []byte(body))
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: %d, Content-Type %q: %s", method, path, code, ct, raw)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d, not a JSON object: %q", method, path, code, raw)
	}
	if code >= 400 && out["error"] == nil {
		t.Fatalf("%s %s: %d without an error message: %v", method, path, code, out)
	}
	return code, out
}

// must makes a JSON request that has to answer want, and returns the answer.
func (p *dev) must(t *testing.T, want int, method, path, body string) map[string]any {
	t.Helper()
	code, out := p.call(t, method, path, body)
	if code != want {
		t.Fatalf("%s %s %s: %d %v, want %d", method, path, body, code, out, want)
	}
	return out
}

// getJSON GETs path and decodes the answer into v.
func (p *dev) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, _, raw := p.do(t, "GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, raw)
	}
}

// apiMessage is a message entry as a client decodes it: raw fields, so a
// missing or renamed one shows.
type apiMessage map[string]any

func convPath(id chat.ConversationID) string { return "/api/v1/conversations/" + id.String() }

// messages lists a conversation's messages through the API.
func (p *dev) messages(t *testing.T, id chat.ConversationID) []apiMessage {
	t.Helper()
	var out []apiMessage
	p.getJSON(t, convPath(id)+"/messages", &out)
	return out
}

// listed is the conversation's entry in the API's list, nil if not listed.
func (p *dev) listed(t *testing.T, id chat.ConversationID) map[string]any {
	t.Helper()
	var list []map[string]any
	p.getJSON(t, "/api/v1/conversations", &list)
	for _, c := range list {
		if c["id"] == id.String() {
			return c
		}
	}
	return nil
}

// summary is the conversation's entry in the API's list; it must be there.
func (p *dev) summary(t *testing.T, id chat.ConversationID) map[string]any {
	t.Helper()
	c := p.listed(t, id)
	if c == nil {
		t.Fatalf("conversation %s not listed", id)
	}
	return c
}

// message is one message as p's API shows it (nil if not listed).
func (p *dev) message(t *testing.T, id chat.ConversationID, msg string) apiMessage {
	t.Helper()
	return find(p.messages(t, id), msg)
}

func find(msgs []apiMessage, id string) apiMessage {
	for _, m := range msgs {
		if m["id"] == id {
			return m
		}
	}
	return nil
}
