package mesh

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestRedteam10RelayedUrgentNotUrgentOnSiteLink: a site link is anchor to
// anchor, and an anchor forwards its colleagues' ops, not its own. The
// pacer's "urgent first" once looked only at ops this device made and
// marked urgent, so a colleague's urgent message waited behind any
// backlog on the link. Since sync/6 it is the envelope's signed header
// that says so (urgentIn).
func TestRedteam10RelayedUrgentNotUrgentOnSiteLink(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	e, raw := sprayEnvUrgent(t, tag, newPeerID(t), now, 1000)
	if !s.keepSpray(tag, e, raw, 2, now) {
		t.Fatal("urgent envelope not kept")
	}
	if !s.urgentIn([][]byte{raw}) {
		t.Fatal("an envelope this device carries as urgent is paced as non-urgent on a site link")
	}
}

// budgetLinks is a site link paced at rate bytes per second, one frame
// chunk after the other (the node's pacer, without its queue order).
type budgetLinks struct {
	mu   sync.Mutex
	rate float64
}

func (l *budgetLinks) IsSitePeer(peer.ID) bool { return true }
func (l *budgetLinks) PaceSite(ctx context.Context, _ peer.ID, size int, _ bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-time.After(time.Duration(float64(size) / l.rate * float64(time.Second))):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (l *budgetLinks) SiteReceived(peer.ID, int) {}
func (l *budgetLinks) SiteSynced(peer.ID)        {}

// sinkStream takes every write.
type sinkStream struct{ network.Stream }

func (sinkStream) Write(b []byte) (int, error)      { return len(b), nil }
func (sinkStream) SetWriteDeadline(time.Time) error { return nil }

// TestRedteam10SiteFrameNeverCrosses: a fetch from a site peer asks for
// siteBatch (16) envelopes whatever their size, and the answer must cross
// within siteFrameTimeout (60 s). A colleague who posts envelopes of a few
// hundred KiB (e2e.MaxEnvelope is 1 MiB) makes the frame bigger than 60 s
// of the link's budget: at 64 KiB/s (the budget TestSiteLinkState uses;
// at the default 256 KiB/s, three such frames sharing the link do the
// same) the frame fails after a minute of the link's budget, every
// session again, and the conversation never crosses.
func TestRedteam10SiteFrameNeverCrosses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := &Service{cfg: Config{Links: &budgetLinks{rate: 64 << 10}}, ctx: ctx, cancel: cancel}
		c := &conn{svc: s, p: "site", site: true, s: sinkStream{}, sent: &s.sent}
		envs := make([][]byte, siteBatch)
		for i := range envs {
			envs[i] = make([]byte, 300<<10) // 300 KiB each: 4.7 MiB in all
		}
		start := time.Now()
		err := c.send(frame{Kind: fEnvs, Tag: make([]byte, tagLen), Envs: envs})
		if err != nil {
			t.Fatalf("a %d-envelope answer to a site peer's fetch failed after %v (%v): it can never cross the link", siteBatch, time.Since(start), err)
		}
	})
}

// KickSitesRedteam10 is what every new envelope an anchor takes in does
// (keep, deliver): ask for a sync with the site peers soon.
func (s *Service) KickSitesRedteam10() { s.kickSites() }
