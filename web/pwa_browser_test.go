package web

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/medmesh/medmesh/internal/testnet"
)

// browser is a headless Chromium tab for one test.
type browser struct {
	t   *testing.T
	tab context.Context
}

// newBrowser starts Chromium (skipping if absent, unless CI requires it)
// with script run in every document before the page's own.
func newBrowser(t *testing.T, script string) *browser {
	t.Helper()
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if requireAll() {
			t.Fatal("chromium is missing and MEDMESH_REQUIRE_ALL=1")
		}
		t.Skip("chromium not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(390, 844))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	tab, c1 := chromedp.NewContext(actx)
	t.Cleanup(c1)
	tab, c2 := context.WithTimeout(tab, 90*time.Second)
	t.Cleanup(c2)
	if script != "" {
		if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script}); err != nil {
			t.Fatalf("init script: %v", err)
		}
	}
	b := &browser{t: t, tab: tab}
	b.step("a phone's viewport", chromedp.EmulateViewport(390, 844)) // headless windows are at least 500 px wide
	return b
}

func (b *browser) step(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.tab, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval runs js (awaiting a promise) and returns its value as JSON text.
func (b *browser) eval(what, js string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.tab, chromedp.Evaluate[string](`Promise.resolve(`+js+`).then(v => JSON.stringify(v))`, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// wait polls js until it is truthy (at most 30 s).
func (b *browser) wait(what, js string) {
	b.t.Helper()
	if _, err := chromedp.Run(b.tab, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (b *browser) unlock(url, pass string) {
	b.t.Helper()
	b.step("unlock",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#pass")),
		chromedp.SendKeys(chromedp.CSS("#pass"), pass),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
}

// TestServiceWorkerInBrowser: the app registers its service worker with
// scope "/", the worker takes control and caches the shell; API answers
// read through the controlled page (status, conversations, messages, the
// PIN status) are never in Cache Storage.
func TestServiceWorkerInBrowser(t *testing.T) {
	_, srv := appServer(t, time.Hour)
	b := newBrowser(t, "")
	b.unlock(srv.URL, "right")
	b.wait("the service worker controls the page", `navigator.serviceWorker.controller !== null`)
	if scope := b.eval("scope", `navigator.serviceWorker.ready.then(r => r.scope)`); scope != `"`+srv.URL+`/"` {
		t.Fatalf("scope %s", scope)
	}
	for _, p := range []string{"/api/v1/status", "/api/v1/conversations", "/api/v1/directory", "/app/unlock/pin", "/api/v1/nope"} {
		if got := b.eval("fetch "+p, `fetch('`+p+`', {credentials: 'same-origin'}).then(r => r.status)`); got == "0" {
			t.Fatalf("%s through the worker: %s", p, got)
		}
	}
	b.wait("the shell is cached", `caches.has('medmesh-shell-v1')`)
	raw := b.eval("cache contents", `caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k).then(c => c.keys()).then(rs => rs.map(r => new URL(r.url).pathname))))).then(l => l.flat())`)
	var cached []string
	if err := json.Unmarshal([]byte(raw), &cached); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if !strings.Contains(raw, `"/app.js"`) || !strings.Contains(raw, `"/"`) {
		t.Fatalf("the shell is not cached: %v", cached)
	}
	for _, p := range cached {
		if strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/app/") {
			t.Fatalf("Cache Storage holds %s: %v", p, cached)
		}
	}
}

// notifyStub replaces the Notifications API before the app loads: each
// notification is recorded (title, options) instead of shown, permission
// starts "default" and requestPermission is counted. window.__vis fakes
// the page's visibility.
const notifyStub = `(() => {
  window.__notes = []; window.__asked = 0; window.__vis = 'visible';
  class N {
    constructor(title, opts) { this.title = title; this.opts = opts || {}; window.__notes.push(this); }
    close() { this.closed = true; }
    static requestPermission() { window.__asked++; N.permission = 'granted'; return Promise.resolve('granted'); }
  }
  N.permission = 'default';
  window.Notification = N;
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => window.__vis });
  Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__vis === 'hidden' });
})();`

// TestNotificationsContentFree: a colleague writes about a patient, by
// name and NHS number, in a conversation titled after her. While the app
// is visible nothing is raised; hidden, it raises "medmesh — N new
// messages" and, for an urgent one, "medmesh — 1 urgent message" with a
// tone, repeated until dismissed, and again until read. No notification
// carries a name, the patient, the text, the title or an ID; permission is
// asked only from the Alerts button.
func TestNotificationsContentFree(t *testing.T) {
	ca := testnet.NewCA(t)
	ap := testnet.Start(t, ca, ca.Enrol(t, "Dr Asha Okafor"))
	asha := serve(t, ap, WithApp(func(p []byte) bool { return string(p) == "right" }, time.Hour))
	bola := start(t, ca, ca.Enrol(t, "Dr Bola Adeyemi"), ap)
	testnet.Knows(t, ap, bola.Peer)
	out := asha.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Mary Jones bed 4","members":["Dr Bola Adeyemi"],"patient":{"nhs_number":"9434765919","name":"Mary Jones","birth_date":"1950-02-03"}}`)
	id := mustConv(t, out["id"].(string))
	testnet.Eventually(t, within, "bola lists the conversation", func() bool { return bola.listed(t, id) != nil })

	b := newBrowser(t, notifyStub)
	b.unlock(asha.srv.URL, "right")
	b.wait("the conversation listed", `document.querySelectorAll('#conversations li').length === 1`)
	if got := b.eval("asked", `window.__asked`); got != "0" {
		t.Fatalf("permission asked without a gesture: %s", got)
	}
	b.step("enable alerts", chromedp.Click(chromedp.CSS("#alerts")))
	b.wait("permission granted from the button", `window.__asked === 1 && Notification.permission === 'granted' && document.getElementById('alerts').hidden`)
	b.eval("fast repeat", `window.medmeshNotify.repeatMs = 200`)

	secrets := []string{"Mary", "Jones", "9434765919", "943 476 5919", "1950", "Bola", "Adeyemi", "Asha", "bed 4", "potassium",
		"6.9", "bloods", id.String(), bola.ID.String(), ap.ID.String()}
	check := func() {
		t.Helper()
		notes := b.eval("notifications", `window.__notes.map(n => ({title: n.title, opts: n.opts}))`)
		for _, s := range secrets {
			if strings.Contains(notes, s) {
				t.Fatalf("a notification carries %q: %s", s, notes)
			}
		}
	}

	// Visible: the list shows it; no notification.
	post(t, bola, id, `{"text":"Mary Jones bed 4: potassium 6.9, repeat bloods"}`)
	b.wait("the unread badge", `document.querySelector('#conversations .badge') !== null`)
	if got := b.eval("notes while visible", `window.__notes.length`); got != "0" {
		t.Fatalf("%s notifications while the app was visible", got)
	}
	// Hidden: counts only.
	b.eval("hide", `window.__vis = 'hidden'`)
	post(t, bola, id, `{"text":"Mary Jones: ECG shows peaked T waves"}`)
	b.wait("a notification", `window.__notes.length === 1`)
	if got := b.eval("first", `[window.__notes[0].title, window.__notes[0].opts.body, !!window.__notes[0].opts.requireInteraction]`); got != `["medmesh — 2 new messages","",false]` {
		t.Fatalf("notification %s", got)
	}
	check()

	post(t, bola, id, `{"text":"Mary Jones arrest risk, come now","urgent":true}`)
	b.wait("an urgent notification", `window.__notes.some(n => n.title === 'medmesh — 1 urgent message' && n.opts.requireInteraction)`)
	b.wait("the tone and two repeats", `window.medmeshNotify.tones >= 3 && window.__notes.filter(n => n.title === 'medmesh — 1 urgent message').length >= 3`)
	check()
	// The user dismisses it: the repeats stop.
	b.eval("dismiss", `(() => { const n = window.__notes.at(-1); n.onclose(); return true; })()`)
	b.wait("repeats stopped", `!window.medmeshNotify.repeating`)
	if got := b.eval("no more", `(() => { const n = window.__notes.length; return new Promise(r => setTimeout(() => r(window.__notes.length - n), 1000)); })()`); got != "0" {
		t.Fatalf("%s notifications after dismissal", got)
	}

	// Another urgent message alerts again, until the user reads it.
	post(t, bola, id, `{"text":"Mary Jones still unwell","urgent":true}`)
	b.wait("the second urgent alert repeats", `window.medmeshNotify.repeating && window.__notes.filter(n => n.title === 'medmesh — 2 urgent messages').length >= 2`)
	check()
	b.eval("show", `(() => { window.__vis = 'visible'; document.dispatchEvent(new Event('visibilitychange')); return true; })()`)
	b.step("open the chat", chromedp.Click(chromedp.CSS("#conversations li button")))
	b.wait("read: the alert stops", `!window.medmeshNotify.repeating`)
	check()
}

// TestPINInBrowser: the user unlocks with the passphrase, sets a PIN in
// the app, the inactivity lock shows the lock screen with the PIN form,
// a page on another port posts PIN guesses with the browser's cookies
// (none counts), and the PIN reopens the app. Three wrong PINs typed at
// the lock screen hide the PIN form: the passphrase is needed.
func TestPINInBrowser(t *testing.T) {
	s, srv := appServer(t, time.Hour)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><title>cat pictures</title><p>cats</p>`))
	}))
	t.Cleanup(hostile.Close)
	b := newBrowser(t, "")
	b.unlock(srv.URL, "right")
	fits := func(screen string) {
		t.Helper()
		if got := b.eval(screen, `document.documentElement.scrollWidth <= window.innerWidth`); got != "true" {
			t.Errorf("%s overflows 390 px: %s", screen, b.eval("widths", `[document.documentElement.scrollWidth, window.innerWidth]`))
		}
	}
	fits("the list with the Alerts and PIN buttons")
	b.step("set a PIN",
		chromedp.Click(chromedp.CSS("#pin-open")),
		chromedp.WaitVisible(chromedp.CSS("#new-pin")),
		chromedp.SendKeys(chromedp.CSS("#new-pin"), "2468"),
		chromedp.Click(chromedp.CSS("#pin-set button[type=submit]")),
		chromedp.WaitVisible(chromedp.Search(`//p[@id="pin-set-note"][starts-with(., "PIN set")]`)))
	fits("the PIN form")
	if dir := os.Getenv("MEDMESH_SHOTS"); dir != "" { // screenshots to look at
		if shot, err := chromedp.Run(b.tab, chromedp.FullScreenshot(100)); err == nil {
			os.WriteFile(filepath.Join(dir, "pin-set.png"), shot, 0o600)
		}
	}
	lockOut := func() {
		t.Helper()
		s.SetLockAfter(time.Nanosecond)
		b.step("the inactivity lock", chromedp.WaitVisible(chromedp.CSS("#pin-form")))
		s.SetLockAfter(time.Hour)
	}
	lockOut()

	// A page on another port of 127.0.0.1 (same site: the browser sends it
	// the PIN cookie) posts guesses.
	b.step("open the other port's page", chromedp.Navigate(hostile.URL))
	for _, pin := range []string{"0000", "1111", "2222", "3333"} {
		b.eval("hostile PIN guess", `fetch('`+srv.URL+`/app/unlock/pin', {method: 'POST', mode: 'no-cors', credentials: 'include', headers: {'Content-Type': 'text/plain'}, body: '{"pin":"`+pin+`"}'}).then(() => 'sent', () => 'failed')`)
	}
	b.step("back to the app", chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.CSS("#pin-form")))
	fits("the lock screen with the PIN form")
	b.step("unlock with the PIN",
		chromedp.SendKeys(chromedp.CSS("#pin"), "2468"),
		chromedp.Click(chromedp.CSS("#pin-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))

	lockOut()
	for i, pin := range []string{"0000", "1111", "1234"} {
		s.gate.mu.Lock()
		s.gate.until = time.Time{} // the back-off is TestPINBruteForce's; here the UI
		s.gate.mu.Unlock()
		b.step("a wrong PIN",
			chromedp.SendKeys(chromedp.CSS("#pin"), pin),
			chromedp.Click(chromedp.CSS("#pin-form button")))
		if i < 2 {
			b.wait("wrong PIN said", `document.getElementById('pin-error').textContent === 'wrong PIN'`)
			b.eval("clear", `document.getElementById('pin-error').textContent = ''`)
		}
	}
	b.wait("the PIN form gone, the passphrase asked", `document.getElementById('pin-form').hidden && document.getElementById('unlock-error').textContent.includes('passphrase')`)
	if code, _, body := request(t, "GET", srv.URL+pinPath, "", "", nil); code != 200 || !strings.Contains(body, `"pin":false`) {
		t.Fatalf("PIN status: %d %s", code, body)
	}
}

// TestForeignServiceWorkerRemoved: before the node started, a local
// process held its port and installed a service worker of its own there
// (scope "/") that serves a look-alike lock screen from the browser. Once
// the node owns the port, the browser's check of that worker's script is
// answered 404 with Clear-Site-Data "storage": the worker is gone after
// the next visit, and the node's own page and worker are back.
func TestForeignServiceWorkerRemoved(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	squatter := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/evil-sw.js" {
			w.Header().Set("Content-Type", "text/javascript")
			w.Write([]byte(`self.addEventListener('install', e => self.skipWaiting());
self.addEventListener('activate', e => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', e => { if (new URL(e.request.url).pathname === '/') e.respondWith(new Response('<p>fake lock screen</p>', {headers: {'Content-Type': 'text/html'}})); });`))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<p>squatter</p><script>navigator.serviceWorker.register('/evil-sw.js')</script>`))
	})
	var h atomic.Pointer[http.Handler]
	var first http.Handler = squatter
	h.Store(&first)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/"

	b := newBrowser(t, "")
	b.step("the squatter's page", chromedp.Navigate(url+"x"))
	b.wait("the squatter's worker controls the origin", `navigator.serviceWorker.controller !== null`)
	b.step("its lock screen", chromedp.Navigate(url))
	if body := b.eval("body", `document.body.innerText`); !strings.Contains(body, "fake lock screen") {
		t.Fatalf("the squatter's worker did not take over (the test proves nothing): %s", body)
	}

	// The node starts on the same port.
	s, _ := appServer(t, time.Hour)
	var node http.Handler = s
	h.Store(&node)
	deadline := time.Now().Add(60 * time.Second)
	for {
		b.step("visit the app", chromedp.Navigate(url))
		if strings.Contains(b.eval("body", `document.body.innerText`), "This device is locked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the squatter's worker still serves its lock screen")
		}
		// Chromium checks a worker's script once it has been idle a moment
		// after a visit.
		b.eval("let the worker go idle", `new Promise(r => setTimeout(() => r(1), 3000))`)
	}
	b.wait("only the node's worker", `navigator.serviceWorker.controller !== null && navigator.serviceWorker.controller.scriptURL.endsWith('/sw.js')`)
	if regs := b.eval("registrations", `navigator.serviceWorker.getRegistrations().then(rs => rs.map(r => (r.active || r.waiting || r.installing).scriptURL))`); strings.Contains(regs, "evil") {
		t.Fatalf("registrations %s", regs)
	}
}
