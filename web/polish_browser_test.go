package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/rota"
)

// enrolAs is testnet's Enrol with the certificate's details in full
// (department, staff ID), as a trust's CA issues them.
func enrolAs(t *testing.T, ca *testnet.CA, d identity.Details, roles ...string) *testnet.Identity {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.CreateCSR(k, d)
	if err != nil {
		t.Fatal(err)
	}
	r, err := identity.ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.CA.Sign(r, identity.SignOptions{Roles: roles}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := ca.CA.Bundle(cert)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := identity.ParseCertificates(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return &testnet.Identity{Name: d.StaffID, Key: k, Chain: chain, Store: dssync.MutexWrap(ds.NewMapDatastore())}
}

// spyScript runs before the app in every document: it records every
// request the page makes (URL and body: fetch, XHR, WebSocket, beacon)
// and counts object URLs made, so a test can check what left the page.
const spyScript = `(() => {
  const sent = window.__sent = [];
  const rec = (v) => { try { if (v != null) sent.push(typeof v === 'string' ? v : (v instanceof URL ? v.href : (v.url || '[binary]'))); } catch {} };
  const f = window.fetch;
  window.fetch = function (input, init) { rec(input); if (init && init.body) rec(init.body); return f.apply(this, arguments); };
  const ws = WebSocket.prototype.send;
  WebSocket.prototype.send = function (d) { rec(d); return ws.apply(this, arguments); };
  const xo = XMLHttpRequest.prototype.open, xs = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (m, u) { rec(u); return xo.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function (b) { rec(b); return xs.apply(this, arguments); };
  if (navigator.sendBeacon) { const sb = navigator.sendBeacon.bind(navigator); navigator.sendBeacon = (u, d) => { rec(u); rec(d); return sb(u, d); }; }
  window.__objectURLs = 0;
  const cu = URL.createObjectURL;
  URL.createObjectURL = function () { window.__objectURLs++; return cu.apply(this, arguments); };
})();`

// overflowJS lists what sticks out past the right edge of the viewport:
// the document wider than the window, or any visible element whose box
// ends right of it.
const overflowJS = `(() => {
  const w = window.innerWidth, out = [];
  const de = document.documentElement;
  if (de.scrollWidth > w) out.push('document scrollWidth ' + de.scrollWidth + ' > ' + w);
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (getComputedStyle(e).visibility === 'hidden') continue;
    if (r.right > w + 1) out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\s+/).join('.') : '') + ' right=' + Math.round(r.right) + ' ' + JSON.stringify((e.textContent || '').slice(0, 40)));
  }
  return out.slice(0, 12);
})()`

// TestMessengerPolishInBrowser visits every screen of the app on a
// 390×844 phone (mobile emulation) — unlock, chats, a chat with a photo
// and an urgent message, the message action sheet, search in the chat,
// the full-screen photo, group info, new chat, on call, the PIN form —
// asserting on each that nothing overflows horizontally, and saving a
// screenshot of each (into $MEDMESH_SCREENSHOTS if set). On the way it
// checks the behaviours: the action sheet (⋯, right-click, keyboard,
// press-and-hold; only the actions a message allows; no row of buttons
// under bubbles), the unread divider and its count, search (found,
// counted, stepped, never sent anywhere), names with department and
// roles, and a photo viewer with no download path.
func TestMessengerPolishInBrowser(t *testing.T) {
	ca := testnet.NewCA(t)
	aid := enrolAs(t, ca, identity.Details{Name: "Dr Asha Khan", StaffID: "asha", Department: "Cardiology"}, "cardio-registrar", rota.AdminRole)
	ap := testnet.Start(t, ca, aid)
	asha := serve(t, ap, WithRoles(ap.D), WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour))
	bola := start(t, ca, enrolAs(t, ca, identity.Details{Name: "Nurse Bola Ade", StaffID: "bola", Department: "Ward 7"}, "nurse"), asha.Peer)
	chidi := start(t, ca, enrolAs(t, ca, identity.Details{Name: "Dr Chidi Obi", StaffID: "chidi", Department: "Cardiology"}, "cardio-consultant"), asha.Peer)
	testnet.Knows(t, asha.Peer, bola.Peer, chidi.Peer)

	// Two chats: the ward's, about a patient, and a quiet one.
	out := asha.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"Ward 7 handover","members":["bola","chidi"],"patient":{"nhs_number":"9434765919","name":"Jane Doe","birth_date":"1950-01-01"}}`)
	id, err := chat.ParseConversationID(out["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	asha.must(t, http.StatusCreated, "POST", "/api/v1/conversations", `{"title":"Night team","members":["chidi"]}`)
	own := post(t, asha, id, `{"text":"Morning all, handover at 8. Obs chart: WARD7-BED4-OBSERVATIONS-2026-11-30-0800-FULL-SET"}`)
	testnet.Eventually(t, within, "bola is in the chat", func() bool { return testnet.Joined(bola.Peer, id, 3) })
	obs := post(t, bola, id, `{"text":"Bed 4 obs stable overnight"}`)
	code, _, raw := bola.do(t, "POST", convPath(id)+"/photos?caption="+url.QueryEscape("wound, bed 4"), testImage(t, "jpeg"))
	if code != http.StatusCreated {
		t.Fatalf("photo: %d %s", code, raw)
	}
	var ph map[string]any
	if err := json.Unmarshal(raw, &ph); err != nil {
		t.Fatal(err)
	}
	photo := ph["id"].(string)
	urgent := post(t, bola, id, `{"text":"Bed 9 BP 70/40, please review","urgent":true,"ack_within":600}`)
	for _, m := range []string{obs, photo, urgent} {
		waitMessage(t, asha, id, m, "bola's messages, the photo whole", func(m apiMessage) bool {
			p, _ := m["photo"].(map[string]any)
			return m["photo"] == nil || p["ready"] == true
		})
	}
	asha.must(t, http.StatusOK, "POST", "/api/v1/roles", `{"action":"define","role":"cardio-reg","name":"Cardiology registrar on call","requires":"cardio-registrar"}`)
	asha.must(t, http.StatusOK, "POST", "/api/v1/roles", `{"action":"take","role":"cardio-reg"}`)

	dir := os.Getenv("MEDMESH_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, spyScript)
	b.step("a phone: mobile emulation with touch", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(1)))
	screens := 0
	screen := func(name string) {
		t.Helper()
		var bad []string
		if err := json.Unmarshal([]byte(b.eval("overflow on "+name, overflowJS)), &bad); err != nil {
			t.Fatal(err)
		}
		if len(bad) > 0 {
			t.Errorf("%s overflows a 390-px phone: %s", name, strings.Join(bad, "; "))
		}
		png, err := chromedp.Run(b.tab, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		screens++
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d-%s.png", screens, name)), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	is := func(what, js, want string) {
		t.Helper()
		if got := b.eval(what, js); got != want {
			t.Fatalf("%s: %s, want %s", what, got, want)
		}
	}
	bubble := func(msg string) string { return `document.querySelector('#messages li.msg[data-key="` + msg + `"]')` }
	sheetOpen := `!document.getElementById('action-sheet')?.hidden`
	actionsShown := `[...document.querySelectorAll('#action-menu button')].map(b => b.dataset.action)`

	// Unlock.
	b.step("the lock screen", chromedp.Navigate(asha.srv.URL), chromedp.WaitVisible(chromedp.CSS("#pass")))
	is("viewport", `[innerWidth, innerHeight]`, `[390,844]`)
	screen("unlock")
	b.step("unlock",
		chromedp.SendKeys(chromedp.CSS("#pass"), "device-secret"),
		chromedp.Click(chromedp.CSS("#unlock-form button")),
		chromedp.WaitVisible(chromedp.CSS("#list-view")))
	b.wait("both chats listed", `document.querySelectorAll('#conversations li').length === 2`)
	screen("chats")

	// The chat: the unread divider above bola's first message, three unread.
	b.step("open the ward's chat", chromedp.Click(chromedp.Search(`//ul[@id="conversations"]//button[contains(., "Ward 7 handover")]`)))
	b.wait("the messages and the divider", `document.querySelectorAll('#messages li.msg').length === 4 && document.querySelector('#messages .unread-divider')`)
	is("divider", `document.querySelector('#messages .unread-divider').textContent`, `"3 unread messages"`)
	is("divider above the first unread", `document.querySelector('#messages .unread-divider').nextElementSibling.dataset.key`, `"`+obs+`"`)
	is("sender line: name, department, role", bubble(obs)+`.querySelector('.who').textContent`, `"Nurse Bola Ade · Ward 7 · nurse"`)
	is("no sender line on one's own message", bubble(own)+`.querySelector('.who')`, `null`)
	b.wait("the thumbnail drawn", bubble(photo)+`?.querySelector('canvas.thumb')?.dataset.drawn`)
	is("no buttons under the bubbles but ⋯ (and an urgent message's Acknowledge)",
		`document.querySelectorAll('#messages li.msg button:not(.more):not(.ack):not(.escalate), #messages .actions').length`, `0`)
	is("one ⋯ per bubble", `[...document.querySelectorAll('#messages li.msg')].every(li => li.querySelectorAll('button.more').length === 1)`, `true`)
	screen("chat")

	// The divider stays while the chat is open, as it was: bola's
	// messages are read now, and a new one arrives.
	testnet.Eventually(t, within, "the app marked bola's messages read", func() bool {
		m := asha.message(t, id, obs)
		return m["state"] == chat.StateRead
	})
	thanks := post(t, bola, id, `{"text":"Thanks <img src=x onerror=\"window.__pwned=1\">"}`) // text, never markup
	b.wait("the new message", bubble(thanks))
	is("the divider stays, its count as it was", `[document.querySelectorAll('#messages .unread-divider').length, document.querySelector('#messages .unread-divider').textContent, document.querySelector('#messages .unread-divider').nextElementSibling.dataset.key]`,
		`[1,"3 unread messages","`+obs+`"]`)

	// The action sheet from ⋯: an urgent message to me can be acknowledged;
	// someone else's message cannot be edited or deleted.
	b.step("⋯ on the urgent message", chromedp.Click(chromedp.CSS(`#messages li.msg[data-key="`+urgent+`"] button.more`)))
	b.wait("the sheet", sheetOpen)
	is("actions on bola's urgent message", actionsShown, `["ack","reply","react 👍","react ✅","react ❤️"]`)
	is("focus in the sheet", `document.activeElement.dataset.action`, `"ack"`)
	screen("message-actions")
	b.step("Escape closes it", chromedp.KeyEvent(kb.Escape))
	b.wait("the sheet closed", `!(`+sheetOpen+`)`)
	is("focus back on ⋯", `document.activeElement === `+bubble(urgent)+`.querySelector('button.more')`, `true`)

	// By keyboard on my own message: edit and delete, no acknowledge.
	b.step("Enter on ⋯ of my message", chromedp.Focus(chromedp.CSS(`#messages li.msg[data-key="`+own+`"] button.more`)), chromedp.KeyEvent("\r"))
	b.wait("the sheet", sheetOpen)
	is("actions on my message", actionsShown, `["reply","react 👍","react ✅","react ❤️","edit","delete"]`)
	b.step("Escape", chromedp.KeyEvent(kb.Escape))
	b.wait("the sheet closed", `!(`+sheetOpen+`)`)

	// A right-click on a bubble opens it; a tap beside it closes it.
	nodes, err := chromedp.Run(b.tab, chromedp.Nodes(chromedp.CSS(`#messages li.msg[data-key="`+obs+`"] > [data-key="body"]`)))
	if err != nil || len(nodes) != 1 {
		t.Fatalf("bola's bubble: %v %d", err, len(nodes))
	}
	b.step("right-click", chromedp.MouseClickNode(nodes[0], chromedp.ButtonType(input.MouseButtonRight)))
	b.wait("the sheet", sheetOpen)
	is("actions on bola's message", actionsShown, `["reply","react 👍","react ✅","react ❤️"]`)
	b.step("tap beside the sheet", chromedp.MouseClickXY(195, 40))
	b.wait("the sheet closed", `!(`+sheetOpen+`)`)

	// Press and hold: a short press opens nothing; a hold of half a second does.
	touch := func(typ string) string {
		return bubble(urgent) + `.querySelector('[data-key="body"]').dispatchEvent(new PointerEvent('` + typ + `', {bubbles: true, pointerType: 'touch', isPrimary: true, clientX: 60, clientY: 300}))`
	}
	is("a short press", `new Promise(r => { `+touch("pointerdown")+`; `+touch("pointerup")+`; setTimeout(() => r(`+sheetOpen+`), 800); })`, `false`)
	b.eval("press and hold", touch("pointerdown"))
	b.wait("the sheet after the hold", sheetOpen)
	b.eval("release", touch("pointerup"))
	is("the hold's sheet", actionsShown, `["ack","reply","react 👍","react ✅","react ❤️"]`)
	b.step("acknowledge from the sheet", chromedp.Click(chromedp.CSS(`#action-menu button[data-action="ack"]`)))
	waitMessage(t, asha, id, urgent, "acknowledged from the sheet", func(m apiMessage) bool { return m["state"] == chat.StateAcknowledged })
	b.wait("acknowledged: no Acknowledge button left", bubble(urgent)+`.querySelector('button.ack') === null`)

	// Search in the chat: found, counted, stepped; the query goes nowhere.
	b.step("search", chromedp.Click(chromedp.CSS("#chat-search-open")), chromedp.WaitVisible(chromedp.CSS("#chat-search-input")),
		chromedp.SendKeys(chromedp.CSS("#chat-search-input"), "bed 4"))
	b.wait("two matches", `document.getElementById('chat-search-count').textContent === '2 of 2'`)
	is("the newest is current", `document.querySelector('#messages li.msg[data-hit="current"]').dataset.key`, `"`+photo+`"`)
	is("matches highlighted", `[...document.querySelectorAll('#messages mark')].map(m => m.textContent)`, `["Bed 4","bed 4"]`)
	b.step("previous", chromedp.Click(chromedp.CSS("#chat-search-prev")))
	b.wait("1 of 2", `document.getElementById('chat-search-count').textContent === '1 of 2'`)
	is("the older is current", `document.querySelector('#messages li.msg[data-hit="current"]').dataset.key`, `"`+obs+`"`)
	screen("search")
	b.step("a query with no match", chromedp.SendKeys(chromedp.CSS("#chat-search-input"), "zzqx"))
	b.wait("no matches", `document.getElementById('chat-search-count').textContent === 'No matches'`)
	is("the query was never sent", `window.__sent.filter(s => /bed 4|bed%204|bed\+4|zzqx/i.test(s))`, `[]`)
	b.eval("a query for markup", `(() => { const i = document.getElementById('chat-search-input'); i.value = '<img'; return i.dispatchEvent(new Event('input')); })()`)
	b.wait("one match", `document.getElementById('chat-search-count').textContent === '1 of 1'`)
	is("markup in a message is text, highlighted as text", `[document.querySelectorAll('#messages img').length, window.__pwned === undefined, [...document.querySelectorAll('#messages mark')].map(m => m.textContent), `+bubble(thanks)+`.querySelector('[data-key="body"]').textContent]`,
		`[0,true,["<img"],"Thanks <img src=x onerror=\"window.__pwned=1\">"]`)
	b.step("close the search", chromedp.Click(chromedp.CSS("#chat-search-close")))
	is("highlights gone", `document.querySelectorAll('#messages mark, #messages li[data-hit]').length`, `0`)

	// A right-click on a photo opens the message's sheet, never the
	// browser's image menu ("Save image as…").
	is("right-click on the thumbnail", `(() => { const t = document.querySelector('canvas.thumb');
		return [!t.dispatchEvent(new MouseEvent('contextmenu', {bubbles: true, cancelable: true})), !t.dispatchEvent(new MouseEvent('dragstart', {bubbles: true, cancelable: true})), t.draggable]; })()`,
		`[true,true,false]`)
	b.wait("the photo message's sheet", sheetOpen)
	is("actions on bola's photo", actionsShown, `["reply","react 👍","react ✅","react ❤️"]`)
	b.step("Escape", chromedp.KeyEvent(kb.Escape))
	b.wait("the sheet closed", `!(`+sheetOpen+`)`)

	// The photo, full screen, with no download path.
	b.step("tap the photo", chromedp.Click(chromedp.CSS(`#messages li.msg[data-key="`+photo+`"] canvas.thumb`)))
	b.wait("the photo drawn full screen", `document.getElementById('viewer').dataset.ready === '1'`)
	is("the viewer covers the screen", `(() => { const r = document.getElementById('viewer').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`, `[0,0,390,844]`)
	is("the full photo's pixels", `[document.getElementById('viewer-canvas').width, document.getElementById('viewer-canvas').height]`, `[640,400]`)
	is("no download path", `[document.querySelectorAll('a[download], a[href*="/photo"], img').length, window.__objectURLs,
		[...document.querySelectorAll('*')].filter(e => /url\(/.test(getComputedStyle(e).backgroundImage)).length]`, `[0,0,0]`)
	is("no context menu, no drag, no selection", `(() => { const c = document.getElementById('viewer-canvas');
		const no = (e, typ) => !e.dispatchEvent(new MouseEvent(typ, {bubbles: true, cancelable: true}));
		return [no(c, 'contextmenu'), no(c, 'dragstart'), getComputedStyle(c).userSelect, getComputedStyle(document.getElementById('viewer')).userSelect, c.draggable]; })()`,
		`[true,true,"none","none",false]`)
	is("the sheet stays closed over the photo", sheetOpen, `false`)
	screen("photo")
	b.step("Escape closes the photo", chromedp.KeyEvent(kb.Escape))
	b.wait("closed, its pixels dropped", `document.getElementById('viewer').hidden && document.getElementById('viewer-canvas').width === 0`)
	b.step("× closes it", chromedp.Click(chromedp.CSS(`#messages li.msg[data-key="`+photo+`"] canvas.thumb`)),
		chromedp.WaitVisible(chromedp.CSS("#viewer")), chromedp.Click(chromedp.CSS("#viewer-close")))
	b.wait("closed", `document.getElementById('viewer').hidden`)
	b.step("a tap on the photo closes it", chromedp.Click(chromedp.CSS(`#messages li.msg[data-key="`+photo+`"] canvas.thumb`)))
	b.wait("open", `document.getElementById('viewer').dataset.ready === '1'`)
	b.step("tap", chromedp.Click(chromedp.CSS("#viewer-canvas")))
	b.wait("closed", `document.getElementById('viewer').hidden`)

	// Group info: members named with department and roles.
	b.step("group info", chromedp.Click(chromedp.CSS("#info")), chromedp.WaitVisible(chromedp.CSS("#group")))
	b.wait("members named in full", `[...document.querySelectorAll('#members li span')].map(s => s.textContent).sort().join('|') === 'Dr Chidi Obi · Cardiology · cardio-consultant|Nurse Bola Ade · Ward 7 · nurse|You · group admin'`)
	is("an admin may remove the others", `[...document.querySelectorAll('#members li button')].map(b => b.getAttribute('aria-label')).sort()`, `["Remove Dr Chidi Obi","Remove Nurse Bola Ade"]`)
	screen("group-info")
	b.step("close group info", chromedp.Click(chromedp.CSS("#info")))

	// Leaving the chat drops the divider; back in, nothing is unread.
	waitMessage(t, asha, id, thanks, "the app marked the last message read", func(m apiMessage) bool { return m["state"] == chat.StateRead })
	b.step("back", chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#list-view")))
	b.step("open it again", chromedp.Click(chromedp.Search(`//ul[@id="conversations"]//button[contains(., "Ward 7 handover")]`)))
	b.wait("the messages", bubble(thanks))
	is("no divider when nothing was unread", `document.querySelectorAll('#messages .unread-divider').length`, `0`)
	b.step("back", chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#list-view")))

	// New chat: colleagues with department and roles.
	b.step("new chat", chromedp.Click(chromedp.CSS("#new-chat")), chromedp.WaitVisible(chromedp.CSS("#new-view")))
	b.wait("the directory names colleagues in full", `[...document.querySelectorAll('#directory li span')].some(s => s.textContent === 'Dr Chidi Obi · Cardiology · cardio-consultant')`)
	b.wait("the on-call roles offered", `document.querySelectorAll('#on-call-roles li').length === 2`)
	screen("new-chat")
	b.step("back", chromedp.Click(chromedp.CSS("#new-back")), chromedp.WaitVisible(chromedp.CSS("#list-view")))

	// On call.
	b.step("on call", chromedp.Click(chromedp.CSS("#open-roles")), chromedp.WaitVisible(chromedp.CSS("#roles-view")))
	b.wait("the role and its holder", `document.querySelector('#roles li[data-role="cardio-reg"] .holders')?.textContent === 'On call: Dr Asha Khan'`)
	screen("on-call")
	b.step("back", chromedp.Click(chromedp.CSS("#roles-back")), chromedp.WaitVisible(chromedp.CSS("#list-view")))

	// Settings: the quick-unlock PIN.
	b.step("PIN", chromedp.Click(chromedp.CSS("#pin-open")), chromedp.WaitVisible(chromedp.CSS("#pin-set")))
	screen("pin")
	b.step("cancel", chromedp.Click(chromedp.CSS("#pin-cancel")))

	// Nothing of a message or a photo is kept by the browser.
	is("no web storage, no IndexedDB", `indexedDB.databases().then(d => [localStorage.length, sessionStorage.length, d.length])`, `[0,0,0]`)
	is("Cache Storage holds the shell only", `caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k).then(c => c.keys())))).then(l => l.flat().map(r => new URL(r.url)).filter(u => u.pathname.startsWith('/api/') || u.search !== '').length)`, `0`)
}

// TestEscalateFromSheetInBrowser: the sender of an urgent message nobody
// acknowledged in time finds "Escalate…" in its action sheet (beside
// edit and delete, without "Acknowledge", which is the recipients' —
// TestMessengerPolishInBrowser checks a recipient's sheet has no Escalate).
func TestEscalateFromSheetInBrowser(t *testing.T) {
	app := WithApp(func(p []byte) bool { return string(p) == "device-secret" }, time.Hour)
	clock, a, b, _, id := escalationWard(t, app)
	msg := post(t, a, id, `{"text":"bed 4 desaturating","urgent":true,"ack_within":30}`)
	waitMessage(t, b, id, msg, "bola has it", func(apiMessage) bool { return true })
	clock.Add(31 * time.Second)
	a.C.CheckEscalations()
	waitMessage(t, a, id, msg, "due or waiting for a choice", func(m apiMessage) bool {
		e, _ := m["escalation"].(map[string]any)
		return e["state"] == "due" || e["state"] == "choose"
	})

	br := newBrowser(t, "")
	br.unlock(a.srv.URL, "device-secret")
	br.step("open the chat", chromedp.WaitVisible(chromedp.CSS("#conversations li button")), chromedp.Click(chromedp.CSS("#conversations li button")))
	br.step("⋯ on the urgent message", chromedp.Click(chromedp.CSS(`#messages li.msg[data-key="`+msg+`"] button.more`)))
	br.wait("the sheet", `!document.getElementById('action-sheet').hidden`)
	if got := br.eval("actions", `[...document.querySelectorAll('#action-menu button')].map(b => b.dataset.action)`); got != `["escalate","reply","react 👍","react ✅","react ❤️","edit","delete"]` {
		t.Fatalf("the sender's sheet: %s", got)
	}
}
