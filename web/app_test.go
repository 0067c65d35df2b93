package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/testnet"
)

// appServer serves the API and the app of a real device, alone on
// loopback, with the token "secret-token" and the passphrase "right".
func appServer(t *testing.T, lockAfter time.Duration) (*Server, *httptest.Server) {
	t.Helper()
	ca := testnet.NewCA(t)
	p := testnet.Start(t, ca, ca.Enrol(t, "asha"))
	s := New(p.N, "secret-token", testnet.Logger(), WithConversations(p.C, p.N),
		WithApp(func(p []byte) bool { return string(p) == "right" }, lockAfter))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

func do(t *testing.T, method, url, body string, hdr map[string]string, cookies ...*http.Cookie) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestAppServedWithStrictHeaders(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	for _, path := range []string{"/", "/app.js", "/app.css"} {
		resp := do(t, "GET", srv.URL+path, "", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Fatalf("%s: CSP %q", path, csp)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("%s: caching or framing allowed", path)
		}
		if strings.Contains(string(body), "secret-token") || strings.Contains(string(body), "http://") && path == "/" {
			t.Fatalf("%s: token or third-party URL in page source", path)
		}
	}
}

func TestAppUnlockSessionAndCSRF(t *testing.T) {
	s, srv := appServer(t, time.Minute)
	csrf := map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": srv.URL}
	if r := do(t, "GET", srv.URL+"/api/v1/conversations", "", nil); r.StatusCode != 401 {
		t.Fatalf("no auth: %d", r.StatusCode)
	}
	if r := do(t, "POST", srv.URL+"/app/unlock", `{"passphrase":"wrong"}`, csrf); r.StatusCode != 401 {
		t.Fatalf("wrong passphrase: %d", r.StatusCode)
	}
	s.gate.now = func() time.Time { return time.Now().Add(UnlockBackoff) } // past the wrong guess's back-off
	if r := do(t, "POST", srv.URL+"/app/unlock", `{"passphrase":"right"}`, map[string]string{"Content-Type": "application/json", "Origin": srv.URL}); r.StatusCode != 403 {
		t.Fatalf("unlock without CSRF header: %d", r.StatusCode)
	}
	r := do(t, "POST", srv.URL+"/app/unlock", `{"passphrase":"right"}`, csrf)
	if r.StatusCode != 200 || len(r.Cookies()) != 1 {
		t.Fatalf("unlock: %d %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(r.Header.Get("Set-Cookie"), "secret-token") {
		t.Fatalf("cookie not HttpOnly/SameSite=Strict: %+v", c)
	}
	if r := do(t, "GET", srv.URL+"/api/v1/conversations", "", nil, c); r.StatusCode != 200 {
		t.Fatalf("session GET: %d", r.StatusCode)
	}
	// A cross-site form can send the cookie (not with SameSite=Strict, but
	// defence in depth) yet cannot set the CSRF header.
	if r := do(t, "POST", srv.URL+"/api/v1/conversations", `{"title":"x"}`, map[string]string{"Content-Type": "application/json", "Origin": srv.URL}, c); r.StatusCode != 401 {
		t.Fatalf("session POST without CSRF header: %d", r.StatusCode)
	}
	if r := do(t, "POST", srv.URL+"/api/v1/conversations", `{"title":"x","members":["asha"]}`, csrf, c); r.StatusCode != 201 {
		t.Fatalf("session POST with CSRF header: %d", r.StatusCode)
	}
	// Inactivity lock.
	s.sessions.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if r := do(t, "GET", srv.URL+"/api/v1/conversations", "", nil, c); r.StatusCode != 401 {
		t.Fatalf("after the inactivity window: %d", r.StatusCode)
	}
}
