package web

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/medmesh/medmesh/identity"
)

type fakeFederator struct {
	fakeNode
	err     error
	changed bool
	got     []byte
	recs    []*identity.Federation
}

func (f *fakeFederator) SubmitFederation(_ context.Context, data []byte) (bool, error) {
	f.got = data
	return f.changed, f.err
}
func (f *fakeFederator) Federations() []*identity.Federation { return f.recs }

func TestFederationRoutes(t *testing.T) {
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
		f := &fakeFederator{err: tc.err, changed: tc.changed}
		s := New(f, "t", slog.New(slog.DiscardHandler))
		if code, out := call(t, s, "POST", "/api/v1/trust/federation", "t", "pem"); code != tc.want || (code != 200 && out["error"] == nil) {
			t.Errorf("err %v changed %v: %d %v, want %d", tc.err, tc.changed, code, out, tc.want)
		}
		// Without the token (a hostile page, an outsider): nothing reaches the node.
		f.got = nil
		if code, _ := call(t, s, "POST", "/api/v1/trust/federation", "", "pem"); code != 401 || f.got != nil {
			t.Fatalf("no token: %d, record submitted: %v", code, f.got != nil)
		}
	}
	a, _ := identity.NewRootCA("General Hospital", time.Now())
	b, _ := identity.NewRootCA("County Hospital", time.Now())
	raw, err := a.SignFederation(b.Cert, identity.Policy{Roles: []string{"clinician"}, Scope: identity.ScopeInvited}, 3, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := identity.NewTrust([]*x509.Certificate{a.Cert})
	rec, _, err := tr.InstallFederation(raw)
	if err != nil {
		t.Fatal(err)
	}
	s := New(&fakeFederator{recs: []*identity.Federation{rec}}, "t", slog.New(slog.DiscardHandler))
	r := httptest.NewRequest("GET", "/api/v1/trust/federations", nil)
	r.Host = "127.0.0.1"
	r.Header.Set("Authorization", "Bearer t")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	var list []federationView
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || w.Code != 200 || len(list) != 1 ||
		list[0].Trust != "County Hospital" || list[0].Number != 3 || list[0].Policy.Roles[0] != "clinician" || list[0].Policy.Sites == nil {
		t.Fatalf("list: %d %s", w.Code, w.Body.String())
	}
	// A backend without federation has no such routes.
	if code, _ := call(t, New(&fakeNode{}, "t", slog.New(slog.DiscardHandler)), "POST", "/api/v1/trust/federation", "t", "x"); code != 404 {
		t.Fatalf("backend without federation: %d", code)
	}
}
