// medmesh web app: urgent escalation. What each urgent message's
// escalation says ("Escalated to …"), a banner that re-alerts when the
// node says an urgent message went unacknowledged, was escalated to this
// user, needs the sender to choose who is next, or expired unread — and
// escalating to a colleague the sender chose. Text is only ever set as
// text; requests carry the CSRF header like app.js's.

async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-Medmesh-CSRF': '1' }, body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

// escalationText: one line for an urgent message's escalation state.
export function escalationText(m, mine, name) {
  if (m.state === 'expired-unread') return 'Expired before anyone read it';
  const e = m.escalation;
  if (!e) return '';
  const to = e.to && e.to.length ? `Escalated to ${e.to.map(name).join(', ')}${e.label ? ` (${e.label})` : ''}` : '';
  if (m.quoted_by) return `Escalated to you by ${name(m.quoted_by)}`;
  switch (e.state) {
    case 'waiting': return mine ? `Acknowledgement wanted by ${new Date(m.deadline).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}` : '';
    case 'due': return to ? `${to} · not acknowledged yet` : 'Not acknowledged in time';
    case 'choose': return (to ? `${to} · ` : '') + 'Nobody next on call: choose who to escalate to';
    case 'escalated': return to;
    case 'acknowledged': return to ? `${to} · acknowledged` : '';
  }
  return to;
}

// renderEscalation keeps e (a part of a message bubble) up to date: the
// line, and for the sender of a message due or waiting for a choice, an
// "Escalate…" button asking for a staff ID.
export function renderEscalation(e, m, mine, cid, name) {
  const t = escalationText(m, mine, name);
  let line = e.querySelector('span');
  if (!line) { line = document.createElement('span'); e.append(line); }
  if (line.textContent !== t) line.textContent = t;
  e.dataset.state = m.state === 'expired-unread' ? 'expired-unread' : (m.escalation?.state || '');
  const want = mine && m.escalation && (m.escalation.state === 'choose' || m.escalation.state === 'due');
  let b = e.querySelector('button');
  if (want && !b) {
    b = document.createElement('button');
    b.type = 'button'; b.className = 'small escalate'; b.textContent = 'Escalate…';
    b.addEventListener('click', async () => {
      const to = (prompt('Escalate to (staff ID)') || '').trim();
      if (!to) return;
      try { await post(`/api/v1/conversations/${cid}/messages/${e.dataset.msg}/escalate`, { to }); } catch (err) { alert(err.message); }
    });
    e.append(b);
  } else if (!want && b) b.remove();
  e.dataset.msg = m.id;
}

// escalateMessage asks the sender for a staff ID and escalates message
// id of conversation cid to them (the message action sheet offers it).
export async function escalateMessage(cid, id) {
  const to = (prompt('Escalate to (staff ID)') || '').trim();
  if (!to) return;
  try { await post(`/api/v1/conversations/${cid}/messages/${id}/escalate`, { to }); } catch (err) { alert(err.message); }
}

// canEscalate: the sender of an urgent message due, or waiting for a
// choice, may escalate it to a colleague.
export const canEscalate = (m, mine) => !!(mine && m.escalation && (m.escalation.state === 'choose' || m.escalation.state === 'due'));

const alerts = {
  realert: 'Urgent message not acknowledged in time',
  escalated: 'An urgent message was escalated to you — please acknowledge it',
  choose: 'Nobody is next on call for your urgent message: choose who to escalate to',
  'expired-unread': 'A message of yours expired before anyone read it',
};

// onEvent re-alerts: an escalation event from the node shows the banner
// (until dismissed) and vibrates where the device can.
export function onEvent(ev) {
  const text = alerts[ev && ev.type];
  if (!text) return;
  let box = document.getElementById('escalation-banner');
  if (!box) {
    box = document.createElement('div');
    box.id = 'escalation-banner'; box.className = 'esc-banner'; box.setAttribute('role', 'alert');
    const span = document.createElement('span');
    const close = document.createElement('button');
    close.type = 'button'; close.className = 'ghost small'; close.textContent = 'Dismiss';
    close.addEventListener('click', () => { box.hidden = true; });
    box.append(span, close);
    const app = document.getElementById('app');
    app.insertBefore(box, app.firstElementChild?.nextElementSibling || null);
  }
  box.firstElementChild.textContent = text;
  box.dataset.type = ev.type;
  box.hidden = false;
  if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
}

// The acknowledgement time of an urgent message: a select beside the
// Urgent box, shown while it is ticked (the node's default, 5 minutes,
// is the first choice).
const withinChoices = [[300, '5 min'], [60, '1 min'], [120, '2 min'], [600, '10 min'], [1800, '30 min'], [3600, '1 h']];

export function ackWithinField() {
  const urgent = document.getElementById('urgent');
  if (!urgent || document.getElementById('ack-within')) return;
  const sel = document.createElement('select');
  sel.id = 'ack-within'; sel.className = 'ack-within'; sel.hidden = true;
  sel.setAttribute('aria-label', 'Acknowledge within');
  for (const [v, label] of withinChoices) {
    const o = document.createElement('option'); o.value = String(v); o.textContent = label; sel.append(o);
  }
  urgent.closest('label').after(sel);
  urgent.addEventListener('change', () => { sel.hidden = !urgent.checked; });
}

// ackWithin is the chosen acknowledgement time in seconds (urgent only).
export function ackWithin() {
  const sel = document.getElementById('ack-within');
  return sel && !sel.hidden ? Number(sel.value) : 0;
}
