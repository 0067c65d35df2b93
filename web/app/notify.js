// medmesh alerts: installs the service worker, and raises notifications
// that say how many messages wait — never who sent them, what they say,
// which conversation or which patient: "medmesh — 1 urgent message",
// "medmesh — 3 new messages". They are raised only while the page is
// hidden (in another tab, or the phone's screen on another app), from the
// counts the app's conversation list already holds (app.js dispatches
// 'medmesh:conversations' on each refresh). Urgent messages also sound (a
// WebAudio tone: no file, no request) and repeat every repeatMs until
// none is unread any more (read or acknowledged) or the user dismisses
// the notification. Permission is asked only from the Alerts button.
const $ = (id) => document.getElementById(id);

// medmeshNotify: the settings and counters tests read (no content in it).
const cfg = window.medmeshNotify = { repeatMs: 30000, raised: 0, tones: 0, repeating: false };

const supported = () => 'Notification' in window;
const hidden = () => document.visibilityState === 'hidden';
const plural = (n, one, many) => `medmesh — ${n} ${n === 1 ? one : many}`;

let last = null;    // conversation id → { unread, urgent }, as last listed
let totals = { unread: 0, urgent: 0 };
let shown = null;   // the notification on screen, if this page raised it
let dismissed = false;
let repeat = 0;
let audio = null;

// title is the whole text of a notification: counts, nothing else.
const title = () => (totals.urgent > 0 ? plural(totals.urgent, 'urgent message', 'urgent messages')
  : plural(totals.unread, 'new message', 'new messages'));

async function raise(urgent) {
  if (!supported() || Notification.permission !== 'granted' || !hidden()) return;
  const opts = { body: '', tag: 'medmesh', renotify: true, requireInteraction: urgent, silent: false, icon: '/icon-192.png' };
  cfg.raised++;
  try {
    const n = new Notification(title(), opts);
    shown = n;
    n.onclose = () => { if (shown === n) { shown = null; dismiss(); } };
    n.onclick = () => { window.focus(); n.close(); };
  } catch {
    // Android's Chrome raises notifications only through the worker.
    const reg = await navigator.serviceWorker?.getRegistration?.();
    await reg?.showNotification(title(), opts);
  }
}

function closeShown() { const n = shown; shown = null; n?.close(); }

function dismiss() { dismissed = true; stopRepeat(); }

function stopRepeat() { clearInterval(repeat); repeat = 0; cfg.repeating = false; }

// tone: two short beeps; silent until a user gesture let audio start.
function tone() {
  if (!audio || audio.state !== 'running') return;
  cfg.tones++;
  const t = audio.currentTime;
  for (const at of [0, 0.35]) {
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = 880;
    g.gain.setValueAtTime(0.0001, t + at);
    g.gain.exponentialRampToValueAtTime(0.3, t + at + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, t + at + 0.25);
    o.connect(g).connect(audio.destination);
    o.start(t + at); o.stop(t + at + 0.3);
  }
}

function alertUrgent() {
  tone();
  raise(true);
}

// onList: a fresh conversation list. New messages are counted against the
// list before; the first list after loading only sets the baseline.
function onList(list) {
  const now = new Map(list.map((c) => [c.id, { unread: c.unread || 0, urgent: c.urgent || 0 }]));
  let fresh = 0, freshUrgent = 0;
  totals = { unread: 0, urgent: 0 };
  for (const [id, n] of now) {
    totals.unread += n.unread; totals.urgent += n.urgent;
    if (!last) continue;
    const p = last.get(id) || { unread: 0, urgent: 0 };
    fresh += Math.max(0, n.unread - p.unread);
    freshUrgent += Math.max(0, n.urgent - p.urgent);
  }
  last = now;
  if (totals.urgent === 0) { stopRepeat(); if (totals.unread === 0) closeShown(); }
  if (freshUrgent > 0) {
    dismissed = false;
    alertUrgent();
    stopRepeat();
    repeat = setInterval(() => { if (!dismissed && totals.urgent > 0) alertUrgent(); else stopRepeat(); }, cfg.repeatMs);
    cfg.repeating = true;
  } else if (fresh > 0) {
    raise(false);
  }
}

// enable: the Alerts button — a user gesture, so the permission prompt
// may show and the tone may play.
async function enable() {
  try {
    audio ||= new AudioContext();
    await audio.resume();
  } catch { audio = null; }
  if (supported() && Notification.permission === 'default') await Notification.requestPermission();
  renderButton();
}

function renderButton() {
  const b = $('alerts');
  if (!b) return;
  const state = !supported() ? 'unsupported' : Notification.permission;
  b.hidden = state === 'unsupported' || (state === 'granted' && audio?.state === 'running');
  b.disabled = state === 'denied';
  b.textContent = state === 'denied' ? '🔕' : '🔔';
  b.title = state === 'denied' ? 'Alerts are blocked in this browser’s site settings' : 'Enable alerts: notify me of new messages while the app is in the background';
  b.setAttribute('aria-label', state === 'denied' ? 'Alerts blocked' : 'Enable alerts');
}

window.addEventListener('medmesh:conversations', (ev) => onList(ev.detail || []));
document.addEventListener('visibilitychange', () => { if (!hidden()) closeShown(); });
// Any tap lets the tone play later (browsers start audio only after one).
document.addEventListener('pointerdown', () => {
  if (!audio) { try { audio = new AudioContext(); } catch { return; } }
  audio.resume().catch(() => {}).then(renderButton);
});
$('alerts')?.addEventListener('click', () => enable().catch(() => {}));
renderButton();

// The service worker keeps the app shell only (see sw.js). Browsers allow
// it on http://127.0.0.1 and localhost; on a LAN address they refuse it,
// and the app works as before.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
  navigator.serviceWorker.addEventListener('message', (ev) => {
    if (ev.data?.type === 'medmesh-notification' && ev.data.action === 'dismissed') dismiss();
  });
}
