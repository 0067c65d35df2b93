// Package web serves a node's local API and its web app: JSON over HTTP on
// a loopback address, every API request authorised by the bearer token the
// node wrote to DEV/api.token or by the app's session cookie. Errors are
// JSON {"error": "..."} with a fitting status, and a panic in a handler
// becomes a 500, never a crash. It never logs request bodies (they may hold
// patient data), the token, passphrases or session IDs.
//
// # Patients
//
// A conversation may be about a patient: POST /api/v1/conversations takes
// patient {nhs_number, name, birth_date}, PUT and DELETE
// /api/v1/conversations/{id}/patient correct and clear it, and list and
// single views (GET /api/v1/conversations[/{id}]) show it. An NHS number
// failing its check digit, or a birth date that is not a past YYYY-MM-DD
// date, is a 400 whose error names the field, never the value. Search by
// patient (?patient=QUERY on the list) runs here, over what this device
// has decrypted; nothing about it leaves the device.
//
// # Who may talk to it
//
// Every request, before any handler runs (static files, unlock, API,
// WebSocket), passes these checks:
//
//   - Host: one of 127.0.0.1, localhost, [::1], the address the connection
//     arrived on (the LAN address when bound to one or to 0.0.0.0) or a
//     name given with WithHosts (Serve adds the host of its address); with
//     no port or the port the connection arrived on. Anything else is 421:
//     a DNS-rebinding page reaches us under its own name.
//   - Origin: when present it must be the node's own, http://HOST:PORT for
//     one of those hosts and the connection's port; anything else ("null",
//     https, another port, another name) is 403, with a token or without.
//   - A request authenticated by the session cookie that changes state
//     (any method but GET/HEAD/OPTIONS) or opens the event stream must carry
//     the node's Origin (403 without); one that changes state must carry the
//     X-Medmesh-CSRF header too. A request that a browser marks
//     Sec-Fetch-Site other than same-origin or none gets no session (401).
//   - A request with the bearer token needs no Origin (tools, scripts, the
//     acceptance checks send none).
//   - POST /app/unlock needs the node's Origin and the CSRF header.
//
// No response carries CORS headers: no other origin may read an answer.
//
// # Unlock limits
//
// A passphrase check is one argon2id (64 MiB for a real device key). Checks
// run one at a time; an attempt while one runs is answered 429 at once with
// Retry-After: 1 (nothing queues). After a wrong passphrase the next check
// waits UnlockBackoff (1 s), doubling with each further wrong passphrase in
// a row up to UnlockBackoffMax (60 s); attempts before then are 429 with
// Retry-After, without a KDF. The right passphrase resets it. The count is
// per node, not per client (every client of a loopback API comes from the
// same address): a local process guessing also delays the user's unlock by
// up to a minute.
//
// # Quick unlock PIN
//
// After unlocking with the passphrase, the app's user may set a PIN of
// 4–8 digits (POST /api/v1/unlock/pin {"pin": "2468"}, from that session
// only: not with the bearer token, not from a session the PIN opened;
// DELETE clears it). It reopens the app after the inactivity lock (POST
// /app/unlock/pin {"pin"}, the PIN variant of POST /app/unlock, with the
// same Origin and CSRF rules; GET /app/unlock/pin says {"pin": true} if
// this browser has one). It never opens data at rest: the node is already
// running, its keys unwrapped by the passphrase at start. It is kept in
// memory only, as HMAC-SHA256 under a random key made when it is set (the
// PIN itself is not kept, nor logged, nor written), and works only in the
// browser that set it (an HttpOnly, SameSite=Strict cookie sent only to
// /app/unlock/pin binds it; an attempt without it is 409 and not counted;
// like the session cookie, a server on another port of the same host can
// be sent it, so it only narrows who may guess).
// Wrong PINs go through the passphrase's gate (one at a time, the same
// back-off, which a wrong PIN extends for the passphrase too); the third
// wrong PIN since it was set clears it. A restart, a lock by hand (POST
// /app/lock) or the third wrong PIN means the passphrase again: 409 with
// {"pin": false}. Each step is in the audit trail (pin_set, pin_unlocked,
// pin_failed, pin_cleared).
//
// # Installable app and notifications
//
// The app is a PWA: /manifest.webmanifest (application/manifest+json),
// icons /icon-192.png and /icon-512.png (drawn by internal/appicon; go
// generate ./web), and a service worker /sw.js with scope "/" that caches
// the app shell only (shellFiles) and intercepts nothing else: no /api/
// answer, message, photo or unlock reply is ever in its cache. They are
// static files behind the same guard and headers as the page (the CSP's
// default-src 'self' covers the worker and the manifest). Browsers allow
// a service worker and notifications on 127.0.0.1 and localhost, not on
// a plain-http LAN address, where the app works without them. A browser's
// check of any other worker script (Service-Worker: script) is 404 with
// Clear-Site-Data "storage": a worker that a process squatting the port
// before the node started installed there, to keep serving its look-alike
// lock screen, is dropped once the browser checks it (Chromium: a moment
// after the first visit; that first visit still sees the fake).
// Notifications (app/notify.js) are raised only while the page is hidden
// and say only how many messages are unread ("medmesh — 3 new messages",
// "medmesh — 1 urgent message"): no name, patient, text, title or ID.
// Urgent ones sound and repeat every 30 s until read or dismissed. They
// need the page open: once the app locks, the event stream closes and
// nothing more is notified.
//
// # The chat screen
//
// A message's actions (reply, react, edit and delete one's own,
// acknowledge an urgent message from someone else, escalate one's own
// that is due) are in one action sheet (app/chatui.js), opened by the
// bubble's "⋯" button, a right-click or a half-second press-and-hold;
// only those the message allows are offered. Search within a chat runs in
// the page over the messages it holds: the query is never sent. Photos
// are fetched from the node and drawn into canvases — no <img src>, no
// object URL, no link, context menu and drag disabled — so the page makes
// no address another tab could fetch and offers nothing to save (a
// screenshot cannot be prevented). The app keeps nothing of a message in
// Web Storage, IndexedDB or Cache Storage.
//
// # The session cookie
//
// The app's session is a random ID in a cookie named medmesh_session_<12
// hex digits of SHA-256 of the peer ID>, HttpOnly, SameSite=Strict, Path=/,
// no Domain, not Secure (plain http on loopback). Browsers keep cookies per
// host, not per port, so every node on 127.0.0.1 has its own name (several
// demo nodes in one browser keep their sessions), and every other server on
// the same host name — any local port — receives the cookie. The Origin,
// CSRF-header and Sec-Fetch-Site rules keep a page on another port from
// using it; a local process that reads it can use it until the app locks
// (DefaultLockAfter without use, or POST /app/lock).
//
// # The port
//
// Serve fails if its address is taken, so a running node owns its port;
// on 127.0.0.1 it also holds [::1] on the same port, where browsers send
// http://localhost:PORT first (ErrLoopbackTaken if another process has
// it). Before the node starts, any local user may bind the port and serve
// a look-alike lock screen: App.URL and `medmesh run` print the bound
// 127.0.0.1 address, and the app is only ever the one that the node's own
// start-up printed.
package web
