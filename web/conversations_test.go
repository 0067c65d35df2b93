package web

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/testnet"
)

// within bounds every wait on the mesh in these tests.
const within = 20 * time.Second

// ward is a hospital ward on loopback: real devices (device.Open), each
// serving its API. asha is the admin; the others are enrolled colleagues
// she knows (she holds their prekeys), bootstrapped to her.
type ward struct {
	ca    *testnet.CA
	asha  *dev
	staff []*dev // bola, chidi… in order
}

func newWard(t *testing.T, colleagues ...string) *ward {
	t.Helper()
	ca := testnet.NewCA(t)
	w := &ward{ca: ca, asha: start(t, ca, ca.Enrol(t, "asha"))}
	for _, name := range colleagues {
		d := start(t, ca, ca.Enrol(t, name), w.asha.Peer)
		testnet.Knows(t, w.asha.Peer, d.Peer)
		w.staff = append(w.staff, d)
	}
	return w
}

// create has asha's API start a conversation naming members by staff ID,
// and waits until every one of them lists it with all its members.
func (w *ward) create(t *testing.T, title string, members ...*dev) chat.ConversationID {
	t.Helper()
	var names []string
	for _, m := range members {
		names = append(names, `"`+m.Ident.Name+`"`)
	}
	out := w.asha.must(t, http.StatusCreated, "POST", "/api/v1/conversations",
		`{"title":"`+title+`","members":[`+strings.Join(names, ",")+`]}`)
	s, _ := out["id"].(string)
	id, err := chat.ParseConversationID(s)
	if err != nil {
		t.Fatalf("create answered id %q: %v", out["id"], err)
	}
	for _, m := range members {
		testnet.Eventually(t, within, m.Ident.Name+" lists the conversation with its members", func() bool {
			sum := m.listed(t, id)
			return sum != nil && len(memberList(sum, "members")) == len(members)+1
		})
	}
	return id
}

// post sends a message through p's API and returns its op ID.
func post(t *testing.T, p *dev, id chat.ConversationID, body string) string {
	t.Helper()
	out := p.must(t, http.StatusCreated, "POST", convPath(id)+"/messages", body)
	s, _ := out["id"].(string)
	var op crdt.OpID
	if err := op.UnmarshalText([]byte(s)); err != nil || op.IsZero() {
		t.Fatalf("send answered id %q: %v", out["id"], err)
	}
	return s
}

// waitMessage waits until p's API shows message msg satisfying cond.
func waitMessage(t *testing.T, p *dev, id chat.ConversationID, msg, what string, cond func(apiMessage) bool) apiMessage {
	t.Helper()
	var m apiMessage
	testnet.Eventually(t, within, p.Ident.Name+": "+what, func() bool {
		m = p.message(t, id, msg)
		return m != nil && cond(m)
	})
	return m
}

func memberList(sum map[string]any, key string) []string {
	var out []string
	list, _ := sum[key].([]any)
	for _, m := range list {
		s, _ := m.(string)
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string { slices.Sort(ids); return ids }

// TestConversationMessages drives the life of a message through the APIs
// of two devices: a conversation created naming a colleague by staff ID;
// an urgent message that waits on the sender (queued) while the colleague
// is offline, arrives once she is back and turns delivered; read and
// acknowledged receipts from her API that the sender sees; a reply; an
// edit, a reaction taken back, a deletion — each seen on the other device.
func TestConversationMessages(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	id := w.create(t, "Ward 7", b)

	sum := a.summary(t, id)
	if sum["title"] != "Ward 7" || !slices.Equal(memberList(sum, "members"), sorted(a.ID.String(), b.ID.String())) ||
		!slices.Equal(memberList(sum, "admins"), []string{a.ID.String()}) {
		t.Fatalf("summary on the creator: %v", sum)
	}
	if sum := b.summary(t, id); sum["title"] != "Ward 7" || len(memberList(sum, "members")) != 2 {
		t.Fatalf("summary on the member: %v", sum)
	}

	// Bola is in a basement: the message waits on Asha's device.
	b.N.SetOffline(true)
	testnet.Eventually(t, within, "asha and bola apart", func() bool {
		return a.N.Host().Network().Connectedness(b.ID) != network.Connected
	})
	m := post(t, a, id, `{"text":"bed 4 needs a review","urgent":true}`)
	got := a.message(t, id, m)
	if got == nil || got["text"] != "bed 4 needs a review" || got["urgent"] != true || got["sender"] != a.ID.String() {
		t.Fatalf("sender's message: %v", got)
	}
	if st := got["state"]; st != chat.StateQueued && st != chat.StateHeld {
		t.Fatalf("state %v with the recipient offline, want queued or held", st)
	}
	if per, _ := got["recipients"].(map[string]any); len(per) != 1 || per[b.ID.String()] != got["state"] {
		t.Fatalf("per-recipient state %v, want bola %v", got["recipients"], got["state"])
	}
	if got["state"] == chat.StateQueued && a.summary(t, id)["queued"] != float64(1) {
		t.Fatalf("summary does not count the queued message: %v", a.summary(t, id))
	}

	b.N.SetOffline(false)
	on := waitMessage(t, b, id, m, "the message arrives", func(m apiMessage) bool { return true })
	if on["text"] != "bed 4 needs a review" || on["urgent"] != true || on["sender"] != a.ID.String() || on["state"] != chat.StateDelivered {
		t.Fatalf("recipient's message: %v", on)
	}
	if on["recipients"] != nil {
		t.Fatalf("a recipient sees per-recipient states of another's message: %v", on)
	}
	if sum := b.summary(t, id); sum["unread"] != float64(1) || sum["urgent"] != float64(1) || sum["last"] != "bed 4 needs a review" {
		t.Fatalf("recipient's summary: %v", sum)
	}
	waitMessage(t, a, id, m, "delivered", func(m apiMessage) bool {
		per, _ := m["recipients"].(map[string]any)
		return m["state"] == chat.StateDelivered && per[b.ID.String()] == chat.StateDelivered
	})
	if sum := a.summary(t, id); sum["queued"] != float64(0) || sum["unread"] != float64(0) {
		t.Fatalf("sender's summary once delivered: %v", sum)
	}

	// Receipts from Bola's API.
	b.must(t, http.StatusOK, "POST", convPath(id)+"/receipts", `{"level":"read","messages":["`+m+`"]}`)
	if got := b.message(t, id, m); got["state"] != chat.StateRead {
		t.Fatalf("reader's own state after reading: %v", got["state"])
	}
	if sum := b.summary(t, id); sum["unread"] != float64(0) || sum["urgent"] != float64(0) {
		t.Fatalf("read message still unread: %v", sum)
	}
	waitMessage(t, a, id, m, "read", func(m apiMessage) bool { return m["state"] == chat.StateRead })
	b.must(t, http.StatusOK, "POST", convPath(id)+"/receipts", `{"level":"acknowledged","messages":["`+m+`"]}`)
	waitMessage(t, a, id, m, "acknowledged", func(m apiMessage) bool {
		per, _ := m["recipients"].(map[string]any)
		return m["state"] == chat.StateAcknowledged && per[b.ID.String()] == chat.StateAcknowledged
	})

	// A reply.
	r := post(t, b, id, `{"text":"on my way","reply_to":"`+m+`"}`)
	waitMessage(t, a, id, r, "the reply", func(got apiMessage) bool {
		return got["text"] == "on my way" && got["reply_to"] == m && got["sender"] == b.ID.String()
	})

	// Edit: only the sender may.
	a.must(t, http.StatusOK, "PATCH", convPath(id)+"/messages/"+m, `{"text":"bed 4 needs a review now"}`)
	if got := a.message(t, id, m); got["text"] != "bed 4 needs a review now" || got["edited"] != true {
		t.Fatalf("sender's view after the edit: %v", got)
	}
	waitMessage(t, b, id, m, "the edit", func(m apiMessage) bool {
		return m["text"] == "bed 4 needs a review now" && m["edited"] == true
	})
	b.must(t, http.StatusForbidden, "PATCH", convPath(id)+"/messages/"+m, `{"text":"forged"}`)

	// React, then take it back.
	b.must(t, http.StatusOK, "POST", convPath(id)+"/messages/"+m+"/reactions", `{"emoji":"👍"}`)
	waitMessage(t, a, id, m, "the reaction", func(m apiMessage) bool {
		re, _ := m["reactions"].(map[string]any)
		who, _ := re["👍"].([]any)
		return len(re) == 1 && len(who) == 1 && who[0] == b.ID.String()
	})
	b.must(t, http.StatusOK, "POST", convPath(id)+"/messages/"+m+"/reactions", `{"emoji":"👍","remove":true}`)
	if got := b.message(t, id, m); got["reactions"] != nil {
		t.Fatalf("reactor's view after taking it back: %v", got["reactions"])
	}
	waitMessage(t, a, id, m, "the reaction taken back", func(m apiMessage) bool { return m["reactions"] == nil })

	// Delete: only the sender may; the tombstone stays in place.
	b.must(t, http.StatusForbidden, "DELETE", convPath(id)+"/messages/"+m, "")
	a.must(t, http.StatusOK, "DELETE", convPath(id)+"/messages/"+m, "")
	if got := a.message(t, id, m); got["deleted"] != true || got["text"] != "" {
		t.Fatalf("sender's view after deleting: %v", got)
	}
	waitMessage(t, b, id, m, "the deletion", func(m apiMessage) bool { return m["deleted"] == true && m["text"] == "" })
	if msgs := b.messages(t, id); len(msgs) != 2 {
		t.Fatalf("%d messages on bola after the deletion, want 2 (the tombstone and the reply): %v", len(msgs), msgs)
	}
	if sum := b.summary(t, id); sum["last"] != "on my way" {
		t.Fatalf("the deleted message is still the last text: %v", sum)
	}
}

// TestConversationMembers: only an admin changes members (a member who
// is not one gets 403); an added colleague joins and can write, and the
// others read her; once removed, her device refuses to send for her (403)
// and the others list two members; a promoted member is an admin
// everywhere. A device that never was in the conversation knows no such
// conversation (404), and an unknown staff ID is 422.
func TestConversationMembers(t *testing.T) {
	w := newWard(t, "bola", "chidi")
	a, b, c := w.asha, w.staff[0], w.staff[1]
	id := w.create(t, "Ward 7", b)
	path := convPath(id) + "/members"

	c.must(t, http.StatusNotFound, "POST", convPath(id)+"/messages", `{"text":"let me in"}`)
	testnet.Knows(t, b.Peer, c.Peer) // bola's directory resolves chidi
	b.must(t, http.StatusForbidden, "POST", path, `{"add":["chidi"]}`)
	a.must(t, http.StatusUnprocessableEntity, "POST", path, `{"add":["nobody"]}`)
	if sum := a.summary(t, id); len(memberList(sum, "members")) != 2 {
		t.Fatalf("a refused change changed members: %v", sum)
	}

	a.must(t, http.StatusOK, "POST", path, `{"add":["chidi"]}`)
	three := sorted(a.ID.String(), b.ID.String(), c.ID.String())
	if sum := a.summary(t, id); !slices.Equal(memberList(sum, "members"), three) {
		t.Fatalf("members after the add: %v", sum)
	}
	for _, p := range []*dev{b, c} {
		testnet.Eventually(t, within, p.Ident.Name+" lists three members", func() bool {
			sum := p.listed(t, id)
			return sum != nil && slices.Equal(memberList(sum, "members"), three)
		})
	}
	m := post(t, c, id, `{"text":"chidi here"}`)
	for _, p := range []*dev{a, b} {
		waitMessage(t, p, id, m, "chidi's message", func(m apiMessage) bool { return m["text"] == "chidi here" })
	}

	a.must(t, http.StatusOK, "POST", path, `{"remove":["chidi"]}`)
	two := sorted(a.ID.String(), b.ID.String())
	if sum := a.summary(t, id); !slices.Equal(memberList(sum, "members"), two) {
		t.Fatalf("members after the removal: %v", sum)
	}
	for _, p := range []*dev{b, c} {
		testnet.Eventually(t, within, p.Ident.Name+" hears of the removal", func() bool {
			sum := p.listed(t, id)
			return sum != nil && slices.Equal(memberList(sum, "members"), two)
		})
	}
	c.must(t, http.StatusForbidden, "POST", convPath(id)+"/messages", `{"text":"still here?"}`)

	a.must(t, http.StatusOK, "POST", path, `{"promote":["bola"]}`)
	testnet.Eventually(t, within, "bola is an admin on her device", func() bool {
		return slices.Equal(memberList(b.summary(t, id), "admins"), two)
	})
}

// testImage encodes a 640×400 picture as a camera or file picker would.
func testImage(t *testing.T, format string) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 640, 400))
	for x := range 640 {
		for y := range 400 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 120, 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hugePNG is a PNG header claiming more pixels than media accepts.
func hugePNG(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[16:], 10000) // IHDR width
	binary.BigEndian.PutUint32(b[20:], 10000) // IHDR height
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// getPhoto fetches a photo (thumbnail, or full) and checks it is served
// as the API promises: a JPEG, inline, never cached.
func getPhoto(t *testing.T, p *dev, id chat.ConversationID, msg string, full bool) (image.Config, []byte) {
	t.Helper()
	path := convPath(id) + "/messages/" + msg + "/photo"
	if full {
		path += "?size=full"
	}
	code, hdr, body := p.do(t, "GET", path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if hdr.Get("Content-Type") != "image/jpeg" || hdr.Get("Cache-Control") != "no-store" ||
		hdr.Get("Content-Disposition") != "inline" || hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("GET %s: headers %v", path, hdr)
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: not a JPEG: %v", path, err)
	}
	return cfg, body
}

// TestConversationPhoto: a PNG and a JPEG posted to the sender's API come
// back from it re-encoded as JPEG (full size and a thumbnail), served
// inline with no-store, and arrive whole on the colleague's device, byte
// for byte. What is not an image is 415, too many pixels 413, and a text
// message has no photo (404).
func TestConversationPhoto(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	id := w.create(t, "Ward 7", b)
	for _, format := range []string{"png", "jpeg"} {
		t.Run(format, func(t *testing.T) {
			caption := "wound, bed 4 (" + format + ")"
			code, _, raw := a.do(t, "POST", convPath(id)+"/photos?caption="+url.QueryEscape(caption), testImage(t, format))
			if code != http.StatusCreated {
				t.Fatalf("post photo: %d %s", code, raw)
			}
			var out map[string]any
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatal(err)
			}
			msg, _ := out["id"].(string)
			got := a.message(t, id, msg)
			ph, _ := got["photo"].(map[string]any)
			if got == nil || got["text"] != caption || ph["ready"] != true || ph["size"] == float64(0) {
				t.Fatalf("sender's photo message: %v", got)
			}
			fullCfg, full := getPhoto(t, a, id, msg, true)
			thumbCfg, thumb := getPhoto(t, a, id, msg, false)
			if fullCfg.Width != 640 || fullCfg.Height != 400 || thumbCfg.Width != 320 || thumbCfg.Height != 200 {
				t.Fatalf("full %dx%d, thumbnail %dx%d", fullCfg.Width, fullCfg.Height, thumbCfg.Width, thumbCfg.Height)
			}
			if ph["size"] != float64(len(full)) {
				t.Fatalf("photo size %v, full image %d bytes", ph["size"], len(full))
			}
			waitMessage(t, b, id, msg, "the whole photo", func(m apiMessage) bool {
				ph, _ := m["photo"].(map[string]any)
				return m["text"] == caption && ph["ready"] == true
			})
			if _, got := getPhoto(t, b, id, msg, true); !bytes.Equal(got, full) {
				t.Fatal("the full image differs on the recipient")
			}
			if _, got := getPhoto(t, b, id, msg, false); !bytes.Equal(got, thumb) {
				t.Fatal("the thumbnail differs on the recipient")
			}
		})
	}
	if code, _, raw := a.do(t, "POST", convPath(id)+"/photos", []byte("not an image")); code != http.StatusUnsupportedMediaType {
		t.Fatalf("not an image: %d %s", code, raw)
	}
	if code, _, raw := a.do(t, "POST", convPath(id)+"/photos", hugePNG(t)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("too many pixels: %d %s", code, raw)
	}
	text := post(t, a, id, `{"text":"no photo here"}`)
	a.must(t, http.StatusNotFound, "GET", convPath(id)+"/messages/"+text+"/photo", "")
}

// TestConversationErrors: requests the API refuses, against a real
// conversation, each with a JSON error and the status the app relies on.
func TestConversationErrors(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	id := w.create(t, "Ward 7", b)
	m := post(t, a, id, `{"text":"handover at 8"}`)
	unknown := strings.Repeat("ab", 16) // a well-formed conversation ID nobody made
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown member", "POST", "/api/v1/conversations", `{"title":"W","members":["nobody"]}`, 422},
		{"bad JSON", "POST", "/api/v1/conversations", `{not json`, 400},
		{"bad conversation id", "GET", "/api/v1/conversations/zz/messages", "", 404},
		{"unknown conversation", "GET", "/api/v1/conversations/" + unknown + "/messages", "", 404},
		{"post to unknown conversation", "POST", "/api/v1/conversations/" + unknown + "/messages", `{"text":"x"}`, 404},
		{"oversized", "POST", convPath(id) + "/messages", `{"text":"` + strings.Repeat("x", maxBody) + `"}`, 413},
		{"empty message", "POST", convPath(id) + "/messages", `{"text":"  "}`, 400},
		{"bad reply_to", "POST", convPath(id) + "/messages", `{"text":"x","reply_to":"zz"}`, 400},
		{"bad message id", "PATCH", convPath(id) + "/messages/zz", `{"text":"x"}`, 404},
		{"empty edit", "PATCH", convPath(id) + "/messages/" + m, `{"text":""}`, 400},
		{"no emoji", "POST", convPath(id) + "/messages/" + m + "/reactions", `{}`, 400},
		{"receipt level", "POST", convPath(id) + "/receipts", `{"level":"seen","messages":["` + m + `"]}`, 400},
		{"receipt without messages", "POST", convPath(id) + "/receipts", `{"level":"read"}`, 400},
		{"receipt bad message id", "POST", convPath(id) + "/receipts", `{"level":"read","messages":["zz"]}`, 400},
		{"member unknown", "POST", convPath(id) + "/members", `{"add":["nobody"]}`, 422},
		{"not admin", "POST", convPath(id) + "/members", `{"promote":["bola"]}`, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := a
			if tc.name == "not admin" {
				p = b
			}
			if code, out := p.call(t, tc.method, tc.path, tc.body); code != tc.want {
				t.Fatalf("%d %v, want %d", code, out, tc.want)
			}
		})
	}
	if got := a.messages(t, id); len(got) != 1 {
		t.Fatalf("refused requests changed the conversation: %v", got)
	}
}

// apiEvent is an event as a client decodes it (DESIGN.md, "Local API").
type apiEvent struct {
	Type         string   `json:"type"`
	Conversation string   `json:"conversation"`
	Ops          []string `json:"ops"`
}

// dialEvents opens p's event stream and returns once the server is
// serving it: its reader answered a ping, and it starts only after the
// stream subscribed to the device's events.
func dialEvents(t *testing.T, p *dev) <-chan apiEvent {
	t.Helper()
	u := "ws" + strings.TrimPrefix(p.srv.URL, "http") + "/api/v1/events"
	ws, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer " + apiToken}})
	if err != nil {
		t.Fatal(err)
	}
	pong := make(chan struct{}, 1)
	ws.SetPongHandler(func(string) error {
		select {
		case pong <- struct{}{}:
		default:
		}
		return nil
	})
	events := make(chan apiEvent, 256)
	go func() {
		defer close(events)
		for {
			var e apiEvent
			if err := ws.ReadJSON(&e); err != nil {
				return
			}
			events <- e
		}
	}()
	t.Cleanup(func() {
		ws.Close()
		for range events { // until the reader has gone
		}
	})
	if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pong:
	case <-time.After(within):
		t.Fatal("the event stream does not answer")
	}
	return events
}

// awaitEvent reads events until one satisfies match.
func awaitEvent(t *testing.T, events <-chan apiEvent, what string, match func(apiEvent) bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("event stream closed before %s", what)
			}
			if match(e) {
				return
			}
		case <-deadline:
			t.Fatalf("no event within %v: %s", within, what)
		}
	}
}

// TestEventsWebSocket: the event stream needs the token; it tells the
// creator's app, then the colleague's, that a conversation appeared; after
// a send it names the conversation and the message's op on both devices.
func TestEventsWebSocket(t *testing.T) {
	w := newWard(t, "bola")
	a, b := w.asha, w.staff[0]
	u := "ws" + strings.TrimPrefix(a.srv.URL, "http") + "/api/v1/events"
	if _, resp, err := websocket.DefaultDialer.Dial(u, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without a token: %v", err)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer wrong"}}); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events with a wrong token: %v", err)
	}
	ea, eb := dialEvents(t, a), dialEvents(t, b)

	id := w.create(t, "Ward 7", b)
	for _, c := range []struct {
		who    string
		events <-chan apiEvent
	}{{"asha", ea}, {"bola", eb}} {
		awaitEvent(t, c.events, c.who+": conversation "+id.String(), func(e apiEvent) bool {
			return e.Type == "conversation" && e.Conversation == id.String()
		})
	}
	m := post(t, a, id, `{"text":"handover at 8"}`)
	for _, c := range []struct {
		who    string
		events <-chan apiEvent
	}{{"asha", ea}, {"bola", eb}} {
		awaitEvent(t, c.events, c.who+": message "+m, func(e apiEvent) bool {
			return e.Type == "message" && e.Conversation == id.String() && slices.Contains(e.Ops, m)
		})
	}
}
