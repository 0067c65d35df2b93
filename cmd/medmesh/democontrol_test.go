package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDemoControlRefusesOtherPages: the demo control page answers only its
// own host, and takes a device offline only when the page itself asks.
func TestDemoControlRefusesOtherPages(t *testing.T) {
	var hit bool
	h := localOnly(7, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit = true }))
	for _, tc := range []struct {
		method, host, origin string
		want                 int
	}{
		{"GET", "localhost:7", "", http.StatusOK},
		{"POST", "localhost:7", "http://localhost:7", http.StatusOK},
		{"GET", "evil.example:7", "", http.StatusMisdirectedRequest},
		{"POST", "evil.example:7", "http://evil.example:7", http.StatusMisdirectedRequest},
		{"POST", "localhost:7", "http://127.0.0.1:7070", http.StatusForbidden},
		{"POST", "localhost:7", "", http.StatusForbidden},
	} {
		hit = false
		r := httptest.NewRequest(tc.method, "http://"+tc.host+"/alice/off", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want || hit != (tc.want == http.StatusOK) {
			t.Errorf("%s Host %s Origin %q: %d (handler ran: %v), want %d", tc.method, tc.host, tc.origin, w.Code, hit, tc.want)
		}
	}
}
