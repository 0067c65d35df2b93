package web

import (
	"io/fs"
	"net/http"
)

//go:generate go run ../internal/appicon/genicons -out app

// The installable app: a web app manifest and a service worker (app/sw.js,
// scope "/") that caches the app shell only — shellFiles, nothing under
// /api/, no message, no photo. Both are static files of the app, served
// under the same guard and headers as the page: the CSP's default-src
// 'self' already covers worker-src and manifest-src, so nothing is
// loosened for them.
const (
	manifestPath = "/manifest.webmanifest"
	manifestType = "application/manifest+json"
	swPath       = "/sw.js"
)

// shellFiles are what the service worker caches (its SHELL list; a test
// checks the two agree and that every one is served).
var shellFiles = []string{"/", "/index.html", "/app.css", "/pwa.css", "/app.js", "/notify.js", "/pin.js", "/roles.js", "/federated.js", "/escalate.js", "/chatui.js", "/chatui.css",
	manifestPath, "/icon-192.png", "/icon-512.png"}

// routePWA serves the manifest with its own media type (file servers
// guess from the system's MIME table, which need not know .webmanifest).
func (s *Server) routePWA() {
	s.public.HandleFunc("GET "+manifestPath, func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(appFiles, "app"+manifestPath)
		if err != nil {
			writeError(w, http.StatusNotFound, "no manifest")
			return
		}
		w.Header().Set("Content-Type", manifestType)
		w.Write(b)
	})
}

// foreignWorkers answers a browser's fetch of a service worker script
// other than ours (the Service-Worker: script header, sent when a browser
// installs or updates a worker) with 404 and Clear-Site-Data "storage",
// which unregisters every service worker of this origin. A process that
// held the node's port before the node started may have installed a
// worker of its own there, which would go on serving its look-alike lock
// screen from the browser's cache long after the node owns the port; the
// browser checks such a worker's script on each visit, and this removes
// it. Ours is re-registered by the page on its next load.
func foreignWorkers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Service-Worker") != "" && r.URL.Path != swPath {
			w.Header().Set("Clear-Site-Data", `"storage"`)
			writeError(w, http.StatusNotFound, "no such service worker")
			return
		}
		next.ServeHTTP(w, r)
	})
}
