package web

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/media"
	"github.com/medmesh/medmesh/patient"
)

// Conversations is what the API needs from the conversations layer
// (conversations.Service).
type Conversations interface {
	Create(title string, members []peer.ID) (chat.ConversationID, error)
	CreateAbout(title string, members []peer.ID, p *patient.Patient) (chat.ConversationID, error)
	Conversations() []conversations.Summary
	Conversation(id chat.ConversationID) (conversations.Summary, error)
	SetPatient(id chat.ConversationID, p *patient.Patient) (crdt.OpID, error)
	Messages(id chat.ConversationID) ([]conversations.Message, error)
	Events() (<-chan conversations.Event, func())
	State(id chat.ConversationID) (*chat.State, error)
	Photo(id chat.ConversationID, msg crdt.OpID, full bool) ([]byte, error)

	Send(id chat.ConversationID, text string, o chat.SendOptions) (crdt.OpID, error)
	SendPhoto(id chat.ConversationID, image, thumb []byte, caption string) (crdt.OpID, error)
	Edit(id chat.ConversationID, msg crdt.OpID, text string) error
	Delete(id chat.ConversationID, msg crdt.OpID) error
	React(id chat.ConversationID, msg crdt.OpID, emoji string, on bool) error
	Receipt(id chat.ConversationID, level int, msgs ...crdt.OpID) error
	Add(id chat.ConversationID, member peer.ID) error
	Remove(id chat.ConversationID, member peer.ID) error
	Promote(id chat.ConversationID, member peer.ID) error
}

// Staff resolves a member named by peer ID or staff ID.
type Staff interface {
	LookupStaff(key string) (*identity.Staff, bool)
}

const maxBody = 64 << 10

func (s *Server) routeConversations() {
	s.mux.HandleFunc("POST /api/v1/conversations", s.createConversation)
	s.mux.HandleFunc("GET /api/v1/conversations", s.listConversations)
	s.mux.HandleFunc("GET /api/v1/conversations/{id}", s.getConversation)
	s.mux.HandleFunc("PUT /api/v1/conversations/{id}/patient", s.putPatient)
	s.mux.HandleFunc("DELETE /api/v1/conversations/{id}/patient", s.deletePatient)
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/messages", s.postMessage)
	s.mux.HandleFunc("GET /api/v1/conversations/{id}/messages", s.getMessages)
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/receipts", s.postReceipts)
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/members", s.postMembers)
	s.mux.HandleFunc("PATCH /api/v1/conversations/{id}/messages/{msg}", s.editMessage)
	s.mux.HandleFunc("DELETE /api/v1/conversations/{id}/messages/{msg}", s.deleteMessage)
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/messages/{msg}/reactions", s.react)
	s.mux.HandleFunc("POST /api/v1/conversations/{id}/photos", s.postPhoto)
	s.mux.HandleFunc("GET /api/v1/conversations/{id}/messages/{msg}/photo", s.getPhoto)
	s.mux.HandleFunc("GET /api/v1/conversations/{id}/fhir", s.getFHIR)
	s.mux.HandleFunc("GET /api/v1/events", s.events)
}

// postPhoto takes an image from the camera or a file, strips everything
// but the pixels (media.Prepare), and sends it; caption in ?caption=.
func (s *Server) postPhoto(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, media.MaxInput))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "image larger than 25 MiB")
		return
	}
	full, thumb, err := media.Prepare(raw)
	clear(raw)
	switch {
	case errors.Is(err, media.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	caption := r.URL.Query().Get("caption")
	opID, err := s.conv.SendPhoto(id, full, thumb, caption)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": opID.String()})
}

// getPhoto serves a photo inline, never cached, never as a download.
func (s *Server) getPhoto(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	msg, err := parseOpID(r.PathValue("msg"))
	if err != nil {
		writeError(w, http.StatusNotFound, "no such message")
		return
	}
	img, err := s.conv.Photo(id, msg, r.URL.Query().Get("size") == "full")
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Disposition", "inline")
	w.Write(img)
}

// msgOp runs op on one message of a conversation from the URL.
func (s *Server) msgOp(w http.ResponseWriter, r *http.Request, op func(chat.ConversationID, crdt.OpID) error) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	msg, err := parseOpID(r.PathValue("msg"))
	if err != nil || msg.IsZero() {
		writeError(w, http.StatusNotFound, "no such message")
		return
	}
	if err := op(id, msg); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) editMessage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Text string `json:"text"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		writeError(w, http.StatusBadRequest, "empty message")
		return
	}
	s.msgOp(w, r, func(id chat.ConversationID, m crdt.OpID) error { return s.conv.Edit(id, m, req.Text) })
}

func (s *Server) deleteMessage(w http.ResponseWriter, r *http.Request) {
	s.msgOp(w, r, s.conv.Delete)
}

func (s *Server) react(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Emoji  string `json:"emoji"`
		Remove bool   `json:"remove"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if req.Emoji == "" {
		writeError(w, http.StatusBadRequest, "no emoji")
		return
	}
	s.msgOp(w, r, func(id chat.ConversationID, m crdt.OpID) error { return s.conv.React(id, m, req.Emoji, !req.Remove) })
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body larger than 64 KiB")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return false
	}
	return true
}

// resolve names colleagues by peer ID or staff ID through the directory;
// a peer ID among known (a conversation's members) is taken as it is.
func (s *Server) resolve(names []string, known ...peer.ID) ([]peer.ID, error) {
	var out []peer.ID
	for _, n := range names {
		if i := slices.IndexFunc(known, func(p peer.ID) bool { return p.String() == strings.TrimSpace(n) }); i >= 0 {
			out = append(out, known[i])
			continue
		}
		st, ok := s.staff.LookupStaff(strings.TrimSpace(n))
		if !ok {
			if id, ok := s.federatedMember(n); ok { // federated.go
				out = append(out, id)
				continue
			}
			return nil, errors.New("unknown member " + n + ": not in the staff directory")
		}
		out = append(out, st.PeerID)
	}
	return out, nil
}

// patientRequest is a patient as a client sends it.
type patientRequest struct {
	NHSNumber string `json:"nhs_number"`
	Name      string `json:"name"`
	BirthDate string `json:"birth_date"`
}

// check normalises and validates what the user typed; the error says which
// field is wrong and why, never what was typed.
func (p *patientRequest) check() (*patient.Patient, error) {
	pt, err := patient.New(p.NHSNumber, p.Name, p.BirthDate, time.Now())
	if err != nil {
		return nil, err
	}
	return &pt, nil
}

func (s *Server) createConversation(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Title   string          `json:"title"`
		Members []string        `json:"members"`
		Patient *patientRequest `json:"patient"`
		Role    string          `json:"role"` // an on-call role (WithRoles): its holders become members
	}
	if !readJSON(w, r, &req) {
		return
	}
	var pt *patient.Patient
	if req.Patient != nil {
		var err error
		if pt, err = req.Patient.check(); err != nil {
			writeError(w, http.StatusBadRequest, "patient "+err.Error())
			return
		}
	}
	members, err := s.resolve(req.Members)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if req.Role != "" {
		if s.roles == nil {
			writeError(w, http.StatusBadRequest, "role: this device serves no on-call rota")
			return
		}
		s.createForRole(w, req.Title, req.Role, members, pt)
		return
	}
	id, err := s.conv.CreateAbout(req.Title, members, pt)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id.String()})
}

// listConversations lists this device's conversations; ?patient=QUERY
// keeps those about a patient whose NHS number (digits, spaces and hyphens
// ignored) or name (any case) contains QUERY. The search runs here, on
// the device, over what it has decrypted: nothing is asked of the mesh.
func (s *Server) listConversations(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("patient"))
	list := s.conv.Conversations()
	out := make([]summaryView, 0, len(list))
	for _, c := range list {
		if q != "" && (c.Patient == nil || !c.Patient.Matches(q)) {
			continue
		}
		out = append(out, summaryOf(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getConversation(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	c, err := s.conv.Conversation(id)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, summaryOf(c))
}

// putPatient sets or corrects who a conversation is about (any member).
func (s *Server) putPatient(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	var req patientRequest
	if !readJSON(w, r, &req) {
		return
	}
	pt, err := req.check()
	if err != nil {
		writeError(w, http.StatusBadRequest, "patient "+err.Error())
		return
	}
	s.setPatient(w, id, pt)
}

// deletePatient clears the link: the conversation is about nobody.
func (s *Server) deletePatient(w http.ResponseWriter, r *http.Request) {
	if id, ok := s.convID(w, r); ok {
		s.setPatient(w, id, nil)
	}
}

func (s *Server) setPatient(w http.ResponseWriter, id chat.ConversationID, pt *patient.Patient) {
	op, err := s.conv.SetPatient(id, pt)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": op.String()})
}

func (s *Server) convID(w http.ResponseWriter, r *http.Request) (chat.ConversationID, bool) {
	id, err := chat.ParseConversationID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusNotFound, "no such conversation")
		return id, false
	}
	return id, true
}

func parseOpID(s string) (crdt.OpID, error) {
	var id crdt.OpID
	if s == "" {
		return id, nil
	}
	return id, id.UnmarshalText([]byte(s))
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	var req struct {
		Text      string `json:"text"`
		Urgent    bool   `json:"urgent"`
		ReplyTo   string `json:"reply_to"`
		AckWithin int64  `json:"ack_within"` // seconds (escalate.go)
	}
	if !readJSON(w, r, &req) {
		return
	}
	reply, err := parseOpID(req.ReplyTo)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad reply_to")
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		writeError(w, http.StatusBadRequest, "empty message")
		return
	}
	within, err := ackWithin(req.Urgent, req.AckWithin)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	opID, err := s.conv.Send(id, req.Text, chat.SendOptions{Urgent: req.Urgent, ReplyTo: reply, AckWithin: within})
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": opID.String()})
}

func (s *Server) getMessages(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	msgs, err := s.conv.Messages(id)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	out := make([]messageView, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, messageOf(m))
	}
	out = append(out, s.expiredViews(id)...)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) postReceipts(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	var req struct {
		Level    string   `json:"level"` // read | acknowledged
		Messages []string `json:"messages"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	level := map[string]int{"delivered": chat.Delivered, "read": chat.Read, "acknowledged": chat.Acknowledged}[req.Level]
	if level == 0 || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "level must be delivered, read or acknowledged, with messages")
		return
	}
	var ids []crdt.OpID
	for _, m := range req.Messages {
		op, err := parseOpID(m)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad message ID")
			return
		}
		ids = append(ids, op)
	}
	if err := s.conv.Receipt(id, level, ids...); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) postMembers(w http.ResponseWriter, r *http.Request) {
	id, ok := s.convID(w, r)
	if !ok {
		return
	}
	var req struct {
		Add     []string `json:"add"`
		Remove  []string `json:"remove"`
		Promote []string `json:"promote"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	sets := []struct {
		names []string
		op    func(chat.ConversationID, peer.ID) error
		who   []peer.ID
	}{{names: req.Add, op: s.conv.Add}, {names: req.Remove, op: s.conv.Remove}, {names: req.Promote, op: s.conv.Promote}}
	// Every name is resolved before any change is made: a request naming
	// someone unknown changes nothing. A member to remove may be one the
	// directory no longer offers (revoked): it is named by peer ID.
	var members []peer.ID
	if len(req.Remove) > 0 {
		if st, err := s.conv.State(id); err == nil {
			members = st.Members
		}
	}
	for i := range sets {
		known := []peer.ID(nil)
		if i == 1 {
			known = members
		}
		who, err := s.resolve(sets[i].names, known...)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		sets[i].who = who
	}
	for _, set := range sets {
		for _, p := range set.who {
			if err := set.op(id, p); err != nil {
				writeError(w, statusOf(err), err.Error())
				return
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096} // same-origin check by default

// events streams change notifications over a WebSocket until either side
// closes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	// A stream opened by the app's session ends when the app locks (or
	// times out): a phone left on a desk streams nothing.
	allowed := func() bool { return true }
	if !s.authorised(r) {
		if c, err := r.Cookie(s.cookie); err == nil && s.sessions != nil {
			id := c.Value
			allowed = func() bool { return s.sessions.valid(id, false) }
		}
	}
	ch, cancel := s.conv.Events() // before the handshake: no event in between is lost
	defer cancel()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered
	}
	defer ws.Close()
	gone := make(chan struct{})
	go func() { // reader: notices the client closing
		defer close(gone)
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok || !allowed() {
				return
			}
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteJSON(eventOf(e)); err != nil {
				return
			}
		case <-ping.C:
			if !allowed() {
				return
			}
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		case <-gone:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, conversations.ErrNoConversation), errors.Is(err, chat.ErrNoSuchMessage):
		return http.StatusNotFound
	case errors.Is(err, chat.ErrNotAuthorised), errors.Is(err, chat.ErrNotMember), errors.Is(err, conversations.ErrForeignAdmin):
		return http.StatusForbidden
	case errors.Is(err, chat.ErrBlind), errors.Is(err, chat.ErrNoKeys):
		return http.StatusConflict // the device cannot send in this group yet
	case errors.Is(err, chat.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, chat.ErrInvalidPayload):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
