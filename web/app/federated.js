// medmesh federated colleagues: in "New chat", the devices of other trusts
// this device admits now (GET /api/v1/federated), under "Other trusts",
// each as "Name · Department · roles · their trust". Ticked ones are
// invited by peer ID with the colleagues ticked above (app.js reads both
// lists). Plain JS module, no build step; it talks only to this device's
// node and sets text only as text.
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

let peers = [];

// line: a federated colleague as their certificate names them, with
// their trust.
export const line = (p) => [p.name, p.department, (p.roles || []).join(', '), p.other_trust].filter(Boolean).join(' · ');

function section() {
  let ul = $('federated');
  if (ul) return ul;
  const h = el('h3', 'federated-head', 'Other trusts'); h.id = 'federated-head'; h.hidden = true;
  ul = el('ul', 'directory'); ul.id = 'federated'; ul.hidden = true;
  ul.setAttribute('aria-labelledby', 'federated-head');
  $('directory').after(h, ul);
  return ul;
}

function render() {
  const ul = section();
  const q = ($('search').value || '').toLowerCase();
  const ticked = new Set([...ul.querySelectorAll('input:checked')].map((b) => b.value));
  const shown = peers.filter((p) => !q || line(p).toLowerCase().includes(q));
  ul.replaceChildren(...shown.map((p) => {
    const li = el('li'), label = el('label');
    const box = el('input'); box.type = 'checkbox'; box.value = p.peer_id; box.checked = ticked.has(p.peer_id);
    label.append(box, el('span', '', line(p))); li.append(label);
    return li;
  }));
  ul.hidden = $('federated-head').hidden = shown.length === 0;
}

async function load() {
  const r = await fetch('/api/v1/federated', { credentials: 'same-origin' });
  peers = r.ok ? await r.json() : [];
  if (!Array.isArray(peers)) peers = [];
  render();
}

$('new-chat').addEventListener('click', () => { section().replaceChildren(); load().catch(() => {}); });
$('search').addEventListener('input', render);
