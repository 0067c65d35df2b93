package web

// Red-team round 6: the audit trail behind the local API.

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/medmesh/medmesh/audit"
)

// TestRedteam6EmptyPassphraseBypassesGateAndFloodsTrail
//
// Attack: another local user (or anything that reaches the API port:
// a LAN host when --api is bound to a LAN address) has no token and no
// session. It POSTs /app/unlock with {"passphrase":""}, the CSRF header
// and an Origin naming the node itself (a non-browser client sets any
// Origin) — as fast as it likes. An empty passphrase is answered before
// the unlock gate, so no back-off applies, yet each one is recorded as
// an unlock_failed entry: signed, hashed, written to the store.
//
// Impact: an unauthenticated local process writes unbounded entries into
// the device's tamper-evident trail: it buries real failed unlocks in
// noise, grows the encrypted store without limit (filling the disk
// stops the trail — and message saves), and — since the device's Trail
// queue is shared and drops what does not fit — can make the trail drop
// real events (received, read, acknowledged) while the flood lasts. A
// wrong non-empty passphrase is rate-limited; the empty one is not.
func TestRedteam6EmptyPassphraseBypassesGateAndFloodsTrail(t *testing.T) {
	a := newMemAudit(t)
	s := New(&fakeNode{}, "tok", slog.New(slog.DiscardHandler), WithApp((&counted{}).unlock, time.Minute), WithAudit(a))
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	s.gate.now, s.sessions.now = clock.Now, clock.Now // time stands still: the back-off never ends
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	unlock := func(pass string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/app/unlock", bytes.NewReader([]byte(`{"passphrase":"`+pass+`"}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(csrfHeader, "1")
		req.Header.Set("Origin", srv.URL)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := unlock("guess"); code != http.StatusUnauthorized {
		t.Fatalf("first wrong passphrase: %d", code)
	}
	if code := unlock("guess2"); code != http.StatusTooManyRequests {
		t.Fatalf("setup: a second guess during the back-off got %d", code)
	}
	const n = 300
	throttled := 0
	for range n {
		if unlock("") == http.StatusTooManyRequests {
			throttled++
		}
	}
	failed := 0
	for _, k := range a.kinds(t) {
		if k == audit.UnlockFailed {
			failed++
		}
	}
	if failed > 2 {
		t.Fatalf("during the back-off, %d of %d empty attempts were let through (%d throttled) and the trail holds %d unlock_failed entries",
			n-throttled, n, throttled, failed)
	}
}
