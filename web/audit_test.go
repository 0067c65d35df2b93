package web

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/medmesh/medmesh/audit"
)

// memAudit is a real audit log in memory that records synchronously.
type memAudit struct {
	*audit.Log
	t *testing.T
}

func newMemAudit(t *testing.T) *memAudit {
	t.Helper()
	clock := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	l, err := audit.Open(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()),
		ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)),
		audit.WithClock(func() time.Time { clock = clock.Add(time.Second); return clock }))
	if err != nil {
		t.Fatal(err)
	}
	return &memAudit{Log: l, t: t}
}

func (m *memAudit) Record(evs ...audit.Event) {
	if _, err := m.Append(context.Background(), evs...); err != nil {
		m.t.Error(err)
	}
}
func (m *memAudit) Stats() audit.Stats { return audit.Stats{Entries: m.Current().Seq} }

func (m *memAudit) kinds(t *testing.T) []audit.Kind {
	t.Helper()
	es, err := m.Since(context.Background(), time.Time{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Kind
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

func getAudit(t *testing.T, srv, query string, hdr map[string]string) (int, []auditEvent) {
	t.Helper()
	code, _, body := request(t, "GET", srv+"/api/v1/audit"+query, "", "", hdr)
	var evs []auditEvent
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &evs); err != nil {
			t.Fatalf("bad JSON %q", body)
		}
	}
	return code, evs
}

func TestAuditAPI(t *testing.T) {
	a := newMemAudit(t)
	for range 7 {
		a.Record(audit.Event{Kind: audit.Received, IDs: audit.IDs{Conversation: "c1", Ops: []string{"o1"}, Peer: "p1"}})
	}
	s := New(&fakeNode{}, "tok", slog.New(slog.DiscardHandler), WithAudit(a))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	auth := map[string]string{"Authorization": "Bearer tok"}

	if code, _ := getAudit(t, srv.URL, "", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := getAudit(t, srv.URL, "", with(auth, "Origin", "http://evil.example")); code != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", code)
	}
	code, all := getAudit(t, srv.URL, "", auth)
	if code != 200 || len(all) != 7 || all[0].Seq != 1 || all[0].Kind != audit.Received || all[0].IDs.Conversation != "c1" ||
		len(all[0].Hash) != 64 || all[1].Prev != all[0].Hash {
		t.Fatalf("all: %d %+v", code, all)
	}
	// Pages by time: the last event's time is the next page's since.
	var seen []uint64
	since := ""
	for range 10 {
		_, page := getAudit(t, srv.URL, "?limit=3"+since, auth)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seen = append(seen, e.Seq)
		}
		since = "&since=" + url.QueryEscape(page[len(page)-1].Time.Format(time.RFC3339Nano))
	}
	if !slices.Equal(seen, []uint64{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("pages: %v", seen)
	}
	for _, q := range []string{"?since=yesterday", "?limit=0", "?limit=1001", "?limit=x"} {
		if code, _ := getAudit(t, srv.URL, q, auth); code != http.StatusBadRequest {
			t.Errorf("%s: %d", q, code)
		}
	}
	code, _, body := request(t, "GET", srv.URL+"/api/v1/status", "", "", auth)
	var st struct {
		PeerID string      `json:"peer_id"`
		Audit  audit.Stats `json:"audit"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.PeerID == "" || st.Audit.Entries != 7 {
		t.Fatalf("status: %d %s", code, body)
	}
}

// TestAppLockEventsAudited: a wrong passphrase, the right one, a lock by
// the user and a lock by inactivity are each recorded; none records the
// passphrase or the session.
func TestAppLockEventsAudited(t *testing.T) {
	a := newMemAudit(t)
	s := New(&fakeNode{}, "tok", slog.New(slog.DiscardHandler), WithApp((&counted{}).unlock, time.Minute), WithAudit(a))
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s.gate.now, s.sessions.now = clock.Now, clock.Now
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	hdr := map[string]string{"Content-Type": "application/json", csrfHeader: "1", "Origin": srv.URL}
	unlock := func(pass string) (int, []*http.Cookie) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/app/unlock", bytes.NewReader([]byte(`{"passphrase":"`+pass+`"}`)))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Cookies()
	}
	if code, _ := unlock("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong passphrase: %d", code)
	}
	clock.Add(UnlockBackoffMax)
	code, cookies := unlock("right")
	if code != 200 || len(cookies) == 0 {
		t.Fatalf("right passphrase: %d", code)
	}
	if code, _, _ := request(t, "POST", srv.URL+"/app/lock", "", "", hdr, cookies...); code != 200 {
		t.Fatalf("lock: %d", code)
	}
	_, cookies = unlock("right")
	clock.Add(2 * time.Minute) // the inactivity lock
	if code, _, _ := request(t, "GET", srv.URL+"/api/v1/status", "", "", nil, cookies...); code != http.StatusUnauthorized {
		t.Fatalf("after the inactivity lock: %d", code)
	}
	want := []audit.Kind{audit.UnlockFailed, audit.Unlocked, audit.Locked, audit.Unlocked, audit.Locked}
	if got := a.kinds(t); !slices.Equal(got, want) {
		t.Fatalf("recorded %v, want %v", got, want)
	}
	es, _ := a.Since(context.Background(), time.Time{}, 100)
	for _, e := range es {
		if bytes.Contains(e.Body, []byte("right")) || bytes.Contains(e.Body, []byte(cookies[0].Value)) {
			t.Fatalf("entry %d holds the passphrase or the session", e.Seq)
		}
	}
}
