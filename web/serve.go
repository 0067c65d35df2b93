package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/medmesh/medmesh/device"
)

// App is the local API and web app of one running device, listening.
type App struct {
	srv   *http.Server
	ln    net.Listener   // the address asked for: URL and Addr name it
	extra []net.Listener // [::1] on the same port, claimed beside 127.0.0.1
	token string
	done  chan error
}

// Serve starts the local API and the web app of d on addr (host:port; port
// 0 picks one), with a fresh bearer token. It answers requests for the
// loopback names, the address a connection arrives on and addr's host.
// unlock checks a passphrase for the app's lock screen; the app locks
// after lockAfter without use.
//
// On 127.0.0.1 (or localhost) it also claims [::1] on the same port:
// "localhost" resolves to both, browsers try ::1 first, and another local
// user who bound [::1]:PORT would be served every http://localhost:PORT
// request — our lock screen, their page. If that address is taken, Serve
// fails (ErrLoopbackTaken); with port 0 it picks another port.
func Serve(d *device.Device, addr string, unlock func([]byte) bool, lockAfter time.Duration, log *slog.Logger) (*App, error) {
	ln, extra, err := listen(addr)
	if err != nil {
		return nil, err
	}
	a := &App{ln: ln, extra: extra, token: NewToken(), done: make(chan error, 1+len(extra))}
	n := d.Node()
	opts := []Option{WithConversations(d.Conversations(), n), WithApp(unlock, lockAfter), WithAudit(d.Audit()), WithRoles(d)}
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
		opts = append(opts, WithHosts(host)) // a name given in --api answers too
	}
	a.srv = &http.Server{Handler: New(n, a.token, log, opts...),
		ReadHeaderTimeout: 10 * time.Second}
	for _, l := range append([]net.Listener{ln}, extra...) {
		go func() { a.done <- a.srv.Serve(l) }()
	}
	return a, nil
}

// listen binds addr and, when it is IPv4 loopback, [::1] on the same port.
func listen(addr string) (net.Listener, []net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("local API on %s: %w", addr, err)
	}
	tries := 1
	if port == "0" {
		tries = 8 // a random port whose [::1] twin is taken: pick another
	}
	for {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("local API on %s: %w", addr, err)
		}
		tcp, ok := ln.Addr().(*net.TCPAddr)
		if !ok || !tcp.IP.Equal(net.IPv4(127, 0, 0, 1)) || host != "127.0.0.1" && host != "localhost" {
			return ln, nil, nil
		}
		twin := net.JoinHostPort("::1", strconv.Itoa(tcp.Port))
		ln6, err := net.Listen("tcp6", twin)
		switch {
		case err == nil:
			return ln, []net.Listener{ln6}, nil
		case !errors.Is(err, syscall.EADDRINUSE):
			return ln, nil, nil // no IPv6 loopback here: nobody can squat it either
		}
		ln.Close()
		if tries--; tries == 0 {
			return nil, nil, fmt.Errorf("local API on %s: %w", twin, ErrLoopbackTaken)
		}
	}
}

// Server is the API's handler (tests tune it, e.g. SetLockAfter).
func (a *App) Server() *Server { return a.srv.Handler.(*Server) }

// URL is the app's address: always the address bound, never "localhost".
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
