package mesh

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// restarted is s started again on its store (as New restores it).
func restarted(t *testing.T, s *Service, now *time.Time) *Service {
	t.Helper()
	r := carrierService(t, s.cfg.CarryQuota, now)
	r.cfg.Node, r.cfg.Store = s.cfg.Node, s.cfg.Store
	if err := r.restoreCarried(); err != nil {
		t.Fatal(err)
	}
	if err := r.restoreTokens(); err != nil {
		t.Fatal(err)
	}
	return r
}

// handAll hands every candidate for a fresh carrier, as a hand phase in
// which the carrier keeps everything, and sums the copies given.
func handAll(t *testing.T, s *Service) (given uint32) {
	t.Helper()
	p := newPeerID(t)
	c := s.candidates(p, carrierOffer, false)
	for _, x := range c {
		given += x.give
	}
	s.listed(p, c)
	s.handed(p, c, s.debit(c))
	return given
}

// TestSprayCopiesSurviveRestart: a device restarted after every handover
// — its own op's copies and a carried envelope's — hands out no more than
// the copies it had in all (L − 1 of its own op: it keeps one; n − 1 of
// a carried one handed with n), and a crash between taking copies off
// and the carrier's answer loses copies rather than doubling them.
func TestSprayCopiesSurviveRestart(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	other := make([]byte, tagLen)
	other[0] = 1
	_, own := sprayEnv(t, tag, s.cfg.Node.ID(), now, 100)
	s.noteOwn(tag, [][]byte{own}, nil, nil)
	e, raw := sprayEnv(t, other, newPeerID(t), now, 100)
	if !s.keepSpray(other, e, raw, 4, now) {
		t.Fatal("carried envelope not kept")
	}
	var total uint32
	for i := 0; i < 10; i++ {
		n := handAll(t, s)
		if n == 0 {
			break
		}
		total += n
		s = restarted(t, s, &now)
	}
	if want := uint32(DefaultCarryCopies-1) + 3; total != want {
		t.Fatalf("handed %d copies over restarts, want %d (L − 1 own, 3 of 4 carried)", total, want)
	}

	// A crash after the copies were taken off, before the answer: the
	// restarted device does not hand them again.
	s = carrierService(t, 1<<20, &now)
	_, own = sprayEnv(t, tag, s.cfg.Node.ID(), now, 100)
	s.noteOwn(tag, [][]byte{own}, nil, nil)
	c := s.candidates(newPeerID(t), carrierOffer, false)
	s.debit(c) // 4 of 8 taken off; the session dies here
	r := restarted(t, s, &now)
	got := r.candidates(peer.ID("q"), carrierOffer, false)
	if len(got) != 1 || got[0].give != 2 {
		t.Fatalf("after a crash mid-hand: %+v, want 2 copies of 4 left", got)
	}

	// Expired tokens are not restored.
	now = now.Add(2 * time.Hour)
	if r := restarted(t, s, &now); len(r.tokens) != 0 {
		t.Fatal("an expired token was restored")
	}
}
