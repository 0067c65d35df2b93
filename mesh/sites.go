package mesh

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// Links is what the mesh needs from the node's site links (an anchor's
// links to other sites' anchors across a WAN; node/sites.go). Conversation
// gossip does not cross them, so what crosses, crosses in sync:
//
//   - whenever this device takes in or makes something new, it syncs with
//     its site peers soon (KickDelay), so a message crosses in one session;
//   - every frame sent to a site peer (offer, want, envelopes) waits for
//     the link's budget (Pace), frames holding an op whose signed header
//     marks it urgent first (within its sender's allowance: urgent.go); kicks coalesce (a round with a peer running takes
//     at most one more after it: syncRound), so an offer crosses at most
//     once per round however often new ops arrive;
//   - envelopes are fetched from a site peer in batches of siteBatch, so
//     one frame holds the link for a fraction of a second and another
//     conversation's frame is not stuck behind a backlog;
//   - a session with a site peer skips the tags another session with it
//     is moving now (busy), so a conversation with a backlog crossing does
//     not hold up the others: their ops cross in a session of their own;
//   - what arrives from a site peer is published on this site's gossip at
//     once (and a sync round kicked), so it reaches the site's devices
//     without waiting for their next round.
//
// A site peer is trusted for nothing more than any admitted peer: its
// sessions are gated on admission and its envelopes checked alike.
type Links interface {
	// IsSitePeer reports whether p is a site peer.
	IsSitePeer(p peer.ID) bool
	// PaceSite waits until size bytes may be sent to p (urgent first).
	PaceSite(ctx context.Context, p peer.ID, size int, urgent bool) error
	// SiteReceived counts bytes received from p.
	SiteReceived(p peer.ID, size int)
	// SiteSynced records a complete session with p.
	SiteSynced(p peer.ID)
}

// Site link frames. siteBatch is how many envelopes one want asks a site
// peer for (fetchBatch on a LAN); an envelope frame to a site peer is
// written in chunks of siteChunk, each waiting for the budget, so the
// frames of two sessions share the link chunk by chunk; a frame read from
// a site peer may take siteFrameTimeout (frameTimeout on a LAN): a slow
// or busy WAN link is no broken peer.
const (
	siteBatch        = 16
	siteChunk        = 8 << 10
	siteFrameTimeout = time.Minute
)

// frameTimeout is how long one frame may take to read or write.
func (c *conn) frameTimeout() time.Duration {
	if c.site {
		return siteFrameTimeout
	}
	return frameTimeout
}

// sendPaced writes buf (a frame after its varint length prefix, prefix
// bytes) to a site peer in chunks, each within the link's budget.
// siteFrameTimeout bounds each chunk's wait, not the frame's: a frame of
// sixteen large envelopes takes longer than that at a small budget, and
// must still cross (the reader's deadline, siteReader, is one of progress
// too). The first urgent bytes of the frame (and its length prefix) go as
// urgent, the rest as routine; a chunk is cut where they end.
func (c *conn) sendPaced(buf []byte, prefix, urgent int) error {
	if urgent > 0 && urgent < math.MaxInt-prefix {
		urgent += prefix // the length prefix goes with the frame's first bytes
	}
	for off := 0; len(buf) > 0; {
		n := min(len(buf), siteChunk)
		if off < urgent && off+n > urgent {
			n = urgent - off
		}
		ctx, cancel := context.WithTimeout(c.svc.ctx, siteFrameTimeout)
		err := c.svc.cfg.Links.PaceSite(ctx, c.p, n, off < urgent)
		off += n
		cancel()
		if err != nil {
			return fmt.Errorf("site link budget: %w", err)
		}
		c.s.SetWriteDeadline(time.Now().Add(frameTimeout))
		if _, err := c.s.Write(buf[:n]); err != nil {
			return err
		}
		c.sent.Add(int64(n)) // counted as it goes out
		buf = buf[n:]
	}
	return nil
}

// siteReader reads a site peer's stream with a deadline of progress: each
// read may take siteFrameTimeout, so a frame paced across a small budget
// is not cut for its size, while a link that stops carrying still fails.
type siteReader struct{ s network.Stream }

func (r siteReader) Read(b []byte) (int, error) {
	r.s.SetReadDeadline(time.Now().Add(siteFrameTimeout))
	return r.s.Read(b)
}

// sitePeer reports whether p is a site peer of this device.
func (s *Service) sitePeer(p peer.ID) bool {
	return s.cfg.Links != nil && s.cfg.Links.IsSitePeer(p)
}

// kickSites asks for a sync with the site peers soon: something new was
// taken in or made here.
func (s *Service) kickSites() {
	if s.cfg.Links == nil {
		return
	}
	select {
	case s.siteKicks <- struct{}{}:
	default:
	}
}

// siteLoop syncs with the connected, admitted site peers after every kick
// (KickDelay later, so a burst costs one round), until Close.
func (s *Service) siteLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.siteKicks:
		}
		select {
		case <-time.After(s.cfg.KickDelay):
		case <-s.ctx.Done():
			return
		}
		for _, p := range s.cfg.Node.Host().Network().Peers() {
			if s.sitePeer(p) && s.cfg.Node.IsAdmitted(p) {
				s.goOwned(func() { s.syncRound(p, true) })
			}
		}
	}
}

// busyTag marks tag as being moved with p by a session (until the
// returned func is called).
func (s *Service) busyTag(p peer.ID, tag []byte) func() {
	if !s.sitePeer(p) {
		return func() {}
	}
	k := string(tag)
	s.mu.Lock()
	if s.busy == nil {
		s.busy = map[peer.ID]map[string]int{}
	}
	if s.busy[p] == nil {
		s.busy[p] = map[string]int{}
	}
	s.busy[p][k]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.busy[p][k]--; s.busy[p][k] <= 0 {
			delete(s.busy[p], k)
		}
		if len(s.busy[p]) == 0 {
			delete(s.busy, p)
		}
		s.mu.Unlock()
	}
}

// skipBusy drops from common the tags another session with site peer p is
// moving now; skipped reports whether it dropped any (the session then
// does not count as a complete sync: a later one covers them).
func (s *Service) skipBusy(p peer.ID, common [][]byte) (out [][]byte, skipped bool) {
	if !s.sitePeer(p) {
		return common, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range common {
		if s.busy[p][string(t)] > 0 {
			skipped = true
			continue
		}
		out = append(out, t)
	}
	return out, skipped
}

// urgentIn reports whether frame envs goes as urgent: every envelope in
// it marked so in its signed header and within its sender's allowance
// (urgent.go; decided once per op) — an anchor forwards its colleagues'
// ops, and any of them may mark anything urgent. A frame with routine
// envelopes in it is routine: one urgent op never carries routine bulk
// at urgent priority (the fetch asks for urgent ops in a batch of their
// own: sync.go, fetch).
func (s *Service) urgentIn(envs [][]byte) bool {
	if len(envs) == 0 {
		return false
	}
	var ces []Checked
	for _, raw := range envs {
		if len(raw) > maxUrgentSize {
			return false
		}
		e, err := e2e.Decode(raw)
		if err != nil || !e.Urgent {
			return false
		}
		ces = append(ces, Checked{e, raw})
	}
	urgent := true
	for _, ce := range ces {
		if !s.urgentAllowed(ce) {
			urgent = false
		}
	}
	return urgent
}

// fromSite takes what a session with site peer p brought in: publish the
// conversation envelopes on this site's gossip, and sync with the site's
// devices soon.
func (s *Service) fromSite(tag []byte, envs []Checked) {
	for _, ce := range envs {
		if len(ce.Env.Tag) == len(tag) && string(ce.Env.Tag) == string(tag) {
			s.pub(convTopic(tag), ce.Raw)
		}
	}
	s.kick()
}

// urgentSites starts at once an urgent session with every connected,
// admitted site peer but from (where the envelope came from), for tag,
// which an urgent envelope within its sender's allowance just came in for.
// A kick waits KickDelay and a round running with a peer takes at most one
// more after it, and a session skips the tags another is moving (busy):
// an urgent op arriving while a session moves its conversation's backlog
// across the link would wait for the whole backlog. The urgent session
// (sync/7) offers only the tags noted for it and, for each, lists the
// urgent ops noted (id among them; listUrgent) instead of reconciling; the
// peer fetches those it lacks and their missing direct dependencies,
// paced ahead of the backlog's frames (fetch, urgentIn). One urgent
// session per peer runs at a time; tags noted meanwhile go in the next. Urgent ops past their senders' allowance
// never start one.
func (s *Service) urgentSites(tag []byte, id crdt.OpID, from peer.ID) {
	for _, p := range s.cfg.Node.Host().Network().Peers() {
		if p == from || !s.sitePeer(p) || !s.cfg.Node.IsAdmitted(p) {
			continue
		}
		s.mu.Lock()
		if s.urgentFor == nil {
			s.urgentFor, s.urgentRun = map[peer.ID]map[string][]crdt.OpID{}, map[peer.ID]bool{}
		}
		if s.urgentFor[p] == nil || len(s.urgentFor[p]) >= maxUrgentTags {
			s.urgentFor[p] = map[string][]crdt.OpID{}
		}
		s.urgentFor[p][string(tag)] = noteID(s.urgentFor[p][string(tag)], id)
		start := !s.urgentRun[p]
		s.urgentRun[p] = true
		s.mu.Unlock()
		if start {
			s.goOwned(func() { s.urgentRound(p) })
		}
	}
}

// noteID adds id to ids (an urgent session's list of one tag), keeping
// the newest urgentFirst.
func noteID(ids []crdt.OpID, id crdt.OpID) []crdt.OpID {
	if slices.Contains(ids, id) {
		return ids
	}
	if len(ids) == urgentFirst {
		ids = slices.Delete(ids, 0, 1)
	}
	return append(ids, id)
}

// urgentSessionTags is how many conversations one urgent session takes
// (one offer page, sync/7); more noted go in the next. urgentCtrlBytes is
// how much of an urgent session's offer, listing and want frames a side
// paces urgent (1 s of the smallest budget); the rest goes routine.
// urgentInbound is how many urgent sessions a site peer may run with us
// at once (one, and the next while we have not seen the last end).
const (
	urgentSessionTags = 64
	urgentCtrlBytes   = 8 << 10
	urgentInbound     = 2
)

// Urgent session retries: a failed one (the link dropped a frame, the peer
// ran all the sessions it admits) is tried again urgentRetries times,
// urgentRetryWait apart, with the tags noted since; then its tags' ops
// cross in the next round with p (kickSites).
const (
	urgentRetries   = 3
	urgentRetryWait = 500 * time.Millisecond
)

// urgentRound runs urgent sessions with site peer p until no tag is noted
// for one.
func (s *Service) urgentRound(p peer.ID) {
	failed := 0
	for {
		s.mu.Lock()
		tags := s.urgentFor[p]
		if len(tags) == 0 || s.ctx.Err() != nil {
			delete(s.urgentFor, p)
			delete(s.urgentRun, p)
			s.mu.Unlock()
			return
		}
		take := map[string][]crdt.OpID{}
		for t, ids := range tags {
			if len(take) == urgentSessionTags {
				break
			}
			take[t] = ids
			delete(tags, t)
		}
		s.mu.Unlock()
		_, err := s.initiateOnly(p, take)
		if err == nil {
			failed = 0
			continue
		}
		if s.ctx.Err() != nil {
			continue // ends the loop
		}
		s.log.Debug("urgent sync failed", "remote", p.String(), "err", err)
		if failed++; failed > urgentRetries {
			failed = 0
			s.kickSites() // the tags' ops cross in the next round
			continue
		}
		s.mu.Lock()
		if s.urgentFor[p] == nil {
			s.urgentFor[p] = map[string][]crdt.OpID{}
		}
		for t, ids := range take {
			// The failed session's ops, then those noted meanwhile (newer):
			// noteID keeps the newest.
			for _, id := range s.urgentFor[p][t] {
				ids = noteID(ids, id)
			}
			s.urgentFor[p][t] = ids
		}
		s.mu.Unlock()
		select {
		case <-time.After(urgentRetryWait):
		case <-s.ctx.Done():
		}
	}
}
