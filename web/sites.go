package web

import (
	"net/http"

	"github.com/medmesh/medmesh/node"
)

// siteLinks is a Backend that reports an anchor's site links
// (node.Node.SiteLinks).
type siteLinks interface{ SiteLinks() []node.SiteLink }

// sites answers GET /api/v1/sites: one entry per site link of an anchor —
// {peer, addrs, up, since, queued_bytes, sent_bytes, received_bytes,
// last_sync} — and an empty list on any other device.
func (s *Server) sites(w http.ResponseWriter, r *http.Request) {
	links := []node.SiteLink{}
	if b, ok := s.b.(siteLinks); ok {
		links = b.SiteLinks()
	}
	writeJSON(w, http.StatusOK, links)
}
