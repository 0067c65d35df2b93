// medmesh service worker (scope "/"). It keeps the app shell — the page,
// its styles and scripts, the manifest and the icons — so the installed
// app opens at once, and nothing else: no /api/ answer, no message, no
// photo, no unlock reply is ever cached or served from a cache. Requests
// for anything outside SHELL are not intercepted at all (the browser
// fetches them from the node as if no worker were installed).
//
// The shell is fetched network-first: while the node runs, the page is
// always the node's current one; the cached copy is only served when the
// node cannot be reached (it then says it is locked or offline).
const CACHE = 'medmesh-shell-v1';
const SHELL = ['/', '/index.html', '/app.css', '/pwa.css', '/app.js', '/notify.js', '/pin.js', '/roles.js', '/federated.js', '/escalate.js', '/chatui.js', '/chatui.css',
  '/manifest.webmanifest', '/icon-192.png', '/icon-512.png'];

const isShell = (url) => url.origin === self.location.origin && url.search === '' && SHELL.includes(url.pathname);

self.addEventListener('install', (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (ev) => {
  const req = ev.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || !isShell(url)) return; // network only, never cached
  ev.respondWith(fetch(req).then((resp) => {
    if (resp.ok && resp.type === 'basic') {
      const copy = resp.clone();
      caches.open(CACHE).then((c) => c.put(url.pathname, copy)).catch(() => {});
    }
    return resp;
  }, () => caches.open(CACHE).then((c) => c.match(url.pathname)).then((hit) => hit || Response.error())));
});

// A notification tapped opens (or focuses) the app; one closed by the user
// counts as dismissed: the page stops repeating the urgent alert.
self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  ev.waitUntil(self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
    for (const c of list) { c.postMessage({ type: 'medmesh-notification', action: 'clicked' }); return c.focus(); }
    return self.clients.openWindow('/');
  }));
});
self.addEventListener('notificationclose', (ev) => {
  ev.waitUntil(self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
    for (const c of list) c.postMessage({ type: 'medmesh-notification', action: 'dismissed' });
  }));
});
