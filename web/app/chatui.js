// medmesh web app: the chat screen's messenger polish — one action sheet
// for a message (opened by its "⋯" button, a right-click, or a
// press-and-hold), the search within the open conversation, photos drawn
// into canvases and the full-screen photo viewer. Plain JS module, no
// build step; text is only ever set as text.
//
// Nothing here stores or sends anything: the search runs over the
// messages the app already holds and its query never leaves the page;
// photos are fetched from this device's node and drawn from a decoded
// bitmap — no <img src>, no object URL, no link — so there is no address
// another tab or page could fetch, and nothing to "save as" or drag.
// (A screenshot cannot be prevented by a web page.)

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- The action sheet ----

let sheet = null, opener = null;

function buildSheet() {
  const back = el('div', 'sheet-back'); back.id = 'action-sheet'; back.hidden = true;
  const menu = el('div', 'sheet'); menu.id = 'action-menu';
  menu.setAttribute('role', 'menu'); menu.setAttribute('aria-label', 'Message actions');
  back.append(menu);
  back.addEventListener('click', (e) => { if (e.target === back) closeMenu(); });
  back.addEventListener('contextmenu', (e) => e.preventDefault());
  menu.addEventListener('keydown', (e) => {
    const items = [...menu.querySelectorAll('button')];
    const i = items.indexOf(document.activeElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const n = items.length;
      items[((i < 0 ? 0 : i + (e.key === 'ArrowDown' ? 1 : -1)) + n) % n]?.focus();
    } else if (e.key === 'Tab') {
      e.preventDefault(); // focus stays in the open menu
      items[((i + (e.shiftKey ? -1 : 1)) + items.length) % items.length]?.focus();
    }
  });
  document.body.append(back);
  return back;
}

// openMenu shows one action sheet for a message: items are
// {key, label, title, run}; the first is focused. from is the element
// focus returns to when the sheet closes.
export function openMenu(items, from, heading) {
  sheet ||= buildSheet();
  const menu = sheet.firstElementChild;
  const head = el('div', 'sheet-head', heading || '');
  menu.replaceChildren(head, ...items.map((it) => {
    const b = el('button', 'sheet-item', it.label);
    b.type = 'button'; b.dataset.action = it.key;
    b.setAttribute('role', 'menuitem');
    if (it.title) b.setAttribute('aria-label', it.title);
    b.addEventListener('click', () => { closeMenu(); it.run(); });
    return b;
  }));
  head.hidden = !heading;
  opener = from || null;
  sheet.hidden = false;
  menu.querySelector('button')?.focus();
}

export function closeMenu() {
  if (!sheet || sheet.hidden) return;
  sheet.hidden = true;
  sheet.firstElementChild.replaceChildren();
  if (opener?.isConnected) opener.focus();
  opener = null;
}

export const menuOpen = () => !!sheet && !sheet.hidden;

// bindHold: on list, a right-click or a press-and-hold (touch or pen,
// ~500 ms without moving) on an entry calls open(entry, event). The
// click that ends a hold does nothing else.
export function bindHold(list, match, open) {
  // holding: the finger that opened a sheet is still down; swallow: the
  // click that may end that hold.
  let timer = 0, start = null, holding = false, swallow = false;
  const cancel = () => { clearTimeout(timer); timer = 0; start = null; };
  list.addEventListener('contextmenu', (e) => {
    const li = e.target.closest(match);
    if (!li || !list.contains(li)) return;
    e.preventDefault();
    cancel(); // a long-press the browser reports as a context menu: one sheet, not two
    if (holding) return; // the hold opened it already
    open(li, e);
  });
  list.addEventListener('pointerdown', (e) => {
    swallow = false; holding = false;
    if (e.pointerType === 'mouse') return;
    const li = e.target.closest(match);
    if (!li || e.target.closest('button, a, input, select, textarea')) return;
    start = { x: e.clientX, y: e.clientY };
    clearTimeout(timer);
    timer = setTimeout(() => { timer = 0; start = null; holding = true; open(li, e); }, 500);
  });
  list.addEventListener('pointermove', (e) => {
    if (start && Math.hypot(e.clientX - start.x, e.clientY - start.y) > 10) cancel();
  });
  for (const t of ['pointerup', 'pointercancel', 'pointerleave']) {
    list.addEventListener(t, () => { cancel(); if (holding) { holding = false; swallow = true; } });
  }
  list.addEventListener('click', (e) => { if (swallow) { swallow = false; e.preventDefault(); e.stopPropagation(); } }, true);
}

// ---- Photos: thumbnails and the full-screen viewer ----

// fetchBitmap fetches a photo from this device's node and decodes it; the
// answer is no-store and the page keeps no copy but the bitmap.
async function fetchBitmap(path) {
  const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) throw new Error(`photo: ${r.status}`);
  return createImageBitmap(await r.blob());
}

function guard(e) {
  e.draggable = false;
  e.addEventListener('contextmenu', (ev) => ev.preventDefault());
  e.addEventListener('dragstart', (ev) => ev.preventDefault());
}

// photoCanvas: a canvas a thumbnail is drawn into by drawThumb.
export function photoCanvas() {
  const c = el('canvas', 'thumb');
  c.width = 160; c.height = 100;
  c.setAttribute('role', 'img');
  c.tabIndex = 0;
  guard(c);
  return c;
}

// drawThumb draws the thumbnail at path into c, once; a failure (the
// photo has not arrived yet) is tried again at the next call.
export function drawThumb(c, path) {
  if (c.dataset.drawn === path || c.dataset.loading === path) return;
  c.dataset.loading = path;
  fetchBitmap(path).then((bmp) => {
    if (c.dataset.loading !== path) { bmp.close(); return; }
    c.width = bmp.width; c.height = bmp.height;
    c.getContext('2d').drawImage(bmp, 0, 0);
    bmp.close();
    c.dataset.drawn = path;
  }).catch(() => {}).finally(() => { if (c.dataset.loading === path) delete c.dataset.loading; });
}

let viewerGen = 0, viewerFrom = null;

// viewPhoto opens the full-size photo at path full screen; ×, Escape or
// a tap closes it.
export async function viewPhoto(path, label) {
  const v = $('viewer'), c = $('viewer-canvas');
  const gen = ++viewerGen;
  viewerFrom = document.activeElement;
  c.width = 0; c.height = 0;
  c.setAttribute('aria-label', label || 'Photo');
  v.hidden = false;
  $('viewer-close').focus();
  try {
    const bmp = await fetchBitmap(path);
    if (gen !== viewerGen || v.hidden) { bmp.close(); return; }
    c.width = bmp.width; c.height = bmp.height;
    c.getContext('2d').drawImage(bmp, 0, 0);
    bmp.close();
    v.dataset.ready = '1';
  } catch {
    if (gen === viewerGen) $('viewer-note').textContent = 'The photo could not be shown.';
  }
}

export function closeViewer() {
  const v = $('viewer'), c = $('viewer-canvas');
  if (v.hidden) return;
  viewerGen++;
  v.hidden = true;
  delete v.dataset.ready;
  c.width = 0; c.height = 0; // the pixels are dropped, not kept for the next one
  $('viewer-note').textContent = '';
  if (viewerFrom?.isConnected) viewerFrom.focus();
  viewerFrom = null;
}

function bindViewer() {
  const v = $('viewer');
  guard($('viewer-canvas'));
  v.addEventListener('contextmenu', (e) => e.preventDefault());
  v.addEventListener('click', closeViewer); // a tap anywhere, × included
}

// ---- Search within the open conversation ----

const search = { q: '', hits: [], at: -1, msgs: [] };

const norm = (s) => (s || '').toLocaleLowerCase();

// marks sets e's text with each occurrence of q in a <mark>, or plain.
function marks(e, text, q) {
  const want = q ? `${q}\u0000${text}` : '';
  if ((e.dataset.marked || '') === want && e.textContent === text) return;
  if (!q) { e.textContent = text; delete e.dataset.marked; return; }
  const low = norm(text), out = [];
  let i = 0;
  for (let j = low.indexOf(q); j >= 0 && q; j = low.indexOf(q, i)) {
    if (j > i) out.push(document.createTextNode(text.slice(i, j)));
    out.push(el('mark', '', text.slice(j, j + q.length)));
    i = j + q.length;
  }
  if (i < text.length) out.push(document.createTextNode(text.slice(i)));
  e.replaceChildren(...out);
  e.dataset.marked = want;
}

const searchable = (m) => !m.withdrawn && !m.deleted && m.text;

// applySearch recomputes the matches over msgs (the open conversation's
// messages as last fetched) and shows them: matching bubbles marked, the
// current one scrolled to, "2 of 5". keep keeps the current match.
function applySearch(keep) {
  const q = norm(search.q.trim());
  const cur = search.hits[search.at];
  search.hits = q ? search.msgs.filter((m) => searchable(m) && norm(m.text).includes(q)).map((m) => m.id) : [];
  search.at = keep && search.hits.includes(cur) ? search.hits.indexOf(cur) : search.hits.length - 1;
  const ol = $('messages');
  for (const li of ol.children) {
    if (!li.classList.contains('msg')) continue;
    const i = search.hits.indexOf(li.dataset.key);
    if (i < 0) delete li.dataset.hit; else li.dataset.hit = i === search.at ? 'current' : '1';
    const body = li.querySelector(':scope > [data-key="body"]');
    if (body && !li.classList.contains('withdrawn')) marks(body, body.textContent, i < 0 ? '' : q);
  }
  $('chat-search-count').textContent = q ? (search.hits.length ? `${search.at + 1} of ${search.hits.length}` : 'No matches') : '';
  $('chat-search-prev').disabled = search.hits.length < 2;
  $('chat-search-next').disabled = search.hits.length < 2;
}

function focusHit() {
  const id = search.hits[search.at];
  const li = id && [...$('messages').children].find((e) => e.dataset.key === id);
  li?.scrollIntoView({ block: 'center' });
}

function step(d) {
  if (!search.hits.length) return;
  search.at = (search.at + d + search.hits.length) % search.hits.length;
  applySearch(true);
  focusHit();
}

// searchRendered is called by the chat after each render with the
// messages it shows: the highlights follow edits, deletions and arrivals.
export function searchRendered(msgs) {
  search.msgs = msgs;
  if (search.q.trim()) applySearch(true);
}

export function closeSearch() {
  search.q = ''; search.hits = []; search.at = -1;
  $('chat-search').hidden = true;
  $('chat-search-input').value = '';
  applySearch(false);
}

function bindSearch() {
  const input = $('chat-search-input');
  $('chat-search-open').addEventListener('click', () => {
    const box = $('chat-search');
    if (!box.hidden) { closeSearch(); return; }
    box.hidden = false; input.focus();
  });
  input.addEventListener('input', () => { search.q = input.value; applySearch(false); focusHit(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); step(e.shiftKey ? 1 : -1); }
    if (e.key === 'Escape') { e.preventDefault(); closeSearch(); $('chat-search-open').focus(); }
  });
  $('chat-search-prev').addEventListener('click', () => step(-1));
  $('chat-search-next').addEventListener('click', () => step(1));
  $('chat-search-close').addEventListener('click', () => { closeSearch(); $('chat-search-open').focus(); });
}

// ---- The unread divider ----

// dividerText: the line above the first message unread when the
// conversation was opened.
export const dividerText = (n) => `${n} unread message${n === 1 ? '' : 's'}`;

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  if (menuOpen()) { e.preventDefault(); closeMenu(); return; }
  if (!$('viewer').hidden) { e.preventDefault(); closeViewer(); }
});

bindViewer();
bindSearch();
