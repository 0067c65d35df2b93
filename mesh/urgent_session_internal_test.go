package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/crdt"
)

// The urgent session (sync/7) as the red team of its first version found
// it: it offered every tag of the anchor, paced its offer, recon and want
// frames as routine behind the backlog it was to overtake, waited on the
// backlog session's claims, and a site peer running its round and the
// next could not open one. Each test below fails on that version.

// TestUrgentOfferFrameRules: an urgent offer is one page of at most
// urgentSessionTags tags, and only an offer says urgent.
func TestUrgentOfferFrameRules(t *testing.T) {
	tags := func(n int) ([][]byte, [][]byte) {
		var ts, fps [][]byte
		for i := range n {
			tg := make([]byte, tagLen)
			tg[0], tg[1] = byte(i>>8), byte(i)
			ts, fps = append(ts, tg), append(fps, make([]byte, fpLen))
		}
		return ts, fps
	}
	ok, okFPs := tags(urgentSessionTags)
	big, bigFPs := tags(urgentSessionTags + 1)
	for _, tc := range []struct {
		name string
		f    frame
		good bool
	}{
		{"an urgent offer of urgentSessionTags tags", frame{Kind: fOffer, Tags: ok, FPs: okFPs, Urgent: true}, true},
		{"an urgent offer of one tag more", frame{Kind: fOffer, Tags: big, FPs: bigFPs, Urgent: true}, false},
		{"an urgent offer with another page to follow", frame{Kind: fOffer, Tags: ok, FPs: okFPs, Urgent: true, More: true}, false},
		{"an urgent recon frame", frame{Kind: fRecon, Tag: ok[0], Msg: []byte{1}, Urgent: true}, false},
		{"an urgent want", frame{Kind: fWant, Tag: ok[0], Urgent: true}, false},
	} {
		b, err := encodeFrame(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeFrame(b); (err == nil) != tc.good {
			t.Errorf("%s: decode error %v", tc.name, err)
		}
	}
}

// pacedLinks records, for each frame paced to a site peer, whether it went
// as urgent.
type pacedLinks struct {
	mu     sync.Mutex
	urgent []bool
}

func (l *pacedLinks) IsSitePeer(peer.ID) bool { return true }
func (l *pacedLinks) PaceSite(_ context.Context, _ peer.ID, _ int, urgent bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.urgent = append(l.urgent, urgent)
	return nil
}
func (l *pacedLinks) SiteReceived(peer.ID, int) {}
func (l *pacedLinks) SiteSynced(peer.ID)        {}

// TestUrgentSessionControlFramesPacedUrgent: in an urgent session every
// offer, recon, want and done frame to a site peer goes as urgent, while
// envelopes still go as urgent only when every one of them is (urgentIn):
// an urgent session carries no routine bulk at urgent priority. In a
// routine session nothing goes as urgent.
func TestUrgentSessionControlFramesPacedUrgent(t *testing.T) {
	tag := make([]byte, tagLen)
	routineEnv := envelopeBy(t, newPeerID(t))
	for _, urgent := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		l := &pacedLinks{}
		s := &Service{cfg: Config{Links: l}, ctx: ctx, cancel: cancel}
		c := &conn{svc: s, p: "site", site: true, urgent: urgent, s: sinkStream{}, sent: &s.sent}
		ctrl := []frame{
			{Kind: fOffer, Tags: [][]byte{tag}, FPs: [][]byte{make([]byte, fpLen)}, Urgent: urgent},
			{Kind: fRecon, Tag: tag, Msg: []byte{1}},
			{Kind: fWant, Tag: tag, IDs: [][]byte{make([]byte, 32)}},
			{Kind: fDone},
		}
		for _, f := range ctrl {
			if err := c.send(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.send(frame{Kind: fEnvs, Tag: tag, Envs: [][]byte{routineEnv}}); err != nil {
			t.Fatal(err)
		}
		cancel()
		for i, u := range l.urgent[:len(ctrl)] {
			if u != urgent {
				t.Errorf("urgent session %v: control frame %d paced urgent=%v", urgent, i, u)
			}
		}
		if l.urgent[len(l.urgent)-1] {
			t.Errorf("urgent session %v: routine envelopes paced urgent", urgent)
		}
	}
}

// TestSitePeerSessionLimit: a site peer may run its round, the next one
// we have not seen the last of end, and an urgent session beside them;
// another peer runs maxInbound.
func TestSitePeerSessionLimit(t *testing.T) {
	site, other := newPeerID(t), newPeerID(t)
	s := &Service{cfg: Config{Links: &pacedLinks{}}, log: slog.New(slog.DiscardHandler)}
	for i := range maxInbound + 2 {
		if !s.admitSession(site) {
			t.Fatalf("site peer session %d refused", i+1)
		}
	}
	if s.admitSession(site) {
		t.Fatalf("a site peer ran %d sessions at once", maxInbound+3)
	}
	s.cfg.Links = nil
	for i := range maxInbound {
		if !s.admitSession(other) {
			t.Fatalf("session %d refused", i+1)
		}
	}
	if s.admitSession(other) {
		t.Fatalf("a peer ran %d sessions at once", maxInbound+1)
	}
}

// TestUrgentSessionWaitsOnNoClaim: an urgent session's fetch takes what no
// other session claimed at once and leaves the rest to it; a routine fetch
// waits for the other's claims (up to maxClaimWait) first, and takes them
// over when they lapse.
func TestUrgentSessionWaitsOnNoClaim(t *testing.T) {
	for _, urgent := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			n := &fakeNode{id: newPeerID(t)}
			now := time.Now()
			s := testService(t, n, &fakeHolder{}, &now)
			s.ctx, s.cancel = context.WithCancel(context.Background())
			defer s.cancel()
			tag := make([]byte, tagLen)
			ids := make([]crdt.OpID, 4)
			for i := range ids {
				rand.Read(ids[i][:])
			}
			other := s.fetches.open(tag, time.Now())
			s.fetches.take(other, ids[:2], nil, time.Now())
			start := time.Now()
			c, mine := s.claimNeed("site", tag, ids, nil, urgent)
			defer s.fetches.release(c)
			waited := time.Since(start)
			if urgent && !slices.Equal(mine, ids[2:]) {
				t.Fatalf("urgent %v: claimed %d of the 4 IDs, 2 of them another session's", urgent, len(mine))
			}
			if urgent && waited != 0 {
				t.Fatalf("an urgent session waited %v on another session's claims", waited)
			}
			if !urgent && waited < maxClaimWait {
				t.Fatalf("a routine fetch waited %v on another session's claims, not %v", waited, maxClaimWait)
			}
		})
	}
}

// TestUrgentOfferAfterPageRefused: an urgent flag on the second page of an
// offer is refused (an urgent offer is one page).
func TestUrgentOfferAfterPageRefused(t *testing.T) {
	page := make([][]byte, offerPage)
	fps := make([][]byte, offerPage)
	for i := range page {
		page[i] = make([]byte, tagLen)
		page[i][0], page[i][1] = byte(i>>8), byte(i)
		fps[i] = make([]byte, fpLen)
	}
	last := make([]byte, tagLen)
	last[0] = 0xff
	var wire []byte
	for _, f := range []frame{
		{Kind: fOffer, Tags: page, FPs: fps, More: true},
		{Kind: fOffer, Tags: [][]byte{last}, FPs: [][]byte{make([]byte, fpLen)}, Urgent: true},
	} {
		b, err := encodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		wire = append(binary.AppendUvarint(wire, uint64(len(b))), b...)
	}
	s := &Service{}
	st := &memStream{r: bytes.NewReader(wire)}
	c := &conn{svc: s, p: "peer", s: st, r: msgio.NewVarintReaderSize(st, maxFrame), sent: &s.sent}
	if _, err := c.recvOffer(); err == nil {
		t.Fatal("an offer made urgent on its second page was taken")
	}
}

// memStream reads what a test wrote into it.
type memStream struct {
	network.Stream
	r *bytes.Reader
}

func (m *memStream) Read(b []byte) (int, error)      { return m.r.Read(b) }
func (m *memStream) SetReadDeadline(time.Time) error { return nil }
