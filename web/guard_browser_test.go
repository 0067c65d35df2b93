package web

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestHostilePagesInBrowser: the attacks of guard_test.go from a real
// browser (headless Chromium) that has the app unlocked. A DNS-rebinding
// page (evil.example resolving to 127.0.0.1, made with Chromium's host
// resolver rules) guesses passphrases and reads the API as its own origin;
// a page on another port of 127.0.0.1 (which receives the session cookie)
// posts with the cookie and opens the event stream. None of it reaches a
// handler, and the app stays unlocked for its user.
func TestHostilePagesInBrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	s, srv := appServer(t, time.Hour)
	var kdf counted
	s.unlock = kdf.unlock
	port := strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><title>cat pictures</title><p>cats</p>`))
	}))
	t.Cleanup(hostile.Close)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("host-resolver-rules", "MAP evil.example 127.0.0.1"),
		chromedp.Flag("disable-features", "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(412, 915))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	tab, c1 := chromedp.NewContext(actx)
	t.Cleanup(c1)
	tab, c2 := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(c2)
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string) string {
		t.Helper()
		v, err := chromedp.Run(tab, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	step("unlock",
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), "right"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))

	// DNS rebinding: to the browser this is evil.example's own origin.
	step("open the rebound name", chromedp.Navigate("http://evil.example:"+port+"/"))
	if body := eval("page", `Promise.resolve(document.body.innerText)`); !strings.Contains(body, ErrUnknownHost.Error()) {
		t.Fatalf("the rebound name serves: %.200q", body)
	}
	for _, js := range []string{
		`fetch('/app/unlock', {method: 'POST', headers: {'X-Medmesh-CSRF': '1', 'Content-Type': 'application/json'}, body: '{"passphrase":"guess"}'}).then(r => String(r.status))`,
		`fetch('/api/v1/status').then(r => String(r.status))`,
		`fetch('/api/v1/conversations', {method: 'POST', headers: {'X-Medmesh-CSRF': '1'}, body: '{"title":"pwned","members":["asha"]}'}).then(r => String(r.status))`,
	} {
		if got := eval("rebinding request", js); got != "421" {
			t.Errorf("%s: %s, want 421", js, got)
		}
	}

	// A page on another port of 127.0.0.1: same site, other origin.
	step("open the other port's page", chromedp.Navigate(hostile.URL))
	app := "http://127.0.0.1:" + port
	eval("no-cors post with the cookie", `fetch('`+app+`/api/v1/conversations', {method: 'POST', mode: 'no-cors', credentials: 'include', body: '{"title":"pwned","members":["asha"]}'}).then(() => 'sent', e => 'failed')`)
	eval("no-cors unlock", `fetch('`+app+`/app/unlock', {method: 'POST', mode: 'no-cors', body: '{"passphrase":"guess"}'}).then(() => 'sent', e => 'failed')`)
	if got := eval("read with the cookie", `fetch('`+app+`/api/v1/conversations', {credentials: 'include'}).then(r => r.text(), e => 'blocked')`); got != "blocked" {
		t.Errorf("the other port's page read the API: %.200q", got)
	}
	ws := eval("event stream", `new Promise(done => { const ws = new WebSocket('ws://127.0.0.1:`+port+`/api/v1/events');
		ws.onopen = () => done('open'); ws.onerror = () => done('refused'); ws.onclose = () => done('refused'); })`)
	if ws != "refused" {
		t.Errorf("the other port's page opened the event stream: %s", ws)
	}

	if n := kdf.runs.Load(); n != 1 {
		t.Errorf("hostile pages ran the passphrase KDF: %d runs, want only the user's 1", n-1)
	}
	code, _, body := request(t, "GET", srv.URL+"/api/v1/conversations", "", "", map[string]string{"Authorization": "Bearer secret-token"})
	if code != 200 || strings.Contains(body, "pwned") {
		t.Errorf("a hostile page created a conversation: %d %.200s", code, body)
	}
	step("the app is still unlocked for its user",
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
}
