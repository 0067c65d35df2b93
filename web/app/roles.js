// medmesh on-call roles: the "On call" screen (who holds each role, take,
// hand over, release; definitions for rota-admins) and the on-call roles
// offered beside people in "New chat". Plain JS module, no build step; it
// talks only to this device's node, like app.js, and sets text only as
// text.
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

async function api(path, opts = {}) {
  const init = { method: opts.method || 'GET', credentials: 'same-origin', headers: {} };
  if (opts.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-Medmesh-CSRF'] = '1';
    init.body = JSON.stringify(opts.body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) { location.reload(); throw new Error('locked'); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

const rs = { roles: [], me: null, directory: [] };

const who = (h) => h.name || h.staff_id || h.peer_id.slice(-6);
// holderLine: who holds a role now, as this device knows it.
const holderLine = (r) => (r.holders.length ? r.holders.map(who).join(' and ') : 'nobody on call');
const splitLine = (r) => `Split: ${r.holders.length} colleagues hold this role after a network partition — one should hand over`;
const mine = (role) => (rs.me?.roles || []).includes(role);

async function load() {
  const [roles, me, directory] = await Promise.all([api('/api/v1/roles'), api('/api/v1/status'), api('/api/v1/directory')]);
  rs.roles = roles; rs.me = me; rs.directory = directory;
}

// ---- The "On call" screen ----

function buildScreen() {
  const list = $('list-view');
  const open = el('button', 'ghost', 'On call'); open.id = 'open-roles'; open.type = 'button';
  $('new-chat').before(open);
  const sec = el('section', 'panel'); sec.id = 'roles-view'; sec.hidden = true; sec.setAttribute('aria-label', 'On-call roles');
  const bar = el('div', 'bar');
  const back = el('button', 'ghost', '‹'); back.id = 'roles-back'; back.type = 'button'; back.setAttribute('aria-label', 'Back to chats');
  bar.append(back, el('h2', '', 'On call'));
  const err = el('p', 'error'); err.id = 'roles-error'; err.setAttribute('role', 'alert');
  const ul = el('ul', 'roles'); ul.id = 'roles';
  const none = el('p', 'none', 'No on-call roles defined for this site yet.'); none.id = 'no-roles'; none.hidden = true;
  sec.append(bar, err, none, ul, defineForm());
  list.after(sec);
  open.addEventListener('click', () => showRoles().catch((e) => { $('roles-error').textContent = e.message; }));
  back.addEventListener('click', () => { sec.hidden = true; list.hidden = false; });
}

function defineForm() {
  const f = el('form', 'define'); f.id = 'define-form'; f.hidden = true;
  const field = (id, label, ph) => {
    const l = el('label', '', label); l.htmlFor = id;
    const i = el('input'); i.id = id; i.autocomplete = 'off'; if (ph) i.placeholder = ph;
    f.append(l, i);
  };
  f.append(el('h3', '', 'Define or update a role'));
  field('rd-id', 'Role ID', 'cardio-reg');
  field('rd-name', 'Name', 'Cardiology registrar on call');
  field('rd-requires', 'Certificate role a holder must have', 'cardio-registrar');
  field('rd-chain', 'Escalation chain (role IDs, comma-separated)', 'cardio-cons, site-manager');
  const b = el('button', '', 'Save role'); b.type = 'submit';
  f.append(b);
  f.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const chain = $('rd-chain').value.split(',').map((s) => s.trim()).filter(Boolean);
    act({ action: 'define', role: $('rd-id').value.trim(), name: $('rd-name').value.trim(), requires: $('rd-requires').value.trim(), chain });
  });
  return f;
}

async function showRoles() {
  for (const v of ['list-view', 'chat-view', 'new-view']) $(v).hidden = true;
  $('roles-view').hidden = false;
  $('roles-error').textContent = '';
  await load();
  renderRoles();
}

async function act(body) {
  $('roles-error').textContent = '';
  try {
    await api('/api/v1/roles', { method: 'POST', body });
  } catch (e) { $('roles-error').textContent = e.message; return; }
  await load();
  renderRoles();
}

function renderRoles() {
  const ul = $('roles');
  $('no-roles').hidden = rs.roles.length > 0;
  $('define-form').hidden = !mine('rota-admin');
  ul.replaceChildren(...rs.roles.map(roleEntry));
}

function roleEntry(r) {
  const li = el('li', r.split ? 'role split' : 'role'); li.dataset.role = r.id;
  li.append(el('div', 'rname', r.name));
  li.append(el('div', 'holders', `On call: ${holderLine(r)}`));
  if (r.split) li.append(el('p', 'split-warn', splitLine(r)));
  const meta = [`needs ${r.requires}`];
  if (r.chain.length) meta.push(`escalates to ${r.chain.join(' → ')}`);
  li.append(el('div', 'rmeta', meta.join(' · ')));
  const acts = el('div', 'ractions');
  const holding = r.holders.some((h) => h.peer_id === rs.me?.peer_id);
  if (mine(r.requires) && (!holding || r.split)) {
    const b = el('button', 'small take', 'Take'); b.type = 'button';
    b.addEventListener('click', () => act({ action: 'take', role: r.id }));
    acts.append(b);
  }
  if (mine(r.requires) || mine('rota-admin')) {
    const colleagues = rs.directory.filter((s) => (s.roles || []).includes(r.requires) && s.peer_id !== rs.me?.peer_id);
    if (colleagues.length) {
      const sel = el('select'); sel.className = 'handover-to'; sel.setAttribute('aria-label', `Hand ${r.name} over to`);
      for (const s of colleagues) { const o = el('option', '', s.name); o.value = s.peer_id; sel.append(o); }
      const b = el('button', 'small handover', 'Hand over'); b.type = 'button';
      b.addEventListener('click', () => act({ action: 'handover', role: r.id, to: sel.value }));
      acts.append(sel, b);
    }
    if (r.holders.length) {
      const b = el('button', 'small ghost release', 'Release'); b.type = 'button';
      b.addEventListener('click', () => act({ action: 'release', role: r.id }));
      acts.append(b);
    }
  }
  li.append(acts);
  return li;
}

// ---- On-call roles in "New chat" ----

function buildNewChat() {
  const fs = el('fieldset', 'on-call'); fs.id = 'on-call';
  fs.append(el('legend', '', 'On call (reaches whoever holds the role now)'));
  const ul = el('ul', 'directory'); ul.id = 'on-call-roles';
  fs.append(ul);
  $('search').labels[0].before(fs);
  $('new-chat').addEventListener('click', () => refreshNewChat().catch(() => {}));
}

async function refreshNewChat() {
  await load();
  const ul = $('on-call-roles');
  $('on-call').hidden = rs.roles.length === 0;
  const item = (value, text, r) => {
    const li = el('li'), label = el('label');
    const radio = el('input'); radio.type = 'radio'; radio.name = 'oncall'; radio.value = value; radio.checked = value === '';
    radio.addEventListener('change', () => { if (r && !$('title').value) $('title').value = r.name; });
    label.append(radio, el('span', r?.split ? 'split-warn' : '', text));
    li.append(label);
    return li;
  };
  ul.replaceChildren(item('', 'No role — only the people ticked below'),
    ...rs.roles.map((r) => item(r.id, `${r.name} — ${holderLine(r)}${r.split ? ' (split: both will get it)' : ''}`, r)));
}

// The answer to a message to a role says whom it reached; the chat shows it.
document.addEventListener('medmesh:role-chat', (ev) => {
  const a = ev.detail?.role;
  let note = $('role-note');
  if (!note) {
    note = el('p', 'role-note'); note.id = 'role-note'; note.setAttribute('role', 'status');
    $('chat-view').querySelector('.bar').after(note);
    $('back').addEventListener('click', () => { note.hidden = true; });
  }
  note.hidden = !a;
  if (!a) return;
  note.className = a.split ? 'role-note split-warn' : 'role-note';
  note.textContent = `To ${a.name}: ${holderLine(a)}, as this device knew at ${new Date(a.as_of).toLocaleTimeString()}` +
    (a.split ? ' — the role is split: every holder got it' : '');
});

buildScreen();
buildNewChat();
