package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/node"
)

// Backend is what the API needs from a node.
type Backend interface {
	Status() node.Status
	Directory() []node.StaffInfo
	SubmitCRL(ctx context.Context, data []byte) (bool, error)
}

// Limits.
const maxCRLBody = 16 << 20

// Server is the local API.
type Server struct {
	b        Backend
	conv     Conversations
	staff    Staff
	token    string
	log      *slog.Logger
	mux      *http.ServeMux
	public   *http.ServeMux // the app's files and unlock: no token needed
	unlock   func([]byte) bool
	sessions *sessions
	gate     *unlockGate
	cookie   string   // the session cookie's name, unique to this node
	hosts    []string // host names besides loopback (WithHosts)
	audit    Audit    // WithAudit
	pin      *pinLock // the quick-unlock PIN (pin.go)
	roles    Roles    // WithRoles
}

// Option configures the server.
type Option func(*Server)

// WithConversations serves the conversation API from c, resolving members
// with staff.
func WithConversations(c Conversations, staff Staff) Option {
	return func(s *Server) { s.conv, s.staff = c, staff }
}

// NewToken makes a random API token.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// New builds the API over b, answering only requests bearing token.
func New(b Backend, token string, log *slog.Logger, opts ...Option) *Server {
	s := &Server{b: b, token: token, log: log, mux: http.NewServeMux()}
	for _, o := range opts {
		o(s)
	}
	if s.conv != nil {
		s.routeConversations()
		s.routeEscalations()
	}
	if s.unlock != nil {
		s.cookie = cookieName(b.Status().PeerID)
		s.routeApp()
	}
	if s.audit != nil {
		s.routeAudit()
		if s.sessions != nil {
			s.sessions.onLock = func() { s.note(audit.Locked) }
		}
	}
	s.mux.HandleFunc("GET /api/v1/status", s.status)
	s.mux.HandleFunc("GET /api/v1/directory", s.directory)
	s.mux.HandleFunc("POST /api/v1/trust/crl", s.postCRL)
	s.routeFederation()
	s.routeFederated()
	s.mux.HandleFunc("GET /api/v1/sites", s.sites)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return s
}

// ServeHTTP checks the Host, the Origin and the token or session, then
// routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("API handler panic", "path", r.URL.Path, "panic", v)
			writeError(w, http.StatusInternalServerError, "internal error")
		}
	}()
	securityHeaders(w.Header())
	if !s.hostAllowed(r) {
		writeError(w, http.StatusMisdirectedRequest, ErrUnknownHost.Error())
		return
	}
	origin := r.Header.Get("Origin")
	if _, sent := r.Header["Origin"]; sent && !s.ownOrigin(r, origin) {
		writeError(w, http.StatusForbidden, ErrForeignOrigin.Error())
		return
	}
	if s.public != nil && (r.URL.Path == "/app/unlock" || !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/app/lock") {
		if stateChanging(r) && origin == "" { // only the app's own page unlocks
			writeError(w, http.StatusForbidden, ErrNoOrigin.Error())
			return
		}
		s.public.ServeHTTP(w, r)
		return
	}
	if s.authorised(r) {
		s.mux.ServeHTTP(w, r)
		return
	}
	if s.sessionAuth(r) {
		if stateChanging(r) && origin == "" {
			writeError(w, http.StatusForbidden, ErrNoOrigin.Error())
			return
		}
		s.mux.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="medmesh"`)
	writeError(w, http.StatusUnauthorized, "missing or wrong API token")
}

func (s *Server) authorised(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.audit != nil {
		writeJSON(w, http.StatusOK, struct {
			node.Status
			Audit audit.Stats `json:"audit"`
		}{s.b.Status(), s.audit.Stats()})
		return
	}
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) directory(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Directory())
}

func (s *Server) postCRL(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCRLBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "CRL larger than 16 MiB")
		return
	}
	changed, err := s.b.SubmitCRL(r.Context(), body)
	switch {
	case errors.Is(err, identity.ErrMalformed):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, identity.ErrUnknownCA), errors.Is(err, identity.ErrBadSignature):
		writeError(w, http.StatusForbidden, "CRL not signed by a trusted CA: "+err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	case !changed:
		writeError(w, http.StatusConflict, "CRL is not newer than the one held")
	default:
		writeJSON(w, http.StatusOK, map[string]any{"accepted": true, "crl_number": s.b.Status().CRLNumber})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
