package node

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ProtoSiteLink is an anchor's word to a site peer it lists: "I keep a
// site link to you". A site peer that does not list it back (one side
// only configured) then treats it as a site peer too for what it tells
// this site's devices and for gossip (sitesPX, gossipsWith), so the other
// site's anchor is never named to the devices here. The stream carries no
// payload: the listing anchor opens it, closes its side and waits for the
// answer's close (a reset: not taken).
const ProtoSiteLink = "/medmesh/site/1"

// siteAnnounceWait is how long an anchor newly admitted here is named to
// no one, waiting for its ProtoSiteLink word (an anchor that lists us
// sends it right after admitting us).
const siteAnnounceWait = 10 * time.Second

// siteWords holds the anchors that announced a site link to this node
// (at most maxSitePeers, for the node's life) and the anchors admitted
// here whose word is still awaited. mu guards every field.
type siteWords struct {
	mu      sync.Mutex
	linked  map[peer.ID]bool
	pending map[peer.ID]int
	changed chan struct{} // closed and replaced when linked changes
}

func (w *siteWords) init() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.changed == nil {
		w.linked, w.pending, w.changed = map[peer.ID]bool{}, map[peer.ID]int{}, make(chan struct{})
	}
}

func (w *siteWords) has(p peer.ID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.linked[p]
}

func (w *siteWords) awaiting(p peer.ID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending[p] > 0
}

// announcedSite reports whether p announced a site link to this node.
func (n *Node) announcedSite(p peer.ID) bool { return n.words.has(p) }

// handleSiteLink takes an admitted anchor's word that it keeps a site
// link to us. Another peer's word is refused: only an anchor keeps site
// links, and the word only ever narrows what we tell and gossip to it.
func (n *Node) handleSiteLink(s network.Stream) {
	from := s.Conn().RemotePeer()
	if !n.HasRole(from, RoleAnchor) {
		s.Reset()
		return
	}
	n.words.init()
	n.words.mu.Lock()
	if !n.words.linked[from] && len(n.words.linked) >= maxSitePeers {
		n.words.mu.Unlock()
		s.Reset()
		return
	}
	if !n.words.linked[from] {
		n.words.linked[from] = true
		close(n.words.changed)
		n.words.changed = make(chan struct{})
	}
	n.words.mu.Unlock()
	s.Close()
}

// announceSite tells listed site peer id that we keep a site link to it.
func (n *Node) announceSite(id peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, dirTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, ProtoSiteLink)
	if err != nil {
		n.log.Debug("site link word not sent", "remote", id.String(), "err", err)
		return
	}
	s.SetDeadline(time.Now().Add(dirTimeout))
	s.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(s, 1))
	s.Close()
}

// awaitSiteWord waits (at most siteAnnounceWait) for anchor id's word
// that it keeps a site link to us; while it waits, id is named to no one
// (addrsOf). It reports whether the word came.
func (n *Node) awaitSiteWord(id peer.ID) bool {
	n.words.init()
	n.words.mu.Lock()
	n.words.pending[id]++
	n.words.mu.Unlock()
	defer func() {
		n.words.mu.Lock()
		if n.words.pending[id]--; n.words.pending[id] <= 0 {
			delete(n.words.pending, id)
		}
		n.words.mu.Unlock()
	}()
	t := time.NewTimer(siteAnnounceWait)
	defer t.Stop()
	for {
		n.words.mu.Lock()
		linked, ch := n.words.linked[id], n.words.changed
		n.words.mu.Unlock()
		if linked {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-n.ctx.Done():
			return false
		}
	}
}
