package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
)

// Urgent escalation in the API: POST messages takes ack_within (seconds,
// urgent only, 30 to 86400; default 300); each urgent message carries its
// ack_within, deadline and escalation; POST .../escalate escalates our
// urgent message to a colleague the sender chose; the events stream
// carries realert, choose, escalated and expired-unread events; messages
// of ours retention deleted unread are listed with state "expired-unread".

// Escalations is what the escalate route needs (conversations.Service).
type Escalations interface {
	Escalate(id chat.ConversationID, msg crdt.OpID, to []peer.ID) (crdt.OpID, error)
}

// escalationView is where an urgent message stands: state (waiting, due,
// choose, escalated, acknowledged), and its standing escalation of the
// latest step, if any (to whom, by whom, when, and the label the
// escalator gave); steps lists every step's.
type escalationView struct {
	State string           `json:"state"`
	Step  int              `json:"step,omitempty"`
	To    []string         `json:"to,omitempty"`
	By    string           `json:"by,omitempty"`
	Time  *time.Time       `json:"time,omitempty"`
	Label string           `json:"label,omitempty"`
	Steps []escalationStep `json:"steps,omitempty"`
}

type escalationStep struct {
	Step  int       `json:"step"`
	To    []string  `json:"to"`
	By    string    `json:"by"`
	Time  time.Time `json:"time"`
	Label string    `json:"label,omitempty"`
}

// escalationInto fills the urgent-message fields of v.
func escalationInto(v *messageView, m conversations.Message) {
	if !m.Urgent || m.AckWithin <= 0 {
		return
	}
	v.AckWithin = int64(m.AckWithin / time.Second)
	due := m.Due()
	v.Deadline = &due
	if m.QuotedBy != "" {
		v.QuotedBy = m.QuotedBy.String()
	}
	e := &escalationView{State: m.Escalation}
	for _, x := range m.Escalations {
		e.Steps = append(e.Steps, escalationStep{Step: x.Step, To: ids(x.To), By: x.By.String(), Time: x.Time, Label: x.Label})
	}
	if n := len(e.Steps); n > 0 {
		last := e.Steps[n-1]
		e.Step, e.To, e.By, e.Time, e.Label = last.Step, last.To, last.By, &last.Time, last.Label
	}
	v.Escalation = e
}

// ackWithin checks a POST messages ack_within (seconds).
func ackWithin(urgent bool, secs int64) (time.Duration, error) {
	if secs == 0 {
		return 0, nil
	}
	if !urgent {
		return 0, errors.New("ack_within is for urgent messages only")
	}
	d := time.Duration(secs) * time.Second
	if secs < 0 || d < chat.MinAckWithin || d > chat.MaxAckWithin {
		return 0, errors.New("ack_within must be 30 to 86400 seconds")
	}
	return d, nil
}

// expiredViews lists our messages of conversation id that retention
// deleted before anyone read them.
func (s *Server) expiredViews(id chat.ConversationID) []messageView {
	st, err := s.conv.State(id)
	if err != nil || len(st.ExpiredUnread) == 0 {
		return nil
	}
	self := ""
	if s.b != nil {
		self = s.b.Status().PeerID
	}
	out := make([]messageView, 0, len(st.ExpiredUnread))
	for _, x := range st.ExpiredUnread {
		out = append(out, messageView{ID: x.ID.String(), Sender: self, Time: x.Time, State: "expired-unread", Deleted: true})
	}
	return out
}

func (s *Server) routeEscalations() {
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/messages/{msg}/escalate", s.escalate)
}

// escalate: POST {to: peer ID or staff ID, or a list of them}.
func (s *Server) escalate(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	esc, ok := s.conv.(Escalations)
	if !ok {
		writeError(w, http.StatusNotImplemented, "escalation is not available")
		return
	}
	msg, err := parseOpID(r.PathValue("msg"))
	if err != nil || msg.IsZero() {
		writeError(w, http.StatusBadRequest, "bad message id")
		return
	}
	var req struct {
		To json.RawMessage `json:"to"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	var names []string
	var one string
	if json.Unmarshal(req.To, &one) == nil && strings.TrimSpace(one) != "" {
		names = []string{one}
	} else if json.Unmarshal(req.To, &names) != nil || len(names) == 0 || len(names) > chat.MaxEscalationTargets {
		writeError(w, http.StatusBadRequest, "to: a peer ID or staff ID, or a list of at most 8")
		return
	}
	to, err := s.resolve(names)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	op, err := esc.Escalate(id, msg, to)
	switch {
	case err == nil:
		writeJSON(w, http.StatusCreated, map[string]string{"id": op.String()})
	case errors.Is(err, chat.ErrNotAuthorised), errors.Is(err, chat.ErrNotMember),
		errors.Is(err, conversations.ErrNoConversation), errors.Is(err, chat.ErrNoSuchMessage):
		writeError(w, statusOf(err), err.Error())
	case errors.Is(err, conversations.ErrEscalation):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, statusOf(err), err.Error())
	}
}
