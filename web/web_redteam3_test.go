package web

// Red-team round 3: the events WebSocket against a web page in the same
// browser, and against the app's inactivity lock.

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
)

func rtUnlock(t *testing.T, srv string) *http.Cookie {
	t.Helper()
	r := do(t, "POST", srv+"/app/unlock", `{"passphrase":"right"}`, map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": srv})
	if r.StatusCode != 200 || len(r.Cookies()) != 1 {
		t.Fatalf("unlock: %d", r.StatusCode)
	}
	return r.Cookies()[0]
}

// TestRedteam3CrossSiteWebSocketRefused (holds): a page on another origin
// of the same site (another port on 127.0.0.1: SameSite=Strict sends the
// cookie there) cannot open the event stream: gorilla's origin check.
func TestCrossSiteWebSocketRefused(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	c := rtUnlock(t, srv.URL)
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/events"
	hdr := http.Header{"Cookie": {c.String()}, "Origin": {"http://127.0.0.1:1"}}
	if ws, _, err := websocket.DefaultDialer.Dial(u, hdr); err == nil {
		ws.Close()
		t.Fatal("a cross-origin page opened the event stream with the session cookie")
	}
	hdr.Set("Origin", strings.TrimSuffix(srv.URL, "/"))
	ws, _, err := websocket.DefaultDialer.Dial(u, hdr)
	if err != nil {
		t.Fatalf("same-origin app: %v", err)
	}
	ws.Close()
}

// TestRedteam3EventStreamOutlivesLock: the app locks after inactivity (or
// on POST /app/lock) so that a phone left on a desk shows nothing; but an
// event stream opened while unlocked is never re-checked: it keeps
// streaming which conversations change and the op IDs, to a locked app.
func TestEventStreamEndsWithLock(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	c := rtUnlock(t, srv.URL)
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/events"
	ws, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Cookie": {c.String()}, "Origin": {strings.TrimSuffix(srv.URL, "/")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if r := do(t, "POST", srv.URL+"/app/lock", "", map[string]string{csrfHeader: "1", "Origin": srv.URL}, c); r.StatusCode != 200 {
		t.Fatalf("lock: %d", r.StatusCode)
	}
	if r := do(t, "GET", srv.URL+"/api/v1/conversations", "", nil, c); r.StatusCode != 401 {
		t.Fatalf("precondition: the session still works after lock: %d", r.StatusCode)
	}
	// Something happens on the device (here through the token API).
	if r := do(t, "POST", srv.URL+"/api/v1/conversations", `{"title":"x","members":["asha"]}`,
		map[string]string{"Content-Type": "application/json", "Authorization": "Bearer secret-token"}); r.StatusCode != 201 {
		t.Fatalf("create: %d", r.StatusCode)
	}
	ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	var e apiEvent
	if err := ws.ReadJSON(&e); err == nil {
		t.Fatalf("the locked app's event stream still delivers events: %+v", e)
	}
}

// TestRedteam3AdminCannotRemoveRevokedMember: Revoke's auto-removal runs
// only when a CRL arrives (and at start), on devices that are admins at
// that moment. Bola learns of the CRL revoking chidi's stolen phone, then
// is promoted (the promotion reaches her later, through the anchor): no
// hook runs again, and the API cannot do it by hand either — members are
// resolved with LookupStaff, which no longer knows revoked colleagues:
// 422 "unknown member". The stolen phone stays in the ward conversation.
func TestAdminRemovesRevokedMemberByPeerID(t *testing.T) {
	ca := testnet.NewCA(t)
	x := testnet.Start(t, ca, ca.Enrol(t, "anchor"), device.WithAnchor(0, 0))
	bid, cid := ca.Enrol(t, "bola"), ca.Enrol(t, "chidi")
	asha := serve(t, testnet.Start(t, ca, ca.Enrol(t, "asha"), testnet.Boot(x)))
	bola := testnet.Start(t, ca, bid, testnet.Boot(x))
	chidi := testnet.Start(t, ca, cid, testnet.Boot(x))
	testnet.Knows(t, asha.Peer, bola, chidi)
	id, err := asha.C.Create("ward", []peer.ID{bola.ID, chidi.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "joined", func() bool { return testnet.Joined(bola, id, 3) && testnet.Joined(chidi, id, 3) })
	bola.Stop()
	chidi.Stop()
	if err := asha.C.Promote(id, bola.ID); err != nil {
		t.Fatal(err)
	}
	tag := asha.C.Tags()[0]
	testnet.Eventually(t, within, "the anchor carries the promotion", func() bool { return len(x.M.IDsOf(tag)) >= len(asha.M.IDsOf(tag)) })
	asha.Stop() // asha's phone is off for the night
	b := serve(t, testnet.Start(t, ca, bid))
	if _, err := b.N.SubmitCRL(context.Background(), ca.CRL(t, 1, cid)); err != nil {
		t.Fatal(err)
	}
	// The revocation hook runs (bola not yet an admin, so it removes
	// nobody) before bola hears of her promotion.
	testnet.Eventually(t, within, "bola's device applied the CRL", func() bool {
		ctx := context.Background()
		if err := b.D.Audit().Flush(ctx); err != nil {
			return false
		}
		es, err := b.D.Audit().Since(ctx, time.Time{}, 1000)
		return err == nil && slices.ContainsFunc(es, func(e audit.Entry) bool { return e.Kind == audit.CRLApplied })
	})
	if err := b.N.Host().Connect(context.Background(), peer.AddrInfo{ID: x.ID, Addrs: x.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, within, "bola is an admin", func() bool {
		st, err := b.C.State(id)
		return err == nil && slices.Contains(st.Admins, bid.Key.PeerID())
	})
	st, _ := b.C.State(id)
	if !slices.Contains(st.Members, chidi.ID) {
		t.Fatal("precondition: chidi was removed before bola asked (no admin's device removed him when the CRL came)")
	}
	code, out := b.call(t, "POST", convPath(id)+"/members", `{"remove":["`+chidi.ID.String()+`"]}`)
	if code != 200 {
		t.Fatalf("an admin cannot remove a revoked (stolen) member through the API: %d %v; chidi is still a member", code, out)
	}
}
