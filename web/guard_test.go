package web

// Attacks on the local app from the browser (a DNS-rebinding page, a page
// on another origin, a page on another port of 127.0.0.1) and from local
// processes (passphrase guessing, memory exhaustion through argon2id).

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/medmesh/medmesh/node"
)

// request sends one request with a chosen Host header and headers, and
// returns the status, the response headers and the body.
func request(t *testing.T, method, url, host, body string, hdr map[string]string, cookies ...*http.Cookie) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
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
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, resp.Header, "" // an open WebSocket: its body never ends
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

var wsUpgrade = map[string]string{"Connection": "Upgrade", "Upgrade": "websocket",
	"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}

func with(a map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// counted wraps the test passphrase check, counting the KDF runs.
type counted struct{ runs atomic.Int32 }

func (c *counted) unlock(p []byte) bool { c.runs.Add(1); return string(p) == "right" }

// TestDNSRebindingRefused: a page on evil.example rebinds its name to
// 127.0.0.1 and sends requests to every route with Host: evil.example:PORT
// (the browser thinks it talks to its own origin, so it sends no Origin on
// GET, reads every answer, and could guess the passphrase). Every route
// refuses with 421 before any handler runs — no KDF, no session, no event
// stream — even with the right token or session.
func TestDNSRebindingRefused(t *testing.T) {
	s, srv := appServer(t, time.Minute)
	var kdf counted
	s.unlock = kdf.unlock
	c := rtUnlock(t, srv.URL)
	kdf.runs.Store(0)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	routes := []struct{ method, path, body string }{
		{"GET", "/", ""}, {"GET", "/app.js", ""}, {"GET", "/index.html", ""},
		{"POST", "/app/unlock", `{"passphrase":"right"}`}, {"POST", "/app/lock", ""},
		{"GET", "/api/v1/status", ""}, {"GET", "/api/v1/directory", ""},
		{"GET", "/api/v1/conversations", ""}, {"POST", "/api/v1/conversations", `{"title":"x","members":["asha"]}`},
		{"POST", "/api/v1/trust/crl", "x"}, {"GET", "/api/v1/events", ""}, {"GET", "/nope", ""},
		{"POST", "/api/v1/trust/federation", "x"}, {"GET", "/api/v1/trust/federations", ""},
		{"GET", "/api/v1/conversations?patient=943", ""}, {"GET", "/api/v1/conversations/00", ""},
		{"PUT", "/api/v1/conversations/00/patient", `{"nhs_number":"9434765919"}`}, {"DELETE", "/api/v1/conversations/00/patient", ""},
	}
	evil := []string{"evil.example:" + itoa(port), "evil.example", "127.0.0.1.nip.io:" + itoa(port),
		"localhost.evil.example:" + itoa(port), "127.0.0.2:" + itoa(port), "127.0.0.1:" + itoa(port+1),
		"[::1]:" + itoa(port+1), "0.0.0.0:" + itoa(port), "::1", "evil.example:" + itoa(port) + ":1"}
	for _, rt := range routes {
		for _, host := range evil {
			hdr := map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Authorization": "Bearer secret-token"}
			if rt.path == "/api/v1/events" {
				hdr = with(hdr, "Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13",
					"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			}
			code, _, body := request(t, rt.method, srv.URL+rt.path, host, rt.body, hdr, c)
			if code != http.StatusMisdirectedRequest || !strings.Contains(body, `"error"`) {
				t.Errorf("%s %s with Host %q: %d %.80s", rt.method, rt.path, host, code, body)
			}
		}
	}
	if n := kdf.runs.Load(); n != 0 {
		t.Fatalf("a rebinding page ran the passphrase KDF %d times", n)
	}
	// The node's own names still work, with or without the port.
	for _, host := range []string{"127.0.0.1:" + itoa(port), "localhost:" + itoa(port), "LocalHost", "[::1]:" + itoa(port), "127.0.0.1"} {
		code, _, _ := request(t, "GET", srv.URL+"/api/v1/status", host, "", map[string]string{"Authorization": "Bearer secret-token"})
		if code != http.StatusOK {
			t.Errorf("own Host %q: %d", host, code)
		}
	}
	code, _, _ := request(t, "POST", srv.URL+"/app/unlock", "localhost:"+itoa(port), `{"passphrase":"right"}`,
		map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": "http://localhost:" + itoa(port)})
	if code != http.StatusOK || kdf.runs.Load() != 1 {
		t.Fatalf("unlock under localhost: %d, KDF runs %d", code, kdf.runs.Load())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestOriginRules: what a page on another origin (another port of
// 127.0.0.1 receives the session cookie: browsers do not separate cookies
// by port, and SameSite counts it the same site) can do with the app's
// session, and what tools with the token can do without an Origin.
func TestOriginRules(t *testing.T) {
	s, srv := appServer(t, time.Minute)
	var kdf counted
	s.unlock = kdf.unlock
	c := rtUnlock(t, srv.URL)
	port := itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
	create := `{"title":"x","members":["asha"]}`
	json := map[string]string{"Content-Type": "application/json", csrfHeader: "1"}
	token := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer secret-token"}
	foreign := []string{"http://127.0.0.1:1", "http://evil.example", "null", "https://127.0.0.1:" + port,
		"http://127.0.0.1:" + port + "/x", "http://evil.example:" + port, "http://127.0.0.1", "http://user@127.0.0.1:" + port, ""}
	for _, o := range foreign {
		hdr := with(json, "Origin", o)
		if code, _, _ := request(t, "POST", srv.URL+"/api/v1/conversations", "", create, hdr, c); code != http.StatusForbidden {
			t.Errorf("session POST with Origin %q: %d", o, code)
		}
		if code, _, _ := request(t, "POST", srv.URL+"/app/unlock", "", `{"passphrase":"right"}`, hdr); code != http.StatusForbidden {
			t.Errorf("unlock with Origin %q: %d", o, code)
		}
		if code, _, _ := request(t, "GET", srv.URL+"/api/v1/events", "", "", with(wsUpgrade, "Origin", o), c); code != http.StatusForbidden {
			t.Errorf("session event stream with Origin %q: %d", o, code)
		}
		if o == "" {
			continue // a tool's request: no Origin
		}
		if code, _, _ := request(t, "POST", srv.URL+"/api/v1/conversations", "", create, with(token, "Origin", o)); code != http.StatusForbidden {
			t.Errorf("token POST with foreign Origin %q: %d", o, code)
		}
	}
	// A session request with no Origin at all (a local process replaying
	// the cookie another local port received, or a browser that strips
	// Origin) does not change state.
	code, _, _ := request(t, "POST", srv.URL+"/api/v1/conversations", "", create, json, c)
	if code != http.StatusForbidden {
		t.Errorf("session POST without Origin: %d", code)
	}
	if code, _, _ := request(t, "POST", srv.URL+"/app/lock", "", "", json, c); code != http.StatusForbidden {
		t.Errorf("session lock without Origin: %d", code)
	}
	if n := kdf.runs.Load(); n != 1 { // rtUnlock's
		t.Errorf("refused unlocks ran the KDF: %d runs", n)
	}
	// A page on another port reads with the session: the browser says so.
	for _, site := range []string{"same-site", "cross-site"} {
		if code, _, _ := request(t, "GET", srv.URL+"/api/v1/conversations", "", "", map[string]string{"Sec-Fetch-Site": site}, c); code != http.StatusUnauthorized {
			t.Errorf("session GET from a %s page: %d", site, code)
		}
	}
	// The app itself, under either loopback name.
	for _, o := range []string{srv.URL, "http://localhost:" + port, "http://[::1]:" + port} {
		if code, _, _ := request(t, "POST", srv.URL+"/api/v1/conversations", "", create, with(json, "Origin", o, "Sec-Fetch-Site", "same-origin"), c); code != http.StatusCreated {
			t.Errorf("session POST with own Origin %q: %d", o, code)
		}
	}
	if code, _, _ := request(t, "GET", srv.URL+"/api/v1/conversations", "", "", map[string]string{"Sec-Fetch-Site": "same-origin"}, c); code != http.StatusOK {
		t.Errorf("session GET from the app: %d", code)
	}
	// Tools: the token and no Origin.
	if code, _, _ := request(t, "POST", srv.URL+"/api/v1/conversations", "", create, token); code != http.StatusCreated {
		t.Errorf("token POST without Origin: %d", code)
	}
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/events"
	ws, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer secret-token"}})
	if err != nil {
		t.Fatalf("token event stream without Origin: %v", err)
	}
	ws.Close()
	// The app's session stream without an Origin: refused (gorilla lets a
	// request without Origin through).
	if ws, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Cookie": {c.String()}}); err == nil {
		ws.Close()
		t.Fatal("the session's event stream opened without an Origin")
	}
}

// TestNoCORS: no response ever grants another origin access — not a
// preflight, not an error, not a static file.
func TestNoCORS(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	c := rtUnlock(t, srv.URL)
	for _, o := range []string{"http://evil.example", srv.URL} {
		for _, m := range []string{"OPTIONS", "GET", "POST"} {
			for _, p := range []string{"/", "/api/v1/status", "/api/v1/conversations", "/app/unlock"} {
				code, h, _ := request(t, m, srv.URL+p, "", "", map[string]string{"Origin": o,
					"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,x-medmesh-csrf"}, c)
				for k := range h {
					if strings.HasPrefix(strings.ToLower(k), "access-control-") {
						t.Errorf("%s %s Origin %s: %d with %s", m, p, o, code, k)
					}
				}
			}
		}
	}
}

// fakeClock is a settable clock for the unlock gate.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestUnlockSerialisedAndBackedOff: a local process (or a page, were the
// Host and Origin rules to fail) fires passphrase guesses in parallel:
// each one would be a 64 MiB argon2id. Only one runs at a time, the rest
// get 429 at once; after a wrong guess the next waits 1 s, doubling to a
// minute, answered 429 with Retry-After and no KDF; the right passphrase
// resets the back-off.
func TestUnlockSerialisedAndBackedOff(t *testing.T) {
	var inflight, most, runs atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	kdf := func(p []byte) bool {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if runs.Add(1) == 1 { // the first guess holds the KDF until released
			close(entered)
			<-release
		}
		return string(p) == "right"
	}
	s := New(&fakeNode{}, "secret-token", slog.New(slog.DiscardHandler), WithApp(kdf, time.Minute))
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s.gate.now = clock.Now
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	hdr := map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": srv.URL}
	try := func(pass string) (int, string) {
		t.Helper()
		code, h, _ := request(t, "POST", srv.URL+"/app/unlock", "", `{"passphrase":"`+pass+`"}`, hdr)
		return code, h.Get("Retry-After")
	}

	done := make(chan int, 1)
	go func() {
		code, _, _ := request(t, "POST", srv.URL+"/app/unlock", "", `{"passphrase":"wrong"}`, hdr)
		done <- code
	}()
	<-entered // one guess is inside the KDF
	const parallel = 32
	var wg sync.WaitGroup
	codes := make(chan string, parallel)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", srv.URL+"/app/unlock", strings.NewReader(`{"passphrase":"right"}`))
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- err.Error()
				return
			}
			resp.Body.Close()
			codes <- itoa(resp.StatusCode) + " " + resp.Header.Get("Retry-After")
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != "429 1" {
			t.Errorf("a guess made while another ran: %q, want 429 with Retry-After 1", c)
		}
	}
	close(release)
	if code := <-done; code != http.StatusUnauthorized {
		t.Fatalf("the first guess: %d", code)
	}
	if most.Load() != 1 || runs.Load() != 1 {
		t.Fatalf("%d KDF runs, at most %d at once; want 1 and 1", runs.Load(), most.Load())
	}

	// Back-off: 1, 2, 4, … 32, 60, 60 s after the n-th wrong guess in a row.
	for n, wait := range []int{1, 2, 4, 8, 16, 32, 60, 60, 60} {
		before := runs.Load()
		if code, ra := try("right"); code != http.StatusTooManyRequests || ra != itoa(wait) {
			t.Fatalf("guess right after wrong guess %d: %d Retry-After %q, want 429 %d", n+1, code, ra, wait)
		}
		clock.Add(time.Duration(wait)*time.Second - time.Millisecond)
		if code, ra := try("right"); code != http.StatusTooManyRequests || ra != "1" {
			t.Fatalf("guess just before the back-off of %d s ends: %d Retry-After %q", wait, code, ra)
		}
		if runs.Load() != before {
			t.Fatalf("guesses during the back-off ran the KDF")
		}
		clock.Add(time.Millisecond)
		if code, _ := try("wrong"); code != http.StatusUnauthorized || runs.Load() != before+1 {
			t.Fatalf("guess %d after %d s: %d, KDF runs %d→%d", n+2, wait, code, before, runs.Load())
		}
	}
	if code, ra := try("right"); code != http.StatusTooManyRequests || ra != "60" {
		t.Fatalf("at the cap: %d Retry-After %q, want 429 60", code, ra)
	}
	clock.Add(UnlockBackoffMax)
	if code, _ := try("right"); code != http.StatusOK {
		t.Fatalf("the right passphrase after the back-off: %d", code)
	}
	if code, _ := try("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("a wrong guess after a success: %d", code)
	}
	if code, ra := try("wrong"); code != http.StatusTooManyRequests || ra != "1" {
		t.Fatalf("after a success the back-off starts again at 1 s: %d Retry-After %q", code, ra)
	}
	if most.Load() != 1 {
		t.Fatalf("%d KDFs ran at once", most.Load())
	}
}

// namedNode is a fake node with a peer ID of its own.
type namedNode struct {
	fakeNode
	id string
}

func (n *namedNode) Status() node.Status { st := n.fakeNode.Status(); st.PeerID = n.id; return st }

// TestCookiePerNode: two nodes on 127.0.0.1 (the demo, or two users'
// nodes) in one browser: cookies are per host, not per port, so a shared
// cookie name would let the second unlock overwrite the first's session.
func TestCookiePerNode(t *testing.T) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar}
	var urls []string
	names := map[string]bool{}
	for _, id := range []string{"12D3KooWone", "12D3KooWtwo"} {
		s := New(&namedNode{id: id}, "secret-token", slog.New(slog.DiscardHandler),
			WithApp(func(p []byte) bool { return string(p) == "right" }, time.Minute))
		srv := httptest.NewServer(s)
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
		names[s.CookieName()] = true
		req, _ := http.NewRequest("POST", srv.URL+"/app/unlock", strings.NewReader(`{"passphrase":"right"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(csrfHeader, "1")
		req.Header.Set("Origin", srv.URL)
		resp, err := browser.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 1 {
			t.Fatalf("unlock %s: %d", id, resp.StatusCode)
		}
		c := resp.Cookies()[0]
		if c.Name != s.CookieName() || !strings.HasPrefix(c.Name, sessionCookie+"_") || !c.HttpOnly ||
			c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || c.Domain != "" {
			t.Fatalf("cookie %+v", c)
		}
	}
	if len(names) != 2 {
		t.Fatalf("two nodes share a cookie name: %v", names)
	}
	for _, u := range urls {
		resp, err := browser.Get(u + "/api/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: session lost after the other node's unlock: %d", u, resp.StatusCode)
		}
	}
}

// TestHostOnAnyAddress: bound to 0.0.0.0 (or a LAN address), the node also
// answers to the address a connection arrived on — and to no other.
func TestHostOnAnyAddress(t *testing.T) {
	s := New(&fakeNode{}, "secret-token", slog.New(slog.DiscardHandler), WithHosts("medmesh.ward7", "0.0.0.0", "[::]"))
	local := &net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 7070}
	cases := []struct {
		host, origin string
		code         int
	}{
		{"192.168.1.5:7070", "", 200},
		{"192.168.1.5", "", 200},
		{"192.168.1.5:7070", "http://192.168.1.5:7070", 200},
		{"192.168.1.5:7070", "http://localhost:7070", 200},
		{"medmesh.ward7:7070", "http://medmesh.ward7:7070", 200},
		{"192.168.1.5:7070", "http://192.168.1.5:7071", 403},
		{"192.168.1.5:7070", "http://192.168.1.6:7070", 403},
		{"192.168.1.6:7070", "", 421},
		{"192.168.1.5:7071", "", 421},
		{"0.0.0.0:7070", "", 421},
		{"[::]:7070", "", 421},
		{"[::ffff:127.0.0.1]:7070", "", 200},
		{"evil.example:7070", "http://192.168.1.5:7070", 421},
	}
	for _, c := range cases {
		req := httptest.NewRequest("GET", "/api/v1/status", nil)
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(local)))
		req.Host = c.host
		req.Header.Set("Authorization", "Bearer secret-token")
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != c.code {
			t.Errorf("Host %q Origin %q: %d, want %d", c.host, c.origin, w.Code, c.code)
		}
	}
}
