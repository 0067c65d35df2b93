package web

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/mesh"
)

type fakeConvs struct {
	events  chan mesh.Event
	created []peer.ID
}

func (f *fakeConvs) Create(title string, members []peer.ID) (chat.ConversationID, error) {
	f.created = members
	return chat.ConversationID{1}, nil
}
func (f *fakeConvs) Conversations() []mesh.Summary { return nil }
func (f *fakeConvs) Messages(id chat.ConversationID) ([]mesh.MessageView, error) {
	if id != (chat.ConversationID{1}) {
		return nil, mesh.ErrNoConversation
	}
	return []mesh.MessageView{{ID: "m1", Text: "hi", State: chat.StateHeld}}, nil
}
func (f *fakeConvs) Do(id chat.ConversationID, op func(r *chat.Replica) ([][]byte, crdt.OpID, error)) (crdt.OpID, error) {
	return crdt.OpID{}, chat.ErrNotMember
}
func (f *fakeConvs) Events() (<-chan mesh.Event, func()) { return f.events, func() {} }
func (f *fakeConvs) Photo(chat.ConversationID, crdt.OpID, bool) ([]byte, error) {
	return nil, chat.ErrNoSuchMessage
}

type fakeStaff struct{}

func (fakeStaff) LookupStaff(key string) (*identity.Staff, bool) {
	if key == "S2" {
		return &identity.Staff{PeerID: "peer-two"}, true
	}
	return nil, false
}

func TestConversationRoutes(t *testing.T) {
	fc := &fakeConvs{events: make(chan mesh.Event, 1)}
	s := New(&fakeNode{}, "t", slog.New(slog.DiscardHandler), WithConversations(fc, fakeStaff{}))
	if code, out := call(t, s, "POST", "/api/v1/conversations", "t", `{"title":"W","members":["S2"]}`); code != 201 || out["id"] == nil || fc.created[0] != "peer-two" {
		t.Fatalf("create: %d %v", code, out)
	}
	if code, _ := call(t, s, "POST", "/api/v1/conversations", "t", `{"title":"W","members":["nobody"]}`); code != 422 {
		t.Fatalf("unknown member: %d", code)
	}
	if code, _ := call(t, s, "POST", "/api/v1/conversations", "t", `{not json`); code != 400 {
		t.Fatalf("bad JSON: %d", code)
	}
	if code, _ := call(t, s, "GET", "/api/v1/conversations/zz/messages", "t", ""); code != 404 {
		t.Fatalf("bad id: %d", code)
	}
	if code, _ := call(t, s, "POST", "/api/v1/conversations/01000000000000000000000000000000/messages", "t", `{"text":"x"}`); code != 403 {
		t.Fatalf("not a member: %d", code)
	}
	if code, _ := call(t, s, "POST", "/api/v1/conversations/01000000000000000000000000000000/messages", "t", `{"text":"`+strings.Repeat("x", maxBody)+`"}`); code != 413 {
		t.Fatalf("oversized: %d", code)
	}
}

func TestEventsWebSocket(t *testing.T) {
	fc := &fakeConvs{events: make(chan mesh.Event, 1)}
	srv := httptest.NewServer(New(&fakeNode{}, "t", slog.New(slog.DiscardHandler), WithConversations(fc, fakeStaff{})))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/events"
	if _, resp, err := websocket.DefaultDialer.Dial(url, nil); err == nil || resp.StatusCode != 401 {
		t.Fatal("events without a token")
	}
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	fc.events <- mesh.Event{Type: "message", Conversation: "c1"}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var e mesh.Event
	if err := ws.ReadJSON(&e); err != nil || e.Conversation != "c1" {
		t.Fatalf("event: %+v %v", e, err)
	}
}
