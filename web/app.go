package web

import (
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/medmesh/medmesh/audit"
)

//go:embed app
var appFiles embed.FS

// DefaultLockAfter is the inactivity lock of the web app.
const DefaultLockAfter = 2 * time.Minute

const (
	// sessionCookie prefixes the session cookie's name; cookieName adds
	// what makes it unique to a node.
	sessionCookie = "medmesh_session"
	csrfHeader    = "X-Medmesh-CSRF"
	// backgroundHeader marks the app's own polling: not user activity.
	backgroundHeader = "X-Medmesh-Background"
)

// securityHeaders go on every response: a strict CSP (no inline script, no
// third-party origin), no framing, no referrer, no caching.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// sessions are the unlocked browser sessions: random IDs in an HttpOnly,
// SameSite=Strict cookie, locked after LockAfter without a request.
type sessions struct {
	mu        sync.Mutex
	last      map[string]time.Time
	lockAfter time.Duration
	now       func() time.Time
	onLock    func() // a session locked by inactivity (must not block)
}

func (s *sessions) create() string {
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	s.last[id] = s.now()
	s.mu.Unlock()
	return id
}

// valid checks a session and, if touch, counts the request as activity
// (the app's background polling does not: it must not keep a phone left on
// a desk unlocked).
func (s *sessions) valid(id string, touch bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.last { // drop the locked (lockAfter is read under mu)
		if s.now().Sub(t) > s.lockAfter {
			delete(s.last, k)
			if s.onLock != nil {
				s.onLock() // locked by inactivity: recorded when noticed
			}
		}
	}
	if _, ok := s.last[id]; !ok {
		return false
	}
	if touch {
		s.last[id] = s.now()
	}
	return true
}

// drop ends a session, reporting whether it was open.
func (s *sessions) drop(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.last[id]
	delete(s.last, id)
	return ok
}

// WithApp serves the web app; unlock checks the device passphrase.
func WithApp(unlock func(passphrase []byte) bool, lockAfter time.Duration) Option {
	return func(s *Server) {
		if lockAfter <= 0 {
			lockAfter = DefaultLockAfter
		}
		s.unlock = unlock
		s.sessions = &sessions{last: map[string]time.Time{}, lockAfter: lockAfter, now: time.Now}
		s.gate = &unlockGate{now: time.Now}
	}
}

// cookieName names the session cookie of the node with peer ID id.
// Browsers keep cookies per host, not per port: every node on 127.0.0.1
// gets every other's cookies, so each needs its own name (the demo runs
// several nodes in one browser).
func cookieName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return sessionCookie + "_" + hex.EncodeToString(sum[:6])
}

// CookieName is the name of the app's session cookie.
func (s *Server) CookieName() string { return s.cookie }

func (s *Server) routeApp() {
	sub, _ := fs.Sub(appFiles, "app")
	files := http.FileServer(http.FS(sub))
	s.public = http.NewServeMux()
	s.public.Handle("GET /", foreignWorkers(files))
	s.public.HandleFunc("POST /app/unlock", s.unlockApp)
	s.mux.HandleFunc("POST /app/lock", s.lockApp)
	s.routePWA()
	s.routePIN()
}

func (s *Server) unlockApp(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(csrfHeader) != "1" {
		writeError(w, http.StatusForbidden, "missing CSRF header")
		return
	}
	var req struct {
		Passphrase string `json:"passphrase"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if req.Passphrase == "" {
		// Not an attempt: nothing is tried, nothing is recorded (an
		// empty request that skips the gate must not write the trail).
		writeError(w, http.StatusBadRequest, "enter the passphrase")
		return
	}
	if wait, err := s.gate.enter(); err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	right := false
	defer func() { s.gate.leave(right) }() // also when unlock panics
	if right = s.unlock([]byte(req.Passphrase)); !right {
		s.note(audit.UnlockFailed)
		writeError(w, http.StatusUnauthorized, "wrong passphrase")
		return
	}
	s.note(audit.Unlocked)
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: s.sessions.create(), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) lockApp(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(s.cookie); err == nil && s.sessions.drop(c.Value) {
		s.note(audit.Locked)
	}
	s.lockPIN(w) // a lock by hand needs the passphrase again
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// sessionAuth accepts an unlocked session; requests that change state must
// also carry the CSRF header (which a cross-site form cannot set), and a
// request a browser marks as made by another origin's page gets no session
// (ServeHTTP checks the Origin).
func (s *Server) sessionAuth(r *http.Request) bool {
	if s.sessions == nil || crossSite(r) {
		return false
	}
	c, err := r.Cookie(s.cookie)
	if err != nil || !s.sessions.valid(c.Value, r.Header.Get(backgroundHeader) == "") {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(csrfHeader) != "1" {
		return false
	}
	return true
}

// SetLockAfter changes the inactivity lock (settings, tests).
func (s *Server) SetLockAfter(d time.Duration) {
	if s.sessions == nil {
		return
	}
	s.sessions.mu.Lock()
	s.sessions.lockAfter = d
	s.sessions.mu.Unlock()
}
