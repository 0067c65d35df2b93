package main

import (
	"fmt"
	"html"
	"net"
	"net/http"
	"strings"
)

// demoControl serves a page that takes demo devices off the network and
// back (a basement, a lift), to watch messages queue and arrive. It listens
// on localhost — a different origin from the device apps.
func demoControl(people []demoPerson, devices []*running) (string, func(), error) {
	ln, err := net.Listen("tcp", "localhost:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
		w.Header().Set("Cache-Control", "no-store")
		var b strings.Builder
		b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
			`<title>medmesh demo control</title><style>body{font:16px system-ui;margin:2em}li{margin:.6em 0}button{font:inherit}</style></head><body>` +
			`<h1>medmesh demo control</h1><p>Take a device off the network — into the basement — and back, and watch its messages queue and arrive.</p><ul>`)
		for i, p := range people {
			state, action, label := "online", "off", "Take offline"
			if devices[i].n.Offline() {
				state, action, label = "offline", "on", "Bring back online"
			}
			fmt.Fprintf(&b, `<li><strong>%s</strong> (%s) — <a href="%s">app</a> <form method="post" action="/%s/%s" style="display:inline"><button>%s</button></form></li>`,
				html.EscapeString(p.details.Name), state, html.EscapeString(devices[i].url()), html.EscapeString(p.dir), action, label)
		}
		b.WriteString(`</ul></body></html>`)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, b.String())
	})
	mux.HandleFunc("POST /{who}/{action}", func(w http.ResponseWriter, r *http.Request) {
		for i, p := range people {
			if p.dir == r.PathValue("who") {
				devices[i].n.SetOffline(r.PathValue("action") == "off")
			}
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	port := ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: localOnly(port, mux)}
	go srv.Serve(ln)
	// Named by host name, not address: a different origin from the apps.
	return fmt.Sprintf("http://localhost:%d/", port), func() { srv.Close() }, nil
}

// localOnly answers only requests for this page's own host and port (no
// DNS rebinding), and takes a POST only from the page itself (its Origin),
// so no other page in the browser can take demo devices offline.
func localOnly(port int, h http.Handler) http.Handler {
	own := fmt.Sprintf("localhost:%d", port)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != own {
			http.Error(w, "unknown host", http.StatusMisdirectedRequest)
			return
		}
		if r.Method != http.MethodGet && r.Header.Get("Origin") != "http://"+own {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
