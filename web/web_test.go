package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/node"
)

type fakeNode struct {
	crlErr     error
	crlChanged bool
	panics     bool
}

func (f *fakeNode) Status() node.Status {
	if f.panics {
		panic("boom")
	}
	return node.Status{PeerID: "12D3KooWtest", Name: "Dr One", Peers: []node.PeerStatus{{PeerID: "p2", Admitted: true}}, CRLNumber: 4}
}
func (f *fakeNode) Directory() []node.StaffInfo { return []node.StaffInfo{{Name: "Dr Two"}} }
func (f *fakeNode) SubmitCRL(context.Context, []byte) (bool, error) {
	return f.crlChanged, f.crlErr
}

func call(t *testing.T, h http.Handler, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = "127.0.0.1" // httptest names example.com: the node serves loopback names
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	var out map[string]any
	if strings.HasPrefix(w.Body.String(), "{") {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: bad JSON %q", method, path, w.Body.String())
		}
	}
	return w.Code, out
}

func TestAuthAndRoutes(t *testing.T) {
	f := &fakeNode{crlChanged: true}
	s := New(f, "secret-token", slog.New(slog.DiscardHandler))
	for _, tok := range []string{"", "wrong", "secret-tokenX"} {
		if code, out := call(t, s, "GET", "/api/v1/status", tok, ""); code != 401 || out["error"] == nil {
			t.Fatalf("token %q: %d %v", tok, code, out)
		}
	}
	code, out := call(t, s, "GET", "/api/v1/status", "secret-token", "")
	if code != 200 || out["peer_id"] != "12D3KooWtest" || out["crl_number"].(float64) != 4 {
		t.Fatalf("status: %d %v", code, out)
	}
	if code, _ := call(t, s, "GET", "/api/v1/nope", "secret-token", ""); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	if code, _ := call(t, s, "DELETE", "/api/v1/status", "secret-token", ""); code != 405 && code != 404 {
		t.Fatalf("wrong method: %d", code)
	}
}

func TestCRLStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		err     error
		changed bool
		want    int
	}{
		{nil, true, 200},
		{nil, false, 409},
		{fmt.Errorf("x: %w", identity.ErrMalformed), false, 400},
		{fmt.Errorf("x: %w", identity.ErrUnknownCA), false, 403},
		{fmt.Errorf("x: %w", identity.ErrBadSignature), false, 403},
		{errors.New("disk full"), false, 500},
	} {
		s := New(&fakeNode{crlErr: tc.err, crlChanged: tc.changed}, "t", slog.New(slog.DiscardHandler))
		if code, out := call(t, s, "POST", "/api/v1/trust/crl", "t", "pem"); code != tc.want || (code != 200 && out["error"] == nil) {
			t.Errorf("err %v changed %v: %d %v, want %d", tc.err, tc.changed, code, out, tc.want)
		}
	}
}

func TestPanicBecomes500(t *testing.T) {
	s := New(&fakeNode{panics: true}, "t", slog.New(slog.DiscardHandler))
	if code, out := call(t, s, "GET", "/api/v1/status", "t", ""); code != 500 || out["error"] != "internal error" {
		t.Fatalf("panic: %d %v", code, out)
	}
}
