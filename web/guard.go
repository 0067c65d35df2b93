package web

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// loopbackHosts are the names the node always answers to.
var loopbackHosts = []string{"127.0.0.1", "localhost", "::1"}

// WithHosts adds host names (or addresses) the API answers to besides the
// loopback names and the address a connection arrived on — e.g. the host
// of a --api address given by name.
func WithHosts(hosts ...string) Option {
	return func(s *Server) {
		for _, h := range hosts {
			if h = normHost(h); h != "" {
				s.hosts = append(s.hosts, h)
			}
		}
	}
}

// normHost lower-cases a host and strips IPv6 brackets and an IPv4-mapped
// prefix; "" for an unspecified address (0.0.0.0, ::), which names no host.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Unmap().IsUnspecified() {
			return ""
		}
		return a.Unmap().String()
	}
	return h
}

// localAddr is the address a request's connection arrived on (nil when the
// handler runs without a net/http server, as in unit tests).
func localAddr(r *http.Request) (host, port string) {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok || a == nil {
		return "", ""
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return "", ""
	}
	return normHost(h), p
}

// splitHost splits "host[:port]" (a Host header or an Origin's host); the
// port is "" when absent. ok is false for a malformed value.
func splitHost(hp string) (host, port string, ok bool) {
	if hp == "" {
		return "", "", false
	}
	if h, p, err := net.SplitHostPort(hp); err == nil {
		return normHost(h), p, h != ""
	}
	if strings.Contains(strings.Trim(hp, "[]"), ":") && !strings.HasPrefix(hp, "[") {
		return "", "", false // a bare IPv6 address must be bracketed
	}
	return normHost(hp), "", true
}

// knownHost reports whether host names this node: a loopback name, the
// address the connection arrived on (a LAN address when bound to one or to
// 0.0.0.0), or a name given with WithHosts. A DNS-rebinding page reaches us
// under its own name, which is none of these.
func (s *Server) knownHost(host, local string) bool {
	if host == "" {
		return false
	}
	for _, h := range loopbackHosts {
		if host == h {
			return true
		}
	}
	for _, h := range s.hosts {
		if host == h {
			return true
		}
	}
	return local != "" && host == local
}

// hostAllowed checks the Host header: a known host, with no port or the
// port the connection arrived on.
func (s *Server) hostAllowed(r *http.Request) bool {
	host, port, ok := splitHost(r.Host)
	if !ok {
		return false
	}
	local, localPort := localAddr(r)
	if port != "" && localPort != "" && port != localPort {
		return false
	}
	return s.knownHost(host, local)
}

// ownOrigin reports whether origin (an Origin header) is this node's own:
// http, a known host, and the port the connection arrived on (the Host
// header's port when that is unknown). "null" and anything with a path are
// foreign.
func (s *Server) ownOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return false
	}
	host, port, ok := splitHost(u.Host)
	if !ok {
		return false
	}
	if port == "" {
		port = "80"
	}
	local, want := localAddr(r)
	if want == "" {
		if _, p, _ := splitHost(r.Host); p != "" {
			want = p
		} else {
			want = "80"
		}
	}
	return port == want && s.knownHost(host, local)
}

// stateChanging is a request that may change the device's state: any
// method but GET, HEAD and OPTIONS, and every WebSocket upgrade (the event
// stream reads what the session may see; a page must not open it).
func stateChanging(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return isUpgrade(r)
	}
	return true
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// crossSite reports a browser's own statement (Sec-Fetch-Site, sent by
// every current browser) that a page of another origin made the request.
// Another port on 127.0.0.1 is "same-site" for cookies (SameSite=Strict
// still sends them) but not same-origin: it is refused the session too.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return false
	}
	return true
}
