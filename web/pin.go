package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/medmesh/medmesh/audit"
)

// Quick unlock PIN limits.
const (
	PINMinDigits = 4
	PINMaxDigits = 8
	// PINMaxWrong wrong PINs (counted from when the PIN was set, not
	// reset by a right one) clear the PIN: the passphrase is needed again.
	PINMaxWrong = 3
)

// pinCookie prefixes the name of the cookie that binds a PIN to the
// browser that set it; pinPath is the only path it is sent to.
const (
	pinCookie = "medmesh_pin"
	pinPath   = "/app/unlock/pin"
)

// pinLock is the quick-unlock PIN of a running node: after the app has
// been unlocked with the device passphrase, its user may set a PIN that
// opens a new session once the inactivity lock has closed theirs. It never
// opens the device's data at rest (the node is already running, its keys
// already unwrapped by the passphrase) and it lives only in this process:
// no PIN survives a restart, an explicit lock (POST /app/lock) or
// PINMaxWrong wrong guesses.
//
// The PIN itself is not kept: only HMAC-SHA256 of it under a random key
// made when it was set (both in memory only), compared in constant time.
// The PIN works only in the browser that set it: setting it also sets a
// random binding value in an HttpOnly cookie sent only to pinPath, and an
// attempt without that value is not an attempt (409, nothing counted).
// Wrong PINs go through the node's unlock gate like wrong passphrases, so
// they share its back-off.
type pinLock struct {
	mu     sync.Mutex
	key    []byte              // HMAC key; nil when no PIN is set
	mac    []byte              // HMAC-SHA256(key, PIN)
	bind   string              // the setting browser's cookie value
	wrong  int                 // wrong PINs since it was set
	viaPIN map[string]struct{} // sessions opened with the PIN
}

// set replaces the PIN with pin, bound to a new browser value it returns.
func (p *pinLock) set(pin []byte) (bind string) {
	key := make([]byte, 32)
	rand.Read(key)
	m := hmac.New(sha256.New, key)
	m.Write(pin)
	b := make([]byte, 32)
	rand.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.key, p.mac, p.bind, p.wrong = key, m.Sum(nil), hex.EncodeToString(b), 0
	return p.bind
}

// clear forgets the PIN, reporting whether one was set.
func (p *pinLock) clear() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clearLocked()
}

func (p *pinLock) clearLocked() bool {
	had := p.key != nil
	clear(p.key)
	p.key, p.mac, p.bind, p.wrong = nil, nil, "", 0
	return had
}

// usable reports whether a PIN is set for the browser holding bind.
func (p *pinLock) usable(bind string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.key != nil && bind != "" && subtle.ConstantTimeCompare([]byte(bind), []byte(p.bind)) == 1
}

// check compares pin with the PIN set for bind. ok is false when no PIN is
// set for bind (not an attempt); otherwise right says whether it matched
// and cleared whether this wrong guess used up the last try.
func (p *pinLock) check(bind string, pin []byte) (ok, right, cleared bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key == nil || bind == "" || subtle.ConstantTimeCompare([]byte(bind), []byte(p.bind)) != 1 {
		return false, false, false
	}
	m := hmac.New(sha256.New, p.key)
	m.Write(pin)
	if hmac.Equal(m.Sum(nil), p.mac) {
		return true, true, false
	}
	if p.wrong++; p.wrong >= PINMaxWrong {
		p.clearLocked()
		return true, false, true
	}
	return true, false, false
}

// opened records a session opened with the PIN (it may not set a PIN),
// forgetting those that are no longer open.
func (p *pinLock) opened(id string, open func(string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.viaPIN == nil {
		p.viaPIN = map[string]struct{}{}
	}
	for s := range p.viaPIN {
		if !open(s) {
			delete(p.viaPIN, s)
		}
	}
	p.viaPIN[id] = struct{}{}
}

func (p *pinLock) openedWithPIN(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.viaPIN[id]
	return ok
}

// pinName names the binding cookie of this node (see cookieName).
func (s *Server) pinName() string { return pinCookie + s.cookie[len(sessionCookie):] }

func (s *Server) routePIN() {
	s.pin = &pinLock{}
	s.public.HandleFunc("GET "+pinPath, s.pinStatus)
	s.public.HandleFunc("POST "+pinPath, s.unlockPIN)
	s.mux.HandleFunc("POST /api/v1/unlock/pin", s.setPIN)
	s.mux.HandleFunc("DELETE /api/v1/unlock/pin", s.clearPIN)
}

// readPIN reads {"pin": "digits"} into a byte slice the caller clears;
// ok is false (and the answer written) if it is not 4–8 ASCII digits.
// Errors never repeat what was sent.
func readPIN(w http.ResponseWriter, r *http.Request) (pin []byte, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1024))
	defer clear(body)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return nil, false
	}
	var req struct {
		PIN json.RawMessage `json:"pin"`
	}
	if json.Unmarshal(body, &req) != nil || len(req.PIN) < 2 || req.PIN[0] != '"' || req.PIN[len(req.PIN)-1] != '"' {
		clear(req.PIN)
		writeError(w, http.StatusBadRequest, "pin must be a string of 4 to 8 digits")
		return nil, false
	}
	pin = req.PIN[1 : len(req.PIN)-1]
	good := len(pin) >= PINMinDigits && len(pin) <= PINMaxDigits
	for _, c := range pin {
		good = good && c >= '0' && c <= '9'
	}
	if !good {
		clear(req.PIN)
		writeError(w, http.StatusBadRequest, "pin must be a string of 4 to 8 digits")
		return nil, false
	}
	return pin, true
}

func (s *Server) bindOf(r *http.Request) string {
	if c, err := r.Cookie(s.pinName()); err == nil {
		return c.Value
	}
	return ""
}

func (s *Server) pinStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"pin": s.pin.usable(s.bindOf(r))})
}

// setPIN sets the quick-unlock PIN: only from the app's session opened
// with the passphrase (not with the bearer token, not from a session the
// PIN opened).
func (s *Server) setPIN(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(s.cookie)
	if err != nil || s.sessions == nil || !s.sessions.valid(c.Value, false) || crossSite(r) {
		writeError(w, http.StatusForbidden, "a PIN is set from the app, after unlocking it with the passphrase")
		return
	}
	if s.pin.openedWithPIN(c.Value) {
		writeError(w, http.StatusForbidden, "unlock with the passphrase to set a PIN")
		return
	}
	pin, ok := readPIN(w, r)
	if !ok {
		return
	}
	bind := s.pin.set(pin)
	clear(pin)
	s.note(audit.PINSet)
	http.SetCookie(w, &http.Cookie{Name: s.pinName(), Value: bind, Path: pinPath, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// clearPIN forgets the PIN (the user's choice; the bearer token may too).
func (s *Server) clearPIN(w http.ResponseWriter, r *http.Request) {
	s.lockPIN(w)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// lockPIN clears the PIN and the browser's binding cookie.
func (s *Server) lockPIN(w http.ResponseWriter) {
	if s.pin == nil {
		return
	}
	if s.pin.clear() {
		s.note(audit.PINCleared)
	}
	http.SetCookie(w, &http.Cookie{Name: s.pinName(), Value: "", Path: pinPath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// unlockPIN opens a session with the PIN: the PIN variant of POST
// /app/unlock, under the same gate (one check at a time, back-off after a
// wrong guess, shared with passphrase attempts).
func (s *Server) unlockPIN(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(csrfHeader) != "1" {
		writeError(w, http.StatusForbidden, "missing CSRF header")
		return
	}
	pin, ok := readPIN(w, r)
	if !ok {
		return
	}
	defer clear(pin)
	bind := s.bindOf(r)
	if !s.pin.usable(bind) { // not an attempt: nothing to guess against
		writeJSON(w, http.StatusConflict, map[string]any{"error": ErrNoPIN.Error(), "pin": false})
		return
	}
	if wait, err := s.gate.enter(); err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"error": err.Error(), "pin": true})
		return
	}
	set, right, cleared := s.pin.check(bind, pin)
	if set {
		s.gate.leave(right)
	} else {
		s.gate.abandon()
	}
	switch {
	case !set: // cleared or replaced since usable: still not an attempt
		writeJSON(w, http.StatusConflict, map[string]any{"error": ErrNoPIN.Error(), "pin": false})
	case cleared:
		s.note(audit.PINFailed)
		s.lockPIN(w) // already cleared: expires the cookie
		s.note(audit.PINCleared)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": ErrPINCleared.Error(), "pin": false})
	case !right:
		s.note(audit.PINFailed)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "wrong PIN", "pin": true})
	default:
		id := s.sessions.create()
		s.pin.opened(id, func(x string) bool { return s.sessions.valid(x, false) })
		s.note(audit.PINUnlocked)
		http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}
}
