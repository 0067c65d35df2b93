package web

import (
	"context"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/medmesh/medmesh/audit"
)

// Audit is the device's audit trail as the API needs it.
type Audit interface {
	// Record queues events; it never blocks.
	Record(evs ...audit.Event)
	// Since returns up to limit entries after since, oldest first.
	Since(ctx context.Context, since time.Time, limit int) ([]audit.Entry, error)
	// Stats says how recording is doing.
	Stats() audit.Stats
}

// WithAudit serves GET /api/v1/audit from a and records the app's
// unlocks, locks and failed unlocks in it.
func WithAudit(a Audit) Option { return func(s *Server) { s.audit = a } }

// Paging of GET /api/v1/audit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// auditEvent is one entry as the API shows it: identifiers and hashes,
// never content.
type auditEvent struct {
	Seq       uint64     `json:"seq"`
	Time      time.Time  `json:"time"`
	Kind      audit.Kind `json:"kind"`
	IDs       audit.IDs  `json:"ids"`
	Hash      string     `json:"hash"`
	Prev      string     `json:"prev"`
	Signature string     `json:"signature"`
}

func (s *Server) routeAudit() {
	s.mux.HandleFunc("GET /api/v1/audit", s.auditEvents)
}

// auditEvents answers GET /api/v1/audit?since=TIME&limit=N: the entries
// after since (RFC 3339), oldest first, at most limit (default 100, at
// most 1000). Times strictly increase along the log: the last event's
// time is the next page's since.
func (s *Server) auditEvents(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want an RFC 3339 time, e.g. 2026-03-01T08:00:00Z")
			return
		}
		since = t
	}
	limit := DefaultAuditLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditLimit {
			writeError(w, http.StatusBadRequest, "limit: want a number from 1 to 1000")
			return
		}
		limit = n
	}
	es, err := s.audit.Since(r.Context(), since, limit)
	if err != nil {
		s.log.Warn("read audit trail", "err", err)
		writeError(w, http.StatusInternalServerError, "audit trail unreadable")
		return
	}
	out := make([]auditEvent, 0, len(es))
	for _, e := range es {
		out = append(out, auditEvent{Seq: e.Seq, Time: e.Time, Kind: e.Kind, IDs: e.IDs,
			Hash: hex.EncodeToString(e.Hash[:]), Prev: hex.EncodeToString(e.Prev[:]), Signature: hex.EncodeToString(e.Sig)})
	}
	writeJSON(w, http.StatusOK, out)
}

// note records an app event, if there is a trail.
func (s *Server) note(kind audit.Kind) {
	if s.audit != nil {
		s.audit.Record(audit.Event{Kind: kind})
	}
}
