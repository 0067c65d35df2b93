package web

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medmesh/medmesh/audit"
)

// pinNode is a node's API with the app and an audit trail, on a settable
// clock for both the sessions and the unlock gate, logging into a buffer.
type pinNode struct {
	s     *Server
	srv   *httptest.Server
	clock *fakeClock
	kdf   *counted
	trail *memAudit
	logs  *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func newPINNode(t *testing.T) *pinNode {
	t.Helper()
	n := &pinNode{clock: &fakeClock{t: time.Unix(1e9, 0)}, kdf: &counted{}, trail: newMemAudit(t), logs: &syncBuf{}}
	n.s = New(&fakeNode{}, "secret-token", slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		WithApp(n.kdf.unlock, time.Minute), WithAudit(n.trail))
	n.s.gate.now, n.s.sessions.now = n.clock.Now, n.clock.Now
	n.srv = httptest.NewServer(n.s)
	t.Cleanup(n.srv.Close)
	return n
}

// app are the headers of the app's own page on a state-changing request.
func (n *pinNode) app() map[string]string {
	return map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": n.srv.URL}
}

// unlock opens a session with the passphrase.
func (n *pinNode) unlock(t *testing.T) *http.Cookie {
	t.Helper()
	return rtUnlock(t, n.srv.URL)
}

// setPIN sets pin from session c and returns the browser's binding cookie.
func (n *pinNode) setPIN(t *testing.T, c *http.Cookie, pin string) *http.Cookie {
	t.Helper()
	r := do(t, "POST", n.srv.URL+"/api/v1/unlock/pin", `{"pin":"`+pin+`"}`, n.app(), c)
	if r.StatusCode != 200 {
		t.Fatalf("set PIN: %d", r.StatusCode)
	}
	for _, k := range r.Cookies() {
		if k.Name == n.s.pinName() {
			if !k.HttpOnly || k.SameSite != http.SameSiteStrictMode || k.Path != pinPath || len(k.Value) != 64 {
				t.Fatalf("binding cookie %+v", k)
			}
			return k
		}
	}
	t.Fatalf("set PIN sent no binding cookie: %v", r.Cookies())
	return nil
}

// tryPIN sends a PIN unlock from the app's page with the binding cookie.
func (n *pinNode) tryPIN(t *testing.T, pin string, cookies ...*http.Cookie) (int, string, *http.Cookie) {
	t.Helper()
	code, hdr, body := request(t, "POST", n.srv.URL+pinPath, "", `{"pin":"`+pin+`"}`, n.app(), cookies...)
	resp := http.Response{Header: hdr}
	for _, c := range resp.Cookies() {
		if c.Name == n.s.cookie && c.Value != "" {
			return code, body, c
		}
	}
	return code, body, nil
}

// idle passes the inactivity lock.
func (n *pinNode) idle() { n.clock.Add(2 * time.Minute) }

func (n *pinNode) sessionWorks(t *testing.T, c *http.Cookie) bool {
	t.Helper()
	code, _, _ := request(t, "GET", n.srv.URL+"/api/v1/status", "", "", nil, c)
	return code == http.StatusOK
}

// TestPINReopensAfterInactivityLock: the passphrase opens the app; its
// user sets a PIN; the inactivity lock closes the session; the PIN opens
// a new one (the old stays closed). Every step is in the audit trail, and
// neither the PIN nor a session ID reaches a log.
func TestPINReopensAfterInactivityLock(t *testing.T) {
	n := newPINNode(t)
	c := n.unlock(t)
	bind := n.setPIN(t, c, "2468")
	n.idle()
	if n.sessionWorks(t, c) {
		t.Fatal("session open after the inactivity window")
	}
	if code, _, body := request(t, "GET", n.srv.URL+pinPath, "", "", nil, bind); code != 200 || !strings.Contains(body, `"pin":true`) {
		t.Fatalf("PIN status with the binding cookie: %d %s", code, body)
	}
	if _, _, body := request(t, "GET", n.srv.URL+pinPath, "", "", nil); !strings.Contains(body, `"pin":false`) {
		t.Fatalf("PIN status without the binding cookie: %s", body)
	}
	code, body, s := n.tryPIN(t, "2468", bind)
	if code != 200 || s == nil || !s.HttpOnly || s.SameSite != http.SameSiteStrictMode {
		t.Fatalf("PIN unlock: %d %s %+v", code, body, s)
	}
	if !n.sessionWorks(t, s) || n.sessionWorks(t, c) {
		t.Fatal("the PIN's session does not work, or the locked one came back")
	}
	if n.kdf.runs.Load() != 1 {
		t.Fatalf("the PIN ran the passphrase KDF: %d runs", n.kdf.runs.Load())
	}
	want := []audit.Kind{audit.Unlocked, audit.PINSet, audit.Locked, audit.PINUnlocked}
	if got := n.trail.kinds(t); !slices.Equal(got, want) {
		t.Fatalf("audit %v, want %v", got, want)
	}
	if l := n.logs.String(); strings.Contains(l, "2468") || strings.Contains(l, s.Value) || strings.Contains(l, bind.Value) {
		t.Fatalf("a secret in the log: %s", l)
	}
}

// TestPINBruteForce: a colleague who picks up the locked phone guesses.
// Each wrong PIN goes through the passphrase gate (one at a time, back-off
// doubling from 1 s); a guess inside the back-off is refused without being
// tried; the third wrong PIN clears it, so the right PIN no longer opens
// anything and the passphrase is needed — which itself still waits out
// the back-off the wrong PINs earned.
func TestPINBruteForce(t *testing.T) {
	n := newPINNode(t)
	bind := n.setPIN(t, n.unlock(t), "2468")
	n.idle()
	for i, guess := range []string{"0000", "1111", "1234"} {
		if i > 0 {
			if code, _, _ := n.tryPIN(t, "2468", bind); code != http.StatusTooManyRequests {
				t.Fatalf("guess inside the back-off after %d wrong: %d, want 429", i, code)
			}
			n.clock.Add(UnlockBackoff << (i - 1))
		}
		code, body, s := n.tryPIN(t, guess, bind)
		if code != http.StatusUnauthorized || s != nil {
			t.Fatalf("wrong PIN %d: %d %s", i+1, code, body)
		}
		if i == 2 && !strings.Contains(body, ErrPINCleared.Error()) {
			t.Fatalf("third wrong PIN: %s", body)
		}
	}
	n.clock.Add(time.Hour)
	if code, body, s := n.tryPIN(t, "2468", bind); code != http.StatusConflict || s != nil || !strings.Contains(body, `"pin":false`) {
		t.Fatalf("the right PIN after the fallback: %d %s", code, body)
	}
	// The wrong PINs count for the passphrase too: three failures in a
	// row mean a 4 s wait.
	n.clock.Add(-time.Hour)
	code, _, _ := request(t, "POST", n.srv.URL+"/app/unlock", "", `{"passphrase":"right"}`, n.app())
	if code != http.StatusTooManyRequests {
		t.Fatalf("passphrase straight after three wrong PINs: %d, want 429", code)
	}
	n.clock.Add(4 * time.Second)
	if c := n.unlock(t); !n.sessionWorks(t, c) {
		t.Fatal("the passphrase does not open the app after the fallback")
	}
	// (The inactivity lock is recorded when noticed: not in a fixed place.)
	want := []audit.Kind{audit.Unlocked, audit.PINSet, audit.PINFailed, audit.PINFailed, audit.PINFailed, audit.PINCleared, audit.Unlocked}
	if got := slices.DeleteFunc(n.trail.kinds(t), func(k audit.Kind) bool { return k == audit.Locked }); !slices.Equal(got, want) {
		t.Fatalf("audit %v, want %v", got, want)
	}
}

// TestPINCountsSinceSet: a right PIN between wrong ones does not give an
// attacker three fresh guesses each time the user unlocks.
func TestPINCountsSinceSet(t *testing.T) {
	n := newPINNode(t)
	bind := n.setPIN(t, n.unlock(t), "2468")
	for i, guess := range []string{"0000", "2468", "1111", "2468", "3333"} {
		n.clock.Add(time.Hour) // past any back-off and the session
		code, _, _ := n.tryPIN(t, guess, bind)
		if want := map[bool]int{true: 200, false: 401}[guess == "2468"]; code != want {
			t.Fatalf("attempt %d (%s): %d, want %d", i+1, guess, code, want)
		}
	}
	n.clock.Add(time.Hour)
	if code, _, _ := n.tryPIN(t, "2468", bind); code != http.StatusConflict {
		t.Fatalf("after three wrong PINs in all: %d, want 409", code)
	}
}

// TestPINSetNeedsPassphraseSession: a PIN is set only from the app's
// session opened with the passphrase — not by a page or process without
// one, not with the bearer token alone, not from a session the PIN itself
// opened, not from another origin, not without the CSRF header.
func TestPINSetNeedsPassphraseSession(t *testing.T) {
	n := newPINNode(t)
	set := n.srv.URL + "/api/v1/unlock/pin"
	body := `{"pin":"2468"}`
	if code, _, _ := request(t, "POST", set, "", body, n.app()); code != http.StatusUnauthorized {
		t.Fatalf("no session: %d", code)
	}
	if code, _, _ := request(t, "POST", set, "", body, map[string]string{"Authorization": "Bearer secret-token"}); code != http.StatusForbidden {
		t.Fatalf("bearer token without a session: %d", code)
	}
	c := n.unlock(t)
	for what, hdr := range map[string]map[string]string{
		"another origin":     with(n.app(), "Origin", "http://127.0.0.1:1"),
		"a rebinding origin": with(n.app(), "Origin", "http://evil.example"),
		"no Origin":          {"Content-Type": "application/json", csrfHeader: "1"},
		"no CSRF header":     {"Content-Type": "application/json", "Origin": n.srv.URL},
		"cross-site fetch":   with(n.app(), "Sec-Fetch-Site", "same-site"),
	} {
		if code, _, _ := request(t, "POST", set, "", body, hdr, c); code < 400 {
			t.Errorf("%s: %d", what, code)
		}
	}
	if code, _, _ := request(t, "POST", set, "evil.example", body, n.app(), c); code != http.StatusMisdirectedRequest {
		t.Errorf("rebound Host: %d", code)
	}
	for _, bad := range []string{`{"pin":"123"}`, `{"pin":"123456789"}`, `{"pin":"12a4"}`, `{"pin":1234}`, `{"pin":""}`, `{}`, `{"pin":"１２３４"}`, `{"pin":"12\u00334"}`} {
		code, _, resp := request(t, "POST", set, "", bad, n.app(), c)
		if code != http.StatusBadRequest || strings.Contains(resp, "123") || strings.Contains(resp, "12a4") {
			t.Errorf("PIN %s: %d %s", bad, code, resp)
		}
	}
	if got := n.trail.kinds(t); slices.Contains(got, audit.PINSet) {
		t.Fatalf("a refused request set a PIN: %v", got)
	}
	bind := n.setPIN(t, c, "2468")
	n.idle()
	_, _, s := n.tryPIN(t, "2468", bind)
	if s == nil {
		t.Fatal("PIN unlock failed")
	}
	if code, _, _ := request(t, "POST", set, "", `{"pin":"1357"}`, n.app(), s); code != http.StatusForbidden {
		t.Fatalf("a PIN-opened session set a new PIN: %d", code)
	}
}

// TestPINNotAfterRestart: the PIN lives in the running node's memory
// only. A restarted node (a new server for the same device) knows no PIN:
// the old binding cookie and the right PIN open nothing, and the attempt
// is not even counted.
func TestPINNotAfterRestart(t *testing.T) {
	n := newPINNode(t)
	bind := n.setPIN(t, n.unlock(t), "2468")
	n.srv.Close()
	again := newPINNode(t)
	if again.s.pinName() != n.s.pinName() {
		t.Fatal("the restarted node names its cookie differently: the test proves nothing")
	}
	code, body, s := again.tryPIN(t, "2468", bind)
	if code != http.StatusConflict || s != nil || !strings.Contains(body, ErrNoPIN.Error()) {
		t.Fatalf("PIN after restart: %d %s", code, body)
	}
	if got := again.trail.kinds(t); len(got) != 0 {
		t.Fatalf("a PIN attempt on a node with no PIN was recorded as %v", got)
	}
}

// TestPINBoundToBrowser: the PIN works only with the binding cookie of the
// browser that set it. A local process or another browser that knows (or
// guesses) the PIN but not the cookie opens nothing, and its attempts are
// not counted, so it cannot clear the user's PIN either.
func TestPINBoundToBrowser(t *testing.T) {
	n := newPINNode(t)
	bind := n.setPIN(t, n.unlock(t), "2468")
	n.idle()
	forged := &http.Cookie{Name: n.s.pinName(), Value: strings.Repeat("0", len(bind.Value))}
	for range PINMaxWrong + 1 {
		for _, cs := range [][]*http.Cookie{nil, {forged}} {
			if code, _, s := n.tryPIN(t, "2468", cs...); code != http.StatusConflict || s != nil {
				t.Fatalf("PIN without the binding cookie %v: %d", cs, code)
			}
		}
	}
	if code, _, s := n.tryPIN(t, "2468", bind); code != 200 || s == nil {
		t.Fatalf("the user's PIN after foreign attempts: %d", code)
	}
}

// TestPINHostileRequests: a page on another origin, a DNS-rebinding page
// and a form without the CSRF header try the PIN with the binding cookie
// (a browser sends it: SameSite=Strict treats other ports as same-site).
// The guard refuses each before any check; none counts against the PIN.
func TestPINHostileRequests(t *testing.T) {
	n := newPINNode(t)
	bind := n.setPIN(t, n.unlock(t), "2468")
	n.idle()
	u := n.srv.URL + pinPath
	for range PINMaxWrong {
		for what, tc := range map[string]struct {
			host string
			hdr  map[string]string
			want int
		}{
			"another port":   {"", with(n.app(), "Origin", "http://127.0.0.1:1"), 403},
			"null origin":    {"", with(n.app(), "Origin", "null"), 403},
			"no Origin":      {"", map[string]string{"Content-Type": "application/json", csrfHeader: "1"}, 403},
			"no CSRF header": {"", map[string]string{"Content-Type": "text/plain", "Origin": n.srv.URL}, 403},
			"rebinding":      {"evil.example", n.app(), 421},
		} {
			for _, pin := range []string{"0000", "2468"} {
				code, _, body := request(t, "POST", u, tc.host, `{"pin":"`+pin+`"}`, tc.hdr, bind)
				if code != tc.want || strings.Contains(body, "ok") {
					t.Fatalf("%s: %d %s, want %d", what, code, body, tc.want)
				}
			}
		}
		if code, _, _ := request(t, "GET", n.srv.URL+pinPath, "evil.example", "", nil, bind); code != 421 {
			t.Fatalf("PIN status for a rebinding page: %d", code)
		}
	}
	if got := n.trail.kinds(t); slices.Contains(got, audit.PINFailed) {
		t.Fatalf("hostile requests were tried: %v", got)
	}
	if code, _, s := n.tryPIN(t, "2468", bind); code != 200 || s == nil {
		t.Fatalf("the user's PIN after the hostile requests: %d", code)
	}
}

// TestPINClearedByLockByHand: the Lock button (POST /app/lock) locks for
// real: the PIN is forgotten and the passphrase is needed.
func TestPINClearedByLockByHand(t *testing.T) {
	n := newPINNode(t)
	c := n.unlock(t)
	bind := n.setPIN(t, c, "2468")
	r := do(t, "POST", n.srv.URL+"/app/lock", `{}`, n.app(), c)
	if r.StatusCode != 200 {
		t.Fatalf("lock: %d", r.StatusCode)
	}
	if code, _, s := n.tryPIN(t, "2468", bind); code != http.StatusConflict || s != nil {
		t.Fatalf("PIN after a lock by hand: %d", code)
	}
	if got := n.trail.kinds(t); !slices.Contains(got, audit.PINCleared) {
		t.Fatalf("audit %v lacks pin_cleared", got)
	}
}
