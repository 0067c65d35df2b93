// medmesh web app: plain JS module, no build step, no third-party requests.
// Talks only to this device's node, with the session cookie set at unlock;
// state-changing requests carry the X-Medmesh-CSRF header.
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
}

async function refreshList() {
  state.conversations = await api('/api/v1/conversations');
  const ul = $('conversations');
  ul.replaceChildren();
  for (const c of state.conversations) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    const t = document.createElement('span'); t.className = 'title'; t.textContent = c.title || 'Untitled';
    const last = document.createElement('span'); last.className = 'last'; last.textContent = c.last || '';
    b.append(t, last);
    if (c.flags && Object.keys(c.flags).length) { const f = document.createElement('span'); f.className = 'badge warn'; f.textContent = '⚠'; f.setAttribute('aria-label', 'warning about a member'); b.append(f); }
    if (c.urgent) { const u = document.createElement('span'); u.className = 'badge urgent'; u.textContent = `${c.urgent} urgent`; b.append(u); }
    if (c.unread) { const n = document.createElement('span'); n.className = 'badge'; n.textContent = c.unread; n.setAttribute('aria-label', `${c.unread} unread`); b.append(n); }
    b.addEventListener('click', () => openChat(c));
    li.append(b); ul.append(li);
  }
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
  box.replaceChildren();
  const flags = Object.entries(c?.flags || {});
  for (const [p, why] of flags) {
    const line = document.createElement('p');
    line.textContent = `⚠ ${name(p) || 'A member'} — ${plain(why, flagWhy, 'their device behaved unexpectedly')}. Confirm anything important with them directly.`;
    line.title = why;
    box.append(line);
  }
  box.hidden = flags.length === 0;
}

const ticks = { queued: '🕓', held: '✓', delivered: '✓✓', read: '✓✓', acknowledged: '✅' };

async function renderChat() {
  const c = state.open;
  if (!c) return;
  const msgs = await api(`/api/v1/conversations/${c.id}/messages`);
  renderFlags(state.conversations.find((x) => x.id === c.id) || c);
  const ol = $('messages');
  ol.replaceChildren();
  let day = '';
  const unread = [];
  for (const m of msgs) {
    const d = new Date(m.time);
    const dstr = d.toLocaleDateString();
    if (dstr !== day) { day = dstr; const li = document.createElement('li'); li.className = 'day'; li.textContent = dstr; ol.append(li); }
    const mine = state.me && m.sender === state.me.peer_id;
    const li = document.createElement('li');
    if (m.withdrawn) {
      // Shown before, void now: kept in place, without its content.
      li.className = 'msg withdrawn' + (mine ? ' mine' : '');
      if (!mine) { const w = document.createElement('div'); w.className = 'who'; w.textContent = name(m.sender); li.append(w); }
      const notice = document.createElement('div'); notice.className = 'notice';
      notice.textContent = withdrawnText(m.withdrawn); notice.title = m.withdrawn;
      const meta = document.createElement('div'); meta.className = 'meta';
      meta.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      li.append(notice, meta); ol.append(li);
      continue;
    }
    li.className = 'msg' + (mine ? ' mine' : '') + (m.urgent ? ' urgent' : '');
    if (!mine) { const w = document.createElement('div'); w.className = 'who'; w.textContent = name(m.sender); li.append(w); }
    if (m.reply_to) {
      const q = msgs.find((x) => x.id === m.reply_to);
      const quote = document.createElement('div'); quote.className = 'quote';
      quote.textContent = q ? `${name(q.sender)}: ${q.withdrawn ? 'withdrawn message' : q.deleted ? 'deleted message' : q.text}` : 'earlier message';
      li.append(quote);
    }
    if (m.photo && !m.deleted) {
      const img = document.createElement('img');
      img.className = 'thumb'; img.alt = m.text ? `Photo: ${m.text}` : 'Photo'; img.draggable = false;
      img.src = `/api/v1/conversations/${c.id}/messages/${m.id}/photo?size=thumb`;
      img.addEventListener('contextmenu', (e) => e.preventDefault());
      if (m.photo.ready) img.addEventListener('click', () => viewPhoto(c, m));
      li.append(img);
    }
    const body = document.createElement('div');
    body.textContent = m.deleted ? 'This message was deleted' : m.text;
    if (m.deleted) body.className = 'deleted';
    li.append(body);
    if (m.reactions) {
      const r = document.createElement('div'); r.className = 'reactions';
      r.textContent = Object.entries(m.reactions).map(([e, who]) => `${e} ${who.length}`).join('  ');
      r.title = Object.entries(m.reactions).map(([e, who]) => `${e}: ${who.map(name).join(', ')}`).join('; ');
      li.append(r);
    }
    if (!m.deleted) li.append(actions(c, m, mine));
    const meta = document.createElement('div'); meta.className = 'meta';
    let tick = '';
    if (mine) {
      tick = ` <span class="${m.state === 'read' ? 'read' : ''}" title="${m.state}">${ticks[m.state] || ''}</span>`;
    }
    meta.innerHTML = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + (m.edited ? ' · edited' : '') + tick;
    li.append(meta);
    if (m.urgent && mine && m.recipients) {
      const acked = Object.entries(m.recipients).filter(([, s]) => s === 'acknowledged').map(([p]) => name(p));
      const a = document.createElement('div'); a.className = 'meta';
      a.textContent = acked.length ? `Acknowledged by ${acked.join(', ')}` : 'Awaiting acknowledgement';
      li.append(a);
    }
    if (m.urgent && !mine && m.state !== 'acknowledged') {
      const b = document.createElement('button'); b.type = 'button'; b.className = 'ack'; b.textContent = 'Acknowledge';
      b.addEventListener('click', async () => { await api(`/api/v1/conversations/${c.id}/receipts`, { method: 'POST', body: { level: 'acknowledged', messages: [m.id] } }); renderChat(); });
      li.append(b);
    }
    if (!mine && m.state !== 'read' && m.state !== 'acknowledged') unread.push(m.id);
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
  if (unread.length) api(`/api/v1/conversations/${c.id}/receipts`, { method: 'POST', body: { level: 'read', messages: unread } }).catch(() => {});
}

// actions: reply, react, and for one's own messages edit and delete.
function actions(c, m, mine) {
  const bar = document.createElement('div'); bar.className = 'actions';
  const add = (label, title, fn) => {
    const b = document.createElement('button'); b.type = 'button'; b.className = 'ghost small';
    b.textContent = label; b.title = title; b.setAttribute('aria-label', title);
    b.addEventListener('click', () => fn().then(renderChat).catch((e) => alert(e.message)));
    bar.append(b);
  };
  const base = `/api/v1/conversations/${c.id}/messages/${m.id}`;
  add('↩', 'Reply', async () => { state.replyTo = m; $('replying').textContent = `Replying to ${name(m.sender)}: ${m.text}`; $('replying').hidden = false; $('text').focus(); });
  const mineReacted = (e) => (m.reactions?.[e] || []).includes(state.me?.peer_id);
  for (const e of ['👍', '✅', '❤️']) {
    add(e, mineReacted(e) ? `Remove ${e}` : `React ${e}`, () => api(`${base}/reactions`, { method: 'POST', body: { emoji: e, remove: mineReacted(e) } }));
  }
  if (mine) {
    add('✎', 'Edit', async () => { const t = prompt('Edit message', m.text); if (t) await api(base, { method: 'PATCH', body: { text: t } }); });
    add('🗑', 'Delete for everyone', async () => { if (confirm('Delete this message for everyone?')) await api(base, { method: 'DELETE', body: {} }); });
  }
  return bar;
}

function viewPhoto(c, m) {
  $('viewer-img').src = `/api/v1/conversations/${c.id}/messages/${m.id}/photo?size=full`;
  $('viewer').hidden = false;
  $('viewer-close').focus();
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
  const ul = $('members');
  ul.replaceChildren();
  for (const p of c.members || []) {
    const s = state.directory.find((d) => d.peer_id === p);
    const li = document.createElement('li');
    const who = document.createElement('span');
    const roles = [(c.admins || []).includes(p) ? 'admin' : '', ...(s?.roles || [])].filter(Boolean);
    who.textContent = `${p === state.me?.peer_id ? 'You' : name(p)}${roles.length ? ' · ' + roles.join(', ') : ''}`;
    li.append(who);
    if (admin && p !== state.me?.peer_id) {
      const b = document.createElement('button'); b.type = 'button'; b.className = 'ghost small'; b.textContent = 'Remove';
      b.setAttribute('aria-label', `Remove ${name(p)}`);
      b.addEventListener('click', async () => {
        if (!confirm(`Remove ${name(p)}? They will not read anything sent from now on.`)) return;
        await api(`/api/v1/conversations/${c.id}/members`, { method: 'POST', body: { remove: [p] } });
        await refreshList(); renderGroup();
      });
      li.append(b);
    }
    ul.append(li);
  }
  $('add-member').hidden = !admin;
  const sel = $('add-select');
  sel.replaceChildren();
  for (const s of state.directory.filter((d) => !(c.members || []).includes(d.peer_id))) {
    const o = document.createElement('option'); o.value = s.peer_id; o.textContent = `${s.name}${s.department ? ' · ' + s.department : ''}`;
    sel.append(o);
  }
}

function show(view) {
  for (const v of ['list-view', 'chat-view', 'new-view']) $(v).hidden = v !== view;
}

async function openChat(c) {
  state.open = c;
  $('group').hidden = true;
  $('chat-title').textContent = c.title || 'Untitled';
  show('chat-view');
  await renderChat();
  $('text').focus();
}

async function send(ev) {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !state.open) return;
  const body = { text, urgent: $('urgent').checked };
  if (state.replyTo) body.reply_to = state.replyTo.id;
  await api(`/api/v1/conversations/${state.open.id}/messages`, { method: 'POST', body });
  $('text').value = ''; $('urgent').checked = false;
  state.replyTo = null; $('replying').hidden = true;
  renderChat();
}

function renderDirectory() {
  const q = $('search').value.toLowerCase();
  const ul = $('directory');
  ul.replaceChildren();
  for (const s of state.directory) {
    const hay = [s.name, s.department, (s.roles || []).join(' '), s.site].join(' ').toLowerCase();
    if (q && !hay.includes(q)) continue;
    const li = document.createElement('li');
    const label = document.createElement('label');
    const box = document.createElement('input'); box.type = 'checkbox'; box.value = s.peer_id;
    const text = document.createElement('span');
    text.textContent = `${s.name}${s.department ? ' · ' + s.department : ''}${(s.roles || []).length ? ' · ' + s.roles.join(', ') : ''}`;
    label.append(box, text); li.append(label); ul.append(li);
  }
}

async function createChat(ev) {
  ev.preventDefault();
  const members = [...$('directory').querySelectorAll('input:checked')].map((b) => b.value);
  const { id } = await api('/api/v1/conversations', { method: 'POST', body: { title: $('title').value, members } });
  await refreshList();
  openChat(state.conversations.find((c) => c.id === id) || { id, title: $('title').value });
}

function listen() {
  const ws = new WebSocket(`ws://${location.host}/api/v1/events`);
  ws.addEventListener('message', async () => {
    await refreshList().catch(() => {});
    if (state.open) renderChat().catch(() => {});
  });
  ws.addEventListener('close', () => setTimeout(() => { if (!$('app').hidden) listen(); }, 2000));
}

async function start() {
  await refreshDirectory();
  await refreshList();
  await refreshStatus();
  show('list-view');
  listen();
  setInterval(() => { if (!$('app').hidden) refreshStatus().catch(() => {}); }, 5000);
}

$('unlock-form').addEventListener('submit', unlock);
$('send-form').addEventListener('submit', (e) => send(e).catch((err) => alert(err.message)));
$('new-form').addEventListener('submit', (e) => createChat(e).catch((err) => alert(err.message)));
$('new-chat').addEventListener('click', () => { show('new-view'); renderDirectory(); $('title').focus(); });
$('search').addEventListener('input', renderDirectory);
$('back').addEventListener('click', () => { state.open = null; show('list-view'); refreshList(); });
$('new-back').addEventListener('click', () => show('list-view'));
$('photo').addEventListener('change', () => sendPhoto().catch((e) => alert(e.message)));
$('viewer-close').addEventListener('click', () => { $('viewer').hidden = true; $('viewer-img').removeAttribute('src'); });
$('info').addEventListener('click', () => { $('group').hidden = !$('group').hidden; if (!$('group').hidden) renderGroup(); });
$('add-btn').addEventListener('click', async () => {
  const p = $('add-select').value;
  if (!p || !state.open) return;
  await api(`/api/v1/conversations/${state.open.id}/members`, { method: 'POST', body: { add: [p] } }).catch((e) => alert(e.message));
  await refreshList(); renderGroup();
});
$('lock-now').addEventListener('click', async () => { await api('/app/lock', { method: 'POST', body: {} }).catch(() => {}); showLock(); });

api('/api/v1/status').then(() => { $('lock').hidden = true; $('app').hidden = false; start(); }).catch(() => {});
