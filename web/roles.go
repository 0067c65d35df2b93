package web

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/patient"
	"github.com/medmesh/medmesh/rota"
)

// Roles is the site's on-call rota as the API needs it (device.Device).
type Roles interface {
	Roles() []rota.Role
	SubmitRota(d node.RotaDraft) (*rota.Op, error)
	CreateForRole(title string, id rota.RoleID, members []peer.ID, p *patient.Patient) (chat.ConversationID, rota.Role, error)
}

// WithRoles serves GET/POST /api/v1/roles from r and lets POST
// /api/v1/conversations address an on-call role.
func WithRoles(r Roles) Option {
	return func(s *Server) {
		s.roles = r
		s.mux.HandleFunc("GET /api/v1/roles", s.getRoles)
		s.mux.HandleFunc("POST /api/v1/roles", s.postRoles)
	}
}

// roleView is an on-call role as the API shows it.
type roleView struct {
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	Site     string       `json:"site"`
	Requires string       `json:"requires"`
	Chain    []string     `json:"chain"`
	Holders  []holderView `json:"holders"`
	// Split: the role is held by more than one colleague at once (they
	// took it apart, in a partition) until one hands over.
	Split bool `json:"split"`
}

type holderView struct {
	PeerID  string    `json:"peer_id"`
	Name    string    `json:"name"`
	StaffID string    `json:"staff_id"`
	Since   time.Time `json:"since"`
}

func roleViewOf(r rota.Role) roleView {
	v := roleView{ID: string(r.ID), Name: r.Name, Site: r.Site, Requires: r.Requires, Chain: []string{}, Holders: []holderView{}, Split: r.Split}
	for _, c := range r.Chain {
		v.Chain = append(v.Chain, string(c))
	}
	for _, h := range r.Holders {
		v.Holders = append(v.Holders, holderView{PeerID: h.PeerID.String(), Name: h.Name, StaffID: h.StaffID, Since: h.Since})
	}
	return v
}

func (s *Server) getRoles(w http.ResponseWriter, _ *http.Request) {
	list := s.roles.Roles()
	out := make([]roleView, 0, len(list))
	for _, r := range list {
		out = append(out, roleViewOf(r))
	}
	writeJSON(w, http.StatusOK, out)
}

// postRoles answers POST /api/v1/roles {action, role, ...}:
//
//	{"action":"define","role":ID,"name":N,"requires":CERT_ROLE,"chain":[ID...]}  (rota-admin)
//	{"action":"take","role":ID}
//	{"action":"handover","role":ID,"to":PEER_ID_OR_STAFF_ID}
//	{"action":"release","role":ID}
//
// It answers the role as this device sees it afterwards; 403 when the
// certificate (this device's, or the hand-over target's) lacks the role
// needed, 400 on malformed input, 404 for a role not defined.
func (s *Server) postRoles(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Action   string   `json:"action"`
		Role     string   `json:"role"`
		Name     string   `json:"name"`
		Requires string   `json:"requires"`
		Chain    []string `json:"chain"`
		To       string   `json:"to"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	d := node.RotaDraft{Role: rota.RoleID(strings.TrimSpace(req.Role)), Name: strings.TrimSpace(req.Name), Requires: strings.TrimSpace(req.Requires)}
	switch req.Action {
	case "define":
		d.Kind = rota.KindDefine
		for _, c := range req.Chain {
			d.Chain = append(d.Chain, rota.RoleID(strings.TrimSpace(c)))
		}
	case "take":
		d.Kind = rota.KindTake
	case "handover":
		d.Kind = rota.KindHandover
		st, ok := s.staff.LookupStaff(strings.TrimSpace(req.To))
		if req.To == "" || !ok {
			writeError(w, http.StatusBadRequest, "handover: \"to\" must name a colleague in the staff directory")
			return
		}
		d.To = st.PeerID
	case "release":
		d.Kind = rota.KindRelease
	default:
		writeError(w, http.StatusBadRequest, "action: want define, take, handover or release")
		return
	}
	if !d.Role.Valid() {
		writeError(w, http.StatusBadRequest, "role: want an ID of lower-case letters, digits and dashes (at most 64)")
		return
	}
	if d.Kind != rota.KindDefine && (d.Name != "" || d.Requires != "" || len(d.Chain) > 0) {
		writeError(w, http.StatusBadRequest, "name, requires and chain belong to define only")
		return
	}
	if _, err := s.roles.SubmitRota(d); err != nil {
		if errors.Is(err, node.ErrRotaRate) {
			w.Header().Set("Retry-After", "5") // one op per rota interval
		}
		writeError(w, rotaStatus(err), rotaMessage(err))
		return
	}
	v, _ := rota.Find(s.roles.Roles(), d.Role)
	writeJSON(w, http.StatusOK, roleViewOf(v))
}

func rotaStatus(err error) int {
	switch {
	case errors.Is(err, rota.ErrNotAllowed):
		return http.StatusForbidden
	case errors.Is(err, rota.ErrUnknownRole):
		return http.StatusNotFound
	case errors.Is(err, rota.ErrMalformed), errors.Is(err, rota.ErrTooLarge):
		return http.StatusBadRequest
	case errors.Is(err, rota.ErrFull), errors.Is(err, rota.ErrSite), errors.Is(err, rota.ErrNoHolder):
		return http.StatusConflict
	case errors.Is(err, node.ErrRotaRate):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

func rotaMessage(err error) string {
	switch {
	case errors.Is(err, rota.ErrNotAllowed):
		return "not allowed: the certificate does not carry the role this needs (" + rota.AdminRole + " to define; the role's required certificate role to take, hand over to, or release)"
	case errors.Is(err, node.ErrRotaRate):
		return "too many rota changes from this device: try again in a few seconds"
	case rotaStatus(err) == http.StatusInternalServerError:
		return "rota: internal error"
	}
	return err.Error()
}

// roleAnswer is what POST /api/v1/conversations answers for a
// conversation addressed to a role: whom this device resolved it to, from
// what it knew at as_of.
type roleAnswer struct {
	ID      string       `json:"id"`
	Name    string       `json:"name"`
	Holders []holderView `json:"holders"`
	Split   bool         `json:"split"`
	AsOf    time.Time    `json:"as_of"`
}

// createForRole creates a conversation addressed to on-call role id.
func (s *Server) createForRole(w http.ResponseWriter, title, id string, members []peer.ID, pt *patient.Patient) {
	rid := rota.RoleID(strings.TrimSpace(id))
	if !rid.Valid() {
		writeError(w, http.StatusBadRequest, "role: want an on-call role ID")
		return
	}
	asOf := time.Now().UTC()
	cid, role, err := s.roles.CreateForRole(title, rid, members, pt)
	if err != nil {
		if st := rotaStatus(err); st != http.StatusInternalServerError {
			writeError(w, st, rotaMessage(err))
		} else {
			writeError(w, statusOf(err), err.Error())
		}
		return
	}
	v := roleViewOf(role)
	writeJSON(w, http.StatusCreated, map[string]any{"id": cid.String(),
		"role": roleAnswer{ID: v.ID, Name: v.Name, Holders: v.Holders, Split: v.Split, AsOf: asOf}})
}

// roleLinkView is a conversation's on-call role link: the role's ID and
// its name when the conversation was addressed to it.
type roleLinkView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func roleLinkOf(l *chat.RoleLink) *roleLinkView {
	if l == nil {
		return nil
	}
	return &roleLinkView{ID: l.ID, Name: l.Name}
}
