package web

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzGuard: the Host and Origin headers are the guard's input from any
// page. Whatever they hold, the guard does not panic, and what it accepts
// names one of the node's hosts on the port the connection arrived on.
func FuzzGuard(f *testing.F) {
	for _, seed := range [][2]string{
		{"127.0.0.1:7070", "http://127.0.0.1:7070"},
		{"localhost:7070", "http://localhost:7070"},
		{"[::1]:7070", "http://[::1]:7070"},
		{"evil.example:7070", "http://evil.example:7070"},
		{"192.168.1.5:7070", "null"},
		{"[::ffff:127.0.0.1]:7070", "http://[::ffff:7f00:1]:7070"},
		{"127.0.0.1:7070:1", "http://user@127.0.0.1:7070/"},
		{"", "https://127.0.0.1:7070"},
	} {
		f.Add(seed[0], seed[1])
	}
	s := New(&fakeNode{}, "t", slog.New(slog.DiscardHandler), WithHosts("ward.example"))
	local := net.Addr(&net.TCPAddr{IP: net.ParseIP("192.168.1.5"), Port: 7070})
	known := map[string]bool{"127.0.0.1": true, "localhost": true, "::1": true, "192.168.1.5": true, "ward.example": true}
	f.Fuzz(func(t *testing.T, host, origin string) {
		r := httptest.NewRequest("GET", "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		r.Host = host
		if s.hostAllowed(r) {
			h, p, ok := splitHost(host)
			if !ok || !known[h] || p != "" && p != "7070" {
				t.Fatalf("Host %q accepted as %q port %q", host, h, p)
			}
		}
		if s.ownOrigin(r, origin) {
			u, err := url.Parse(origin)
			if err != nil || u.Scheme != "http" || u.Port() != "7070" || !known[normHost(u.Hostname())] {
				t.Fatalf("Origin %q accepted", origin)
			}
		}
	})
}
