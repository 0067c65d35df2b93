package web

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/medmesh/medmesh/node"
)

// anchorNode is a fake backend with site links.
type anchorNode struct {
	fakeNode
	links []node.SiteLink
}

func (a *anchorNode) SiteLinks() []node.SiteLink { return a.links }

// TestSites: GET /api/v1/sites needs the token; an anchor lists its
// links with every field; any other device an empty list (not null).
func TestSites(t *testing.T) {
	at := time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)
	a := &anchorNode{links: []node.SiteLink{{Peer: "12D3KooWB", Addrs: []string{"/ip4/10.0.0.2/tcp/4001"}, Up: true, Since: at,
		QueuedBytes: 7, SentBytes: 100, ReceivedBytes: 50, LastSync: at}}}
	get := func(b Backend, token string) (int, string) {
		req := httptest.NewRequest("GET", "/api/v1/sites", nil)
		req.Host = "127.0.0.1"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		New(b, "t", slog.New(slog.DiscardHandler)).ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	if code, _ := get(a, ""); code != 401 {
		t.Fatalf("without the token: %d, want 401", code)
	}
	if code, body := get(&fakeNode{}, "t"); code != 200 || body != "[]\n" && body != "[]" {
		t.Fatalf("a device that is no anchor: %d %q, want 200 []", code, body)
	}
	code, body := get(a, "t")
	var got []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got) != 1 {
		t.Fatalf("an anchor: %d %q", code, body)
	}
	for _, k := range []string{"peer", "addrs", "up", "since", "queued_bytes", "sent_bytes", "received_bytes", "last_sync"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("no %q in %s", k, body)
		}
	}
}
