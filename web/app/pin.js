// Quick unlock: after unlocking with the device passphrase, the user may
// set a PIN of 4–8 digits that reopens the app after the inactivity lock.
// The node keeps it in memory only (never on disk, gone at restart or a
// lock by hand) and only for this browser; three wrong PINs clear it and
// the passphrase is needed again (see web/pin.go).
const $ = (id) => document.getElementById(id);

async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-Medmesh-CSRF': '1' }, body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, data };
}

// refresh shows the PIN form on the lock screen if a PIN is set for this
// browser.
async function refresh() {
  let usable = false;
  try { usable = !!(await (await fetch('/app/unlock/pin', { credentials: 'same-origin' })).json()).pin; } catch { /* locked out or offline */ }
  $('pin-form').hidden = !usable;
  if (usable && !$('lock').hidden) $('pin').focus();
}

async function unlockPIN(ev) {
  ev.preventDefault();
  $('pin-error').textContent = '';
  const { ok, data } = await post('/app/unlock/pin', { pin: $('pin').value });
  $('pin').value = '';
  if (ok) { location.reload(); return; }
  $('pin-error').textContent = data.error || 'Wrong PIN';
  if (data.pin === false) { $('pin-form').hidden = true; $('unlock-error').textContent = data.error || ''; $('pass').focus(); }
}

async function setPIN(ev) {
  ev.preventDefault();
  const { ok, data } = await post('/api/v1/unlock/pin', { pin: $('new-pin').value });
  $('new-pin').value = '';
  $('pin-set-note').textContent = ok ? 'PIN set. It reopens the app after the inactivity lock, until the node restarts or you lock by hand.' : data.error || 'Could not set the PIN';
  if (ok) setTimeout(() => { $('pin-set').hidden = true; }, 4000);
}

$('pin-form').addEventListener('submit', (e) => unlockPIN(e).catch((err) => { $('pin-error').textContent = err.message; }));
$('pin-set').addEventListener('submit', (e) => setPIN(e).catch((err) => { $('pin-set-note').textContent = err.message; }));
$('pin-open').addEventListener('click', () => { $('pin-set').hidden = !$('pin-set').hidden; $('pin-set-note').textContent = ''; if (!$('pin-set').hidden) $('new-pin').focus(); });
$('pin-cancel').addEventListener('click', () => { $('pin-set').hidden = true; });
// The lock screen shows (at load, at the inactivity lock, by hand): ask
// the node whether this browser has a PIN.
new MutationObserver(() => { if (!$('lock').hidden) refresh(); }).observe($('lock'), { attributes: true, attributeFilter: ['hidden'] });
refresh();
