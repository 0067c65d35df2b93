// medmesh web app: plain JS module, no build step, no third-party requests.
// Talks only to this device's node, with the session cookie set at unlock;
// state-changing requests carry the X-Medmesh-CSRF header.
import { renderEscalation, onEvent as escalationEvent, ackWithinField, ackWithin, escalateMessage, canEscalate } from './escalate.js';
import { openMenu, closeMenu, bindHold, photoCanvas, drawThumb, viewPhoto, closeViewer, searchRendered, closeSearch, dividerText } from './chatui.js';

const $ = (id) => document.getElementById(id);
const state = { me: null, peers: [], directory: [], conversations: [], open: null, names: {} };

async function api(path, opts = {}) {
  const init = { method: opts.method || 'GET', credentials: 'same-origin', headers: {} };
  if (opts.background) init.headers['X-Medmesh-Background'] = '1';
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-Medmesh-CSRF'] = '1';
    init.body = JSON.stringify(opts.body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) { showLock(); throw new Error('locked'); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function showLock() { $('app').hidden = true; $('lock').hidden = false; $('pass').focus(); }

async function unlock(ev) {
  ev.preventDefault();
  $('unlock-error').textContent = '';
  try {
    await api('/app/unlock', { method: 'POST', body: { passphrase: $('pass').value } });
    $('pass').value = '';
    $('lock').hidden = true; $('app').hidden = false;
    await start();
  } catch (e) { $('unlock-error').textContent = e.message === 'locked' ? 'Wrong passphrase' : e.message; }
}

const name = (id) => state.names[id] || (id ? id.slice(-6) : '');

async function refreshStatus() {
  const st = await api('/api/v1/status', { background: true });
  state.me = st;
  $('me').textContent = st.name;
  const admitted = (st.peers || []).filter((p) => p.admitted);
  for (const p of admitted) state.names[p.peer_id] = p.name;
  let queued = 0;
  for (const c of state.conversations) queued += c.queued || 0;
  $('banner').textContent = admitted.length === 0
    ? `offline — ${queued} message${queued === 1 ? '' : 's'} queued`
    : `${admitted.length} colleague${admitted.length === 1 ? '' : 's'} in reach`;
}

async function refreshDirectory() {
  state.directory = await api('/api/v1/directory');
  for (const s of state.directory) state.names[s.peer_id] = s.name;
  for (const f of await api('/api/v1/federated').catch(() => [])) state.names[f.peer_id] = `${f.name} · ${f.other_trust}`; // other trusts (federated.js)
}

// Lists are updated in place, never rebuilt: each entry carries its key
// (a conversation, message or peer ID) in data-key and stays the same
// element for as long as its item is listed, with only what changed about
// it touched. A click — a person's, or a test's — never lands on an
// element that an event's refresh has just swapped for a copy.
const itemOf = new WeakMap(); // entry element → the item it shows now

// reconcile brings parent's children in line with items, in order: the
// child keyed keyOf(item) is kept and passed to update, a new one is made
// by make (then updated), children whose key is gone are removed, and as
// few as possible are moved (those in the longest run already in order
// stay where they are).
function reconcile(parent, items, keyOf, make, update) {
  const old = new Map();
  for (const e of [...parent.children]) {
    const k = e.dataset.key;
    if (k !== undefined && !old.has(k)) old.set(k, e); else e.remove();
  }
  const want = items.map((it) => {
    const k = String(keyOf(it));
    let e = old.get(k);
    if (e) old.delete(k); else { e = make(it); e.dataset.key = k; }
    itemOf.set(e, it);
    update(e, it);
    return e;
  });
  for (const e of old.values()) e.remove();
  const at = new Map(want.map((e, i) => [e, i]));
  const stay = new Set(longestRun([...parent.children].map((e) => at.get(e))));
  let next = null;
  for (let i = want.length - 1; i >= 0; i--) {
    if (!stay.has(i)) parent.insertBefore(want[i], next);
    next = want[i];
  }
}

// longestRun: a longest strictly increasing subsequence of seq.
function longestRun(seq) {
  const tails = [], prev = [];
  for (let i = 0; i < seq.length; i++) {
    let lo = 0, hi = tails.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (seq[tails[mid]] < seq[i]) lo = mid + 1; else hi = mid; }
    prev[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
  }
  const out = [];
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) out.push(seq[i]);
  return out;
}

// parts: an element's children as keyed parts (falsy entries are absent
// ones), each made once by make and brought up to date by set.
const part = (key, make, set) => ({ key, make, set });
const parts = (e, list) => reconcile(e, list.filter(Boolean), (p) => p.key, (p) => p.make(), (c, p) => p.set?.(c));

// Small DOM helpers; text is only ever set as text, and only when it changed.
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const setText = (e, t) => { t = t == null ? '' : String(t); if (e.textContent !== t) e.textContent = t; };
const setClass = (e, c) => { if (e.className !== c) e.className = c; };
const setAttr = (e, a, v) => {
  if (v == null) { if (e.hasAttribute(a)) e.removeAttribute(a); } else if (e.getAttribute(a) !== String(v)) e.setAttribute(a, v);
};

// Answers to overlapping refreshes can come back out of order; one older
// than what is shown is dropped.
let listAsked = 0, listShown = 0;

// refreshList: every conversation in state; on screen, those the patient
// search finds — asked of this device's own API (?patient=), which
// searches what the device has decrypted and asks nothing of the mesh.
async function refreshList() {
  const gen = ++listAsked;
  const q = $('patient-search').value.trim();
  const list = await api('/api/v1/conversations');
  const shown = q ? await api(`/api/v1/conversations?patient=${encodeURIComponent(q)}`) : list;
  if (gen < listShown) return;
  listShown = gen;
  state.conversations = list;
  window.dispatchEvent(new CustomEvent('medmesh:conversations', { detail: list })); // notify.js counts what is new
  reconcile($('conversations'), shown, (c) => c.id, conversationEntry, updateConversation);
  $('no-match').hidden = !q || shown.length > 0;
}

// A patient as NHS guidance shows one: NHS number in 3-3-4 digits, date
// of birth as dd-Mmm-yyyy (a calendar date: no time zone applies).
const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const nhsFormat = (n) => (n && n.length === 10 ? `${n.slice(0, 3)} ${n.slice(3, 6)} ${n.slice(6)}` : n || '');
const dobFormat = (d) => {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(d || '');
  return m ? `${m[3]}-${months[Number(m[2]) - 1]}-${m[1]}` : '';
};

// renderPatient: the banner of the open conversation's patient — name,
// NHS number, date of birth — or nothing if it is about nobody.
function renderPatient(c) {
  const box = $('patient-banner');
  const p = c?.patient;
  box.hidden = !p;
  if (!p) { box.replaceChildren(); return; }
  parts(box, [
    part('name', () => el('span', 'pname'), (e) => setText(e, p.name || 'Name not given')),
    part('nhs', () => el('span', 'nhs'), (e) => setText(e, `NHS No. ${nhsFormat(p.nhs_number)}`)),
    p.birth_date && part('dob', () => el('span', 'dob'), (e) => setText(e, `Born ${dobFormat(p.birth_date)}`)),
  ]);
}

function conversationEntry() {
  const li = el('li');
  const b = el('button'); b.type = 'button';
  b.addEventListener('click', () => openChat(itemOf.get(li)));
  li.append(b);
  return li;
}

function updateConversation(li, c) {
  parts(li.firstElementChild, [
    part('title', () => el('span', 'title'), (e) => setText(e, c.title || 'Untitled')),
    c.patient && part('patient', () => el('span', 'who-patient'), (e) => setText(e, `${c.patient.name || ''} ${nhsFormat(c.patient.nhs_number)}`.trim())),
    part('last', () => el('span', 'last'), (e) => setText(e, c.last || '')),
    c.flags && Object.keys(c.flags).length && part('warn', () => {
      const f = el('span', 'badge warn', '⚠'); f.setAttribute('aria-label', 'warning about a member'); return f;
    }),
    c.urgent && part('urgent', () => el('span', 'badge urgent'), (e) => setText(e, `${c.urgent} urgent`)),
    c.unread && part('unread', () => el('span', 'badge'), (e) => { setText(e, c.unread); setAttr(e, 'aria-label', `${c.unread} unread`); }),
  ]);
}

// Why a message was withdrawn or a member flagged, as the node reports it
// (the chat package's error texts), in plain words for clinicians. Keys
// are matched anywhere in the reason; anything else gets a general line,
// with the technical reason in the tooltip.
const withdrawnWhy = [
  ['sender was removed concurrently: op void', 'the sender had been removed from the group'],
  ['sender sealed two ops under one message key: both void', "the sender's device sent conflicting versions of this message"],
  ["sender's certificate is revoked and no member endorsed the op", "the sender's certificate was revoked"],
];
const flagWhy = [
  ['sender sealed two ops under one message key: both void', 'their device sent conflicting versions of a message'],
  ['welcome share did not open', 'their device sent this phone a group key that did not open'],
];
const plain = (why, table, other) => (table.find(([k]) => why.includes(k)) || [, other])[1];
const withdrawnText = (why) => `Message withdrawn — ${plain(why, withdrawnWhy, 'it can no longer be verified')}`;

// renderFlags: a warning naming each member this device caught
// misbehaving in the open conversation.
function renderFlags(c) {
  const box = $('flags');
  const flags = Object.entries(c?.flags || {});
  reconcile(box, flags, ([p]) => p, () => el('p'), (line, [p, why]) => {
    setText(line, `⚠ ${name(p) || 'A member'} — ${plain(why, flagWhy, 'their device behaved unexpectedly')}. Confirm anything important with them directly.`);
    setAttr(line, 'title', why);
  });
  box.hidden = flags.length === 0;
}

const ticks = { queued: '🕓', held: '✓', delivered: '✓✓', read: '✓✓', acknowledged: '✅' };

let chatAsked = 0, chatShown = 0, chatConv = null;

// divider: where the unread divider of the open conversation stands — the
// first message unread when it was opened, and how many were — until the
// user leaves it.
let divider = null;

// renderChat: the open conversation's messages, with a separator per day.
// Bubbles already shown are kept and only what changed about them (ticks,
// reactions, edits, deletion, withdrawal, acknowledgements) is updated;
// new ones are added in place.
async function renderChat() {
  const c = state.open;
  if (!c) return;
  const gen = ++chatAsked;
  const msgs = await api(`/api/v1/conversations/${c.id}/messages`);
  if (gen < chatShown || state.open?.id !== c.id) return;
  chatShown = gen;
  renderFlags(state.conversations.find((x) => x.id === c.id) || c);
  renderPatient(state.conversations.find((x) => x.id === c.id) || c);
  const ol = $('messages');
  const fresh = chatConv !== c.id;
  if (fresh) { ol.replaceChildren(); chatConv = c.id; divider = null; }
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 2;
  const lastKey = ol.lastElementChild?.dataset.key;
  const byId = new Map(msgs.map((m) => [m.id, m]));
  const items = [], days = new Map();
  let day = '';
  const unread = [];
  for (const m of msgs) {
    const dstr = new Date(m.time).toLocaleDateString();
    if (dstr !== day) {
      day = dstr;
      const n = days.get(dstr) || 0; days.set(dstr, n + 1);
      items.push({ key: `day:${dstr}:${n}`, day: dstr });
    }
    const mine = state.me && m.sender === state.me.peer_id;
    if (!m.withdrawn && !mine && m.state !== 'read' && m.state !== 'acknowledged') unread.push(m.id);
    if (fresh && unread.length === 1 && unread[0] === m.id) divider = { before: m.id };
    if (divider && divider.before === m.id) items.push({ key: 'unread-divider', divider });
    items.push({ key: m.id, m, q: m.reply_to ? byId.get(m.reply_to) : undefined, cid: c.id });
  }
  if (fresh && divider) divider.n = unread.length; // as it was when the conversation was opened
  reconcile(ol, items, (it) => it.key, (it) => el('li', it.day ? 'day' : it.divider ? 'unread-divider' : ''), updateEntry);
  if (fresh && divider) ol.querySelector('.unread-divider')?.scrollIntoView({ block: 'start' });
  else if (fresh || atBottom || ol.lastElementChild?.dataset.key !== lastKey) ol.scrollTop = ol.scrollHeight;
  searchRendered(msgs);
  if (unread.length) api(`/api/v1/conversations/${c.id}/receipts`, { method: 'POST', body: { level: 'read', messages: unread } }).catch(() => {});
}

// updateEntry brings one entry of the message list up to date: a day
// separator, or a message bubble.
function updateEntry(li, it) {
  if (it.day) { setText(li, it.day); return; }
  if (it.divider) { setText(li, dividerText(it.divider.n)); setAttr(li, 'role', 'separator'); return; }
  const { m, q, cid } = it;
  const mine = !!(state.me && m.sender === state.me.peer_id);
  const time = new Date(m.time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const who = !mine && part('who', () => el('div', 'who'), (e) => setText(e, person(m.sender)));
  if (m.withdrawn) {
    // Shown before, void now: kept in place, without its content.
    setClass(li, 'msg withdrawn' + (mine ? ' mine' : ''));
    parts(li, [
      who,
      part('notice', () => el('div', 'notice'), (e) => { setText(e, withdrawnText(m.withdrawn)); setAttr(e, 'title', m.withdrawn); }),
      part('time', () => el('div', 'meta'), (e) => setText(e, time)),
    ]);
    return;
  }
  setClass(li, 'msg' + (mine ? ' mine' : '') + (m.urgent ? ' urgent' : ''));
  parts(li, [
    who,
    m.reply_to && part('quote', () => el('div', 'quote'), (e) => setText(e,
      q ? `${name(q.sender)}: ${q.withdrawn ? 'withdrawn message' : q.deleted ? 'deleted message' : q.text}` : 'earlier message')),
    m.photo && !m.deleted && part('photo', () => thumb(li, cid), (c) => {
      setAttr(c, 'aria-label', m.text ? `Photo: ${m.text}` : 'Photo');
      drawThumb(c, `/api/v1/conversations/${cid}/messages/${m.id}/photo?size=thumb`); // once; again if it failed before
    }),
    part('body', () => el('div'), (e) => {
      setText(e, m.deleted ? 'This message was deleted' : m.text);
      if (m.deleted) setClass(e, 'deleted');
    }),
    m.reactions && part('reactions', () => el('div', 'reactions'), (e) => {
      setText(e, Object.entries(m.reactions).map(([r, who]) => `${r} ${who.length}`).join('  '));
      setAttr(e, 'title', Object.entries(m.reactions).map(([r, who]) => `${r}: ${who.map(name).join(', ')}`).join('; '));
    }),
    !m.deleted && part('more', () => {
      const b = el('button', 'more', '⋯'); b.type = 'button';
      b.setAttribute('aria-haspopup', 'menu'); b.setAttribute('aria-label', 'Message actions');
      b.addEventListener('click', () => openActions(li));
      return b;
    }),
    part('meta', () => { const e = el('div', 'meta'); e.append(document.createTextNode('')); return e; }, (e) => {
      const t = time + (m.edited ? ' · edited' : '') + (mine ? ' ' : '');
      if (e.firstChild.data !== t) e.firstChild.data = t;
      let tick = e.querySelector('span');
      if (!mine) { tick?.remove(); return; }
      if (!tick) { tick = el('span'); e.append(tick); }
      setClass(tick, m.state === 'read' ? 'read' : '');
      setAttr(tick, 'title', String(m.state));
      setText(tick, ticks[m.state] || '');
    }),
    m.urgent && mine && m.recipients && part('acks', () => el('div', 'meta'), (e) => {
      const acked = Object.entries(m.recipients).filter(([, s]) => s === 'acknowledged').map(([p]) => name(p));
      setText(e, acked.length ? `Acknowledged by ${acked.join(', ')}` : 'Awaiting acknowledgement');
    }),
    (m.escalation || m.state === 'expired-unread') && part('esc', () => el('div', 'meta esc'), (e) => renderEscalation(e, m, mine, cid, name)),
    m.urgent && !mine && m.state !== 'acknowledged' && part('ack', () => {
      const b = el('button', 'ack', 'Acknowledge'); b.type = 'button';
      b.addEventListener('click', async () => {
        await api(`/api/v1/conversations/${cid}/receipts`, { method: 'POST', body: { level: 'acknowledged', messages: [itemOf.get(li).m.id] } });
        renderChat();
      });
      return b;
    }),
  ]);
}

// thumb: a photo message's thumbnail, drawn into a canvas (chatui.js:
// no link, no image address); a tap, Enter or Space opens the full photo
// once every chunk of it has arrived.
function thumb(li, cid) {
  const c = photoCanvas();
  const open = () => {
    const { m } = itemOf.get(li);
    if (m.photo?.ready) viewPhoto(`/api/v1/conversations/${cid}/messages/${m.id}/photo?size=full`, m.text ? `Photo: ${m.text}` : 'Photo');
  };
  c.addEventListener('click', open);
  c.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
  return c;
}

// openActions opens the action sheet of the message shown by li, with
// what may be done to it as it is now: reply, react, and for one's own
// messages edit and delete; acknowledge an urgent message to me; escalate
// one's own urgent message that is due. A withdrawn or deleted message
// has none.
function openActions(li) {
  const it = itemOf.get(li);
  if (!it?.m || it.m.withdrawn || it.m.deleted) return;
  const { m, cid } = it;
  const mine = !!(state.me && m.sender === state.me.peer_id);
  const base = `/api/v1/conversations/${cid}/messages/${m.id}`;
  const reacted = (e) => (m.reactions?.[e] || []).includes(state.me?.peer_id);
  const act = (fn) => () => Promise.resolve(fn()).then(renderChat).catch((e) => alert(e.message));
  const items = [
    m.urgent && !mine && m.state !== 'acknowledged' && { key: 'ack', label: '✅ Acknowledge', run: act(() => api(`/api/v1/conversations/${cid}/receipts`, { method: 'POST', body: { level: 'acknowledged', messages: [m.id] } })) },
    canEscalate(m, mine) && { key: 'escalate', label: '⤴ Escalate…', run: act(() => escalateMessage(cid, m.id)) },
    { key: 'reply', label: '↩ Reply', run: () => {
      state.replyTo = m; $('replying').textContent = `Replying to ${name(m.sender)}: ${m.text}`; $('replying').hidden = false; $('text').focus();
    } },
    ...['👍', '✅', '❤️'].map((e) => ({ key: `react ${e}`, label: reacted(e) ? `${e} Remove reaction` : `${e} React`, title: reacted(e) ? `Remove ${e}` : `React ${e}`,
      run: act(() => api(`${base}/reactions`, { method: 'POST', body: { emoji: e, remove: reacted(e) } })) })),
    mine && { key: 'edit', label: '✎ Edit', run: act(async () => { const t = prompt('Edit message', m.text); if (t) await api(base, { method: 'PATCH', body: { text: t } }); }) },
    mine && { key: 'delete', label: '🗑 Delete for everyone', run: act(async () => { if (confirm('Delete this message for everyone?')) await api(base, { method: 'DELETE', body: {} }); }) },
  ].filter(Boolean);
  const said = m.photo ? `Photo${m.text ? ': ' + m.text : ''}` : m.text;
  openMenu(items, li.querySelector('button.more'), `${mine ? 'You' : name(m.sender)}: ${said.length > 80 ? said.slice(0, 79) + '…' : said}`);
}

async function sendPhoto() {
  const f = $('photo').files[0];
  if (!f || !state.open) return;
  const caption = $('text').value.trim();
  const r = await fetch(`/api/v1/conversations/${state.open.id}/photos?caption=${encodeURIComponent(caption)}`, {
    method: 'POST', credentials: 'same-origin', headers: { 'X-Medmesh-CSRF': '1', 'Content-Type': f.type || 'application/octet-stream' }, body: f,
  });
  $('photo').value = '';
  if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error(d.error || r.statusText); }
  $('text').value = '';
  renderChat();
}

// renderGroup: members with their roles; admins add and remove.
function renderGroup() {
  const c = state.conversations.find((x) => x.id === state.open?.id) || state.open;
  const admin = (c.admins || []).includes(state.me?.peer_id);
  reconcile($('members'), (c.members || []).map((p) => ({ p, c })), (it) => it.p, memberEntry, (li, { p }) => {
    const tag = (c.admins || []).includes(p) ? ' · group admin' : '';
    parts(li, [
      part('who', () => el('span'), (e) => setText(e, (p === state.me?.peer_id ? 'You' : person(p)) + tag)),
      admin && p !== state.me?.peer_id && part('remove', () => {
        const b = el('button', 'ghost small', 'Remove'); b.type = 'button';
        b.addEventListener('click', () => removeMember(itemOf.get(li)));
        return b;
      }, (b) => setAttr(b, 'aria-label', `Remove ${name(p)}`)),
    ]);
  });
  $('add-member').hidden = !admin;
  reconcile($('add-select'), state.directory.filter((d) => !(c.members || []).includes(d.peer_id)), (s) => s.peer_id,
    (s) => { const o = el('option'); o.value = s.peer_id; return o; },
    (o, s) => setText(o, staffLine(s)));
  const p = c.patient;
  if (!$('patient-form').contains(document.activeElement)) {
    $('pf-nhs').value = p ? nhsFormat(p.nhs_number) : '';
    $('pf-name').value = p?.name || '';
    $('pf-dob').value = p?.birth_date || '';
  }
  $('pf-clear').hidden = !p;
  $('pf-error').textContent = '';
}

// staffLine: a colleague as the directory knows them from their
// certificate — name, department, roles, and their site if it is not
// this device's own.
function staffLine(s) {
  const mySite = state.directory.find((d) => d.peer_id === state.me?.peer_id)?.site;
  return [s.name, s.department, (s.roles || []).join(', '), s.site !== mySite && s.site].filter(Boolean).join(' · ');
}

// person: a colleague by peer ID, named as staffLine names them (or by
// name alone if the directory no longer lists them).
function person(id) {
  const s = state.directory.find((d) => d.peer_id === id);
  return s ? staffLine(s) : name(id);
}

// savePatient sets or corrects (or, with clear, unlinks) the open
// conversation's patient: any member may.
async function savePatient(clear) {
  if (!state.open) return;
  $('pf-error').textContent = '';
  const base = `/api/v1/conversations/${state.open.id}/patient`;
  try {
    if (clear) await api(base, { method: 'DELETE', body: {} });
    else await api(base, { method: 'PUT', body: { nhs_number: $('pf-nhs').value, name: $('pf-name').value, birth_date: $('pf-dob').value } });
  } catch (e) { $('pf-error').textContent = e.message; return; }
  await refreshList();
  renderGroup();
  renderChat();
}

function memberEntry() { return el('li'); }

async function removeMember({ p, c }) {
  if (!confirm(`Remove ${name(p)}? They will not read anything sent from now on.`)) return;
  await api(`/api/v1/conversations/${c.id}/members`, { method: 'POST', body: { remove: [p] } });
  await refreshList(); renderGroup();
}

function show(view) {
  for (const v of ['list-view', 'chat-view', 'new-view']) $(v).hidden = v !== view;
}

async function openChat(c) {
  state.open = c;
  chatConv = null; divider = null; // a new visit: the unread divider is placed afresh
  $('messages').replaceChildren(); // nothing of the last chat shows while this one loads
  closeSearch(); closeMenu();
  $('group').hidden = true;
  $('chat-title').textContent = c.title || 'Untitled';
  renderPatient(c);
  show('chat-view');
  await renderChat();
  $('text').focus();
}

async function send(ev) {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.open) return;
  const body = { text, urgent: $('urgent').checked };
  if (body.urgent && ackWithin()) body.ack_within = ackWithin();
  if (state.replyTo) body.reply_to = state.replyTo.id;
  await api(`/api/v1/conversations/${state.open.id}/messages`, { method: 'POST', body });
  $('text').value = ''; $('urgent').checked = false;
  $('urgent').dispatchEvent(new Event('change'));
  state.replyTo = null; $('replying').hidden = true;
  renderChat();
}

// renderDirectory: colleagues matching the search; those still listed
// as the search changes keep their boxes (and whether they are ticked).
function renderDirectory() {
  const q = $('search').value.toLowerCase();
  const shown = state.directory.filter((s) => !q || [s.name, s.department, (s.roles || []).join(' '), s.site].join(' ').toLowerCase().includes(q));
  reconcile($('directory'), shown, (s) => s.peer_id, (s) => {
    const li = el('li'), label = el('label');
    const box = el('input'); box.type = 'checkbox'; box.value = s.peer_id;
    label.append(box, el('span')); li.append(label);
    return li;
  }, (li, s) => setText(li.querySelector('span'), staffLine(s)));
}

async function createChat(ev) {
  ev.preventDefault();
  const members = [...document.querySelectorAll('#directory input:checked, #federated input:checked')].map((b) => b.value); // federated.js: other trusts
  const body = { title: $('title').value, members };
  const oncall = document.querySelector('#on-call-roles input:checked'); // roles.js
  if (oncall && oncall.value) body.role = oncall.value;
  const pt = { nhs_number: $('nhs').value.trim(), name: $('patient-name').value.trim(), birth_date: $('dob').value };
  if (pt.nhs_number || pt.name || pt.birth_date) body.patient = pt;
  $('new-error').textContent = '';
  let id, ans;
  try {
    ans = await api('/api/v1/conversations', { method: 'POST', body });
    ({ id } = ans);
  } catch (e) { $('new-error').textContent = e.message; return; }
  document.dispatchEvent(new CustomEvent('medmesh:role-chat', { detail: ans })); // roles.js says whom a role reached
  for (const f of ['nhs', 'patient-name', 'dob']) $(f).value = '';
  await refreshList();
  openChat(state.conversations.find((c) => c.id === id) || { id, title: $('title').value });
}

function listen() {
  const ws = new WebSocket(`ws://${location.host}/api/v1/events`);
  // Each event names the conversation that changed: the list is refreshed
  // (badges, last message), the open chat only if it is the one.
  ws.addEventListener('message', async (m) => {
    let ev = {};
    try { ev = JSON.parse(m.data); } catch { /* an event we cannot read: refresh all */ }
    escalationEvent(ev);
    await refreshList().catch(() => {});
    if (state.open && (!ev.conversation || ev.conversation === state.open.id)) renderChat().catch(() => {});
  });
  ws.addEventListener('close', () => setTimeout(() => { if (!$('app').hidden) listen(); }, 2000));
}

async function start() {
  // The list first: a tap on New chat while the list loads must not be
  // undone when it has loaded.
  show('list-view');
  await refreshDirectory();
  await refreshList();
  await refreshStatus();
  listen();
  setInterval(() => { if (!$('app').hidden) refreshStatus().catch(() => {}); }, 5000);
}

$('unlock-form').addEventListener('submit', unlock);
ackWithinField();
$('send-form').addEventListener('submit', (e) => send(e).catch((err) => alert(err.message)));
$('new-form').addEventListener('submit', (e) => createChat(e).catch((err) => alert(err.message)));
$('new-chat').addEventListener('click', () => {
  show('new-view'); $('directory').replaceChildren(); renderDirectory();
  $('new-error').textContent = ''; $('dob').max = new Date().toLocaleDateString('en-CA'); // today, here
  $('title').focus();
});
$('search').addEventListener('input', renderDirectory);
$('patient-search').addEventListener('input', () => refreshList().catch(() => {}));
$('patient-form').addEventListener('submit', (e) => { e.preventDefault(); savePatient(false); });
$('pf-clear').addEventListener('click', () => savePatient(true));
$('back').addEventListener('click', () => { state.open = null; chatConv = null; closeSearch(); closeMenu(); closeViewer(); show('list-view'); refreshList(); });
$('new-back').addEventListener('click', () => show('list-view'));
$('photo').addEventListener('change', () => sendPhoto().catch((e) => alert(e.message)));
bindHold($('messages'), 'li.msg', (li) => openActions(li));
$('info').addEventListener('click', () => { $('group').hidden = !$('group').hidden; if (!$('group').hidden) renderGroup(); });
$('add-btn').addEventListener('click', async () => {
  const p = $('add-select').value;
  if (!p || !state.open) return;
  await api(`/api/v1/conversations/${state.open.id}/members`, { method: 'POST', body: { add: [p] } }).catch((e) => alert(e.message));
  await refreshList(); renderGroup();
});
$('lock-now').addEventListener('click', async () => { await api('/app/lock', { method: 'POST', body: {} }).catch(() => {}); showLock(); });

api('/api/v1/status').then(() => { $('lock').hidden = true; $('app').hidden = false; start(); }).catch(() => {});
