package device

import (
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
)

// WithSitePeers makes an anchor keep links to other sites' anchors
// (node/sites.go): kept connected, re-dialled with backoff, and paced at
// budget bytes per second of sync traffic each (0: node.DefaultSiteBudget),
// urgent ops first; conversation gossip does not cross them, sync does at
// once. Only an anchor (WithAnchor) takes site peers.
func WithSitePeers(budget int64, peers ...peer.AddrInfo) Option {
	return func(c *config) error {
		if budget < 0 {
			return errors.New("site budget must not be negative")
		}
		c.sites, c.siteBudget = append(c.sites, peers...), budget
		return nil
	}
}

// WithSiteTiming sets the site links' timing (zero fields: the product's
// defaults, node.SiteTiming). Simulations shorten it by their clock's scale.
func WithSiteTiming(t node.SiteTiming) Option {
	return func(c *config) error { c.siteTiming = t; return nil }
}

// siteLinks is the mesh's view of the node's site links, if it has any.
func siteLinks(cfg config, n *node.Node) mesh.Links {
	if len(cfg.sites) == 0 || !cfg.anchor {
		return nil
	}
	return n
}

// sitePeers is the site peers the node keeps: none unless an anchor.
func sitePeers(cfg config) []peer.AddrInfo {
	if !cfg.anchor {
		return nil
	}
	return cfg.sites
}
