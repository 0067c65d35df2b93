package web

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/appicon"
)

// get fetches path from the app without a session, as a browser installing
// the app (or its service worker) does.
func get(t *testing.T, url string) (code int, ctype string, body []byte) {
	t.Helper()
	r := do(t, "GET", url, "", nil)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") || r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("%s: headers loosened: %v", url, r.Header)
	}
	return r.StatusCode, r.Header.Get("Content-Type"), b
}

// TestManifest: the app is installable — index.html links a manifest,
// served as application/manifest+json, that names the app, opens "/" in
// a standalone window with scope "/", and lists 192 and 512 px PNG icons
// that are served, decode, and are the generator's drawing (go generate
// ./web makes them).
func TestManifest(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	_, _, page := get(t, srv.URL+"/")
	if !bytes.Contains(page, []byte(`<link rel="manifest" href="`+manifestPath+`">`)) {
		t.Fatal("index.html does not link the manifest")
	}
	code, ctype, body := get(t, srv.URL+manifestPath)
	if code != 200 || ctype != manifestType {
		t.Fatalf("manifest: %d %q", code, ctype)
	}
	var m struct {
		Name            string `json:"name"`
		ShortName       string `json:"short_name"`
		StartURL        string `json:"start_url"`
		Scope           string `json:"scope"`
		Display         string `json:"display"`
		ThemeColor      string `json:"theme_color"`
		BackgroundColor string `json:"background_color"`
		Icons           []struct{ Src, Sizes, Type, Purpose string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.Name != "medmesh" || m.ShortName != "medmesh" || m.StartURL != "/" || m.Scope != "/" || m.Display != "standalone" ||
		!regexp.MustCompile(`^#[0-9a-f]{6}$`).MatchString(m.ThemeColor) || !regexp.MustCompile(`^#[0-9a-f]{6}$`).MatchString(m.BackgroundColor) {
		t.Fatalf("manifest fields: %+v", m)
	}
	sizes := map[int]bool{}
	for _, ic := range m.Icons {
		n, err := strconv.Atoi(strings.Split(ic.Sizes, "x")[0])
		if err != nil || ic.Sizes != strconv.Itoa(n)+"x"+strconv.Itoa(n) || ic.Type != "image/png" {
			t.Fatalf("icon %+v", ic)
		}
		code, ctype, b := get(t, srv.URL+ic.Src)
		if code != 200 || ctype != "image/png" {
			t.Fatalf("%s: %d %q", ic.Src, code, ctype)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", ic.Src, err)
		}
		if got := img.Bounds(); got != image.Rect(0, 0, n, n) {
			t.Fatalf("%s is %v, the manifest says %s", ic.Src, got, ic.Sizes)
		}
		want := appicon.Draw(n)
		for y := range n {
			for x := range n {
				if color.NRGBAModel.Convert(img.At(x, y)) != want.NRGBAAt(x, y) {
					t.Fatalf("%s differs from appicon.Draw(%d) at %d,%d: run go generate ./web", ic.Src, n, x, y)
				}
			}
		}
		sizes[n] = true
	}
	if !sizes[192] || !sizes[512] {
		t.Fatalf("icon sizes %v, want 192 and 512", sizes)
	}
}

// swShell is the SHELL list of sw.js: what the service worker caches.
func swShell(t *testing.T, sw []byte) []string {
	t.Helper()
	m := regexp.MustCompile(`(?s)const SHELL = \[(.*?)\];`).FindSubmatch(sw)
	if m == nil {
		t.Fatal("sw.js has no SHELL list")
	}
	var out []string
	for _, q := range regexp.MustCompile(`'([^']*)'`).FindAllSubmatch(m[1], -1) {
		out = append(out, string(q[1]))
	}
	return out
}

// TestServiceWorkerCachesShellOnly: sw.js is served at the root (so its
// scope may be "/") as JavaScript, under the same headers; what it caches
// is the app shell — every entry served without a session — and never an
// /api/ path or the unlock endpoints; it only ever caches paths in that
// list (a cache.put or add of anything else would be a second way in).
func TestServiceWorkerCachesShellOnly(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	code, ctype, sw := get(t, srv.URL+swPath)
	if code != 200 || !strings.HasPrefix(ctype, "text/javascript") {
		t.Fatalf("sw.js: %d %q", code, ctype)
	}
	shell := swShell(t, sw)
	if !slices.Equal(shell, shellFiles) {
		t.Fatalf("sw.js caches %v, shellFiles says %v", shell, shellFiles)
	}
	for _, p := range shell {
		if strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/app/") || strings.Contains(p, "?") || !strings.HasPrefix(p, "/") {
			t.Fatalf("the shell lists %q", p)
		}
		if code, _, _ := get(t, srv.URL+p); code != 200 {
			t.Fatalf("shell file %s: %d", p, code)
		}
	}
	// Every write to the cache is of a shell path: addAll(SHELL) at
	// install, put(url.pathname) only after the isShell check.
	src := string(sw)
	if n := strings.Count(src, "c.put("); n != 1 || !strings.Contains(src, "if (req.method !== 'GET' || !isShell(url)) return;") ||
		strings.Count(src, "c.addAll(") != 1 || !strings.Contains(src, "c.addAll(SHELL)") || strings.Contains(src, "cache.add(") {
		t.Fatal("sw.js writes to the cache outside the shell check")
	}
	if strings.Contains(src, "/api/") && !strings.Contains(src, "no /api/ answer") {
		t.Fatal("sw.js names an /api/ path")
	}
	_, _, page := get(t, srv.URL+"/")
	for _, js := range []string{"/notify.js", "/pin.js"} {
		if !bytes.Contains(page, []byte(`<script type="module" src="`+js+`"></script>`)) {
			t.Fatalf("index.html does not load %s", js)
		}
	}
}

// TestForeignWorkerScriptCleared: a browser's check of a service worker
// script that is not ours is 404 with Clear-Site-Data "storage" (the
// browser then drops that worker); ours is served without it, and so is
// every ordinary request for a missing file.
func TestForeignWorkerScriptCleared(t *testing.T) {
	_, srv := appServer(t, time.Minute)
	for _, tc := range []struct {
		path, sw string
		code     int
		clear    bool
	}{
		{"/evil-sw.js", "script", 404, true},
		{"/index.html", "script", 404, true},
		{swPath, "script", 200, false},
		{"/evil-sw.js", "", 404, false},
		{"/", "", 200, false},
	} {
		r := do(t, "GET", srv.URL+tc.path, "", map[string]string{"Service-Worker": tc.sw})
		if got := r.Header.Get("Clear-Site-Data"); r.StatusCode != tc.code || (got == `"storage"`) != tc.clear || (!tc.clear && got != "") {
			t.Errorf("%s (Service-Worker %q): %d, Clear-Site-Data %q", tc.path, tc.sw, r.StatusCode, got)
		}
	}
}
