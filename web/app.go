package web

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"sync"
	"time"
)

//go:embed app
var appFiles embed.FS

// DefaultLockAfter is the inactivity lock of the web app.
const DefaultLockAfter = 2 * time.Minute

const (
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

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.last, id)
	s.mu.Unlock()
}

// WithApp serves the web app; unlock checks the device passphrase.
func WithApp(unlock func(passphrase []byte) bool, lockAfter time.Duration) Option {
	return func(s *Server) {
		if lockAfter <= 0 {
			lockAfter = DefaultLockAfter
		}
		s.unlock = unlock
		s.sessions = &sessions{last: map[string]time.Time{}, lockAfter: lockAfter, now: time.Now}
	}
}

func (s *Server) routeApp() {
	sub, _ := fs.Sub(appFiles, "app")
	files := http.FileServer(http.FS(sub))
	s.public = http.NewServeMux()
	s.public.Handle("GET /", files)
	s.public.HandleFunc("POST /app/unlock", s.unlockApp)
	s.mux.HandleFunc("POST /app/lock", s.lockApp)
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
	if req.Passphrase == "" || !s.unlock([]byte(req.Passphrase)) {
		writeError(w, http.StatusUnauthorized, "wrong passphrase")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.sessions.create(), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) lockApp(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// sessionAuth accepts an unlocked session; requests that change state must
// also carry the CSRF header (which a cross-site form cannot set).
func (s *Server) sessionAuth(r *http.Request) bool {
	if s.sessions == nil {
		return false
	}
	c, err := r.Cookie(sessionCookie)
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
