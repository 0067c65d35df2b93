package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/node"
)

// readSitePeers reads `run --site-peers FILE` (node.ParseSitePeers): only
// an anchor keeps site links, with a budget of at least
// node.MinSiteBudget.
func readSitePeers(file string, anchor bool, budget int64) ([]peer.AddrInfo, error) {
	if file == "" {
		return nil, nil
	}
	if !anchor {
		return nil, errors.New("--site-peers needs --anchor: only anchors bridge sites")
	}
	if budget < node.MinSiteBudget {
		return nil, fmt.Errorf("--site-budget %d: must be at least %d bytes per second (a smaller budget cannot carry one large message within a session)", budget, node.MinSiteBudget)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--site-peers: %w", err)
	}
	defer f.Close()
	peers, err := node.ParseSitePeers(f)
	if err != nil {
		return nil, fmt.Errorf("--site-peers %s: %w", file, err)
	}
	return peers, nil
}
