package web

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/medmesh/medmesh/device"
)

// App is the local API and web app of one running device, listening.
type App struct {
	srv   *http.Server
	ln    net.Listener
	token string
	done  chan error
}

// Serve starts the local API and the web app of d on addr (host:port; port
// 0 picks one), with a fresh bearer token. It answers requests for the
// loopback names, the address a connection arrives on and addr's host. unlock checks a passphrase for
// the app's lock screen; the app locks after lockAfter without use.
func Serve(d *device.Device, addr string, unlock func([]byte) bool, lockAfter time.Duration, log *slog.Logger) (*App, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("local API on %s: %w", addr, err)
	}
	a := &App{ln: ln, token: NewToken(), done: make(chan error, 1)}
	n := d.Node()
	opts := []Option{WithConversations(d.Conversations(), n), WithApp(unlock, lockAfter)}
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
		opts = append(opts, WithHosts(host)) // a name given in --api answers too
	}
	a.srv = &http.Server{Handler: New(n, a.token, log, opts...),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { a.done <- a.srv.Serve(ln) }()
	return a, nil
}

// Server is the API's handler (tests tune it, e.g. SetLockAfter).
func (a *App) Server() *Server { return a.srv.Handler.(*Server) }

// URL is the app's address.
func (a *App) URL() string { return "http://" + a.ln.Addr().String() + "/" }

// Addr is the address the API listens on.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// Token is the API's bearer token.
func (a *App) Token() string { return a.token }

// Done yields the server's error if it stops by itself.
func (a *App) Done() <-chan error { return a.done }

// Close stops the server, letting requests in flight finish within grace.
func (a *App) Close(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	a.srv.Shutdown(ctx)
}
