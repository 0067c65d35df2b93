package mesh

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/crdt"
)

// Red team 14: the urgent session (sync/7), read cold.

// pipeStream is one end of an in-memory stream (net.Pipe) as a libp2p
// stream, from remote.
type pipeStream struct {
	network.Stream
	c      net.Conn
	remote peer.ID
}

func (p *pipeStream) Read(b []byte) (int, error)         { return p.c.Read(b) }
func (p *pipeStream) Write(b []byte) (int, error)        { return p.c.Write(b) }
func (p *pipeStream) SetDeadline(t time.Time) error      { return p.c.SetDeadline(t) }
func (p *pipeStream) SetReadDeadline(t time.Time) error  { return p.c.SetReadDeadline(t) }
func (p *pipeStream) SetWriteDeadline(t time.Time) error { return p.c.SetWriteDeadline(t) }
func (p *pipeStream) Close() error                       { return p.c.Close() }
func (p *pipeStream) Reset() error                       { return p.c.Close() }
func (p *pipeStream) Conn() network.Conn                 { return pipeConn{remote: p.remote} }

type pipeConn struct {
	network.Conn
	remote peer.ID
}

func (c pipeConn) RemotePeer() peer.ID { return c.remote }

// rt14Peer is the far end of a pipe: it reads and writes whole frames.
type rt14Peer struct {
	r msgio.ReadCloser
	w msgio.WriteCloser
	c net.Conn
}

func (p *rt14Peer) recv(t *testing.T) (frame, error) {
	b, err := p.r.ReadMsg()
	if err != nil {
		return frame{}, err
	}
	defer p.r.ReleaseMsg(b)
	return decodeFrame(b)
}

func (p *rt14Peer) send(f frame) error {
	b, err := encodeFrame(f)
	if err != nil {
		return err
	}
	return p.w.WriteMsg(b)
}

// rt14Pipe is a stream from remote (as seen by our side) and the peer at
// its far end.
func rt14Pipe(remote peer.ID) (*pipeStream, *rt14Peer) {
	a, b := net.Pipe()
	return &pipeStream{c: a, remote: remote}, &rt14Peer{r: msgio.NewVarintReaderSize(b, maxFrame), w: msgio.NewVarintWriter(b), c: b}
}

// rt14Conn is our side's conn over st to p.
func rt14Conn(s *Service, st *pipeStream, p peer.ID, site, urgent bool) *conn {
	return &conn{svc: s, p: p, site: site, urgent: urgent, s: st, r: msgio.NewVarintReaderSize(st, maxFrame), sent: &s.sent}
}

// rt14Chain is n routine ops of colleague in tag, each depending on the
// one before, then one small urgent op depending on the last (what a
// colleague who has read the conversation's backlog writes urgent): the
// envelopes by ID, and the IDs oldest first, the urgent one last.
func rt14Chain(t *testing.T, tag []byte, n int) (envs map[crdt.OpID][]byte, ids []crdt.OpID, colleague peer.ID) {
	t.Helper()
	envs, ids, _, colleague = rt15Chain(t, tag, n+1, func(i int) bool { return i == n })
	return envs, ids, colleague
}

// serveWants answers the wants of one tag's fetch from envs until the
// empty want, and reports how many want frames and IDs it was asked.
func (p *rt14Peer) serveWants(t *testing.T, tag []byte, envs map[crdt.OpID][]byte) (wants, ids int, err error) {
	for {
		f, err := p.recv(t)
		if err != nil {
			return wants, ids, err
		}
		if f.Kind != fWant {
			continue
		}
		if len(f.IDs) == 0 {
			return wants, ids, nil
		}
		wants++
		out := frame{Kind: fEnvs, Tag: tag}
		for _, b := range f.IDs {
			ids++
			out.Envs = append(out.Envs, envs[crdt.OpID(b)])
		}
		if err := p.send(out); err != nil {
			return wants, ids, err
		}
	}
}

// TestRedteam14UrgentSessionMovesWholeAncestry: an urgent session fetches
// "only urgent ops and their ancestors" — and in a conversation an op's
// ancestors are the whole chain before it. A colleague who has read a
// backlog of 200 routine messages writes one urgent message: the urgent
// session (which marks the tag busy, so the routine rounds skip it) asks
// for all 201 envelopes, one want frame per op (an ancestor is learnt only
// when its child has come: one round trip each across the WAN, nothing
// pipelined), its envelopes paced routine. Meanwhile the peer's urgent
// round runs no other session: urgent ops noted for other conversations
// wait for this backlog to cross at one op per round trip (and if it
// outlasts SessionTimeout the session fails and is retried, thrice).
func TestRedteam14UrgentSessionMovesWholeAncestry(t *testing.T) {
	const backlog = 200
	tag := make([]byte, tagLen)
	tag[0] = 14
	envs, ids, colleague := rt14Chain(t, tag, backlog)
	urgentID := ids[backlog]
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{colleague: nil}}
	now := time.Now()
	s := testService(t, n, &fakeHolder{}, &now)
	s.cfg.Anchor = false
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	far := newPeerID(t)
	st, fp := rt14Pipe(far)
	defer st.Close()
	c := rt14Conn(s, st, far, false, true)
	// Need as the session lists it: the urgent op first, then the chain
	// in causal order.
	need := append([]crdt.OpID{urgentID}, ids[:backlog]...)
	type served struct{ wants, ids int }
	done := make(chan served, 1)
	go func() {
		w, i, err := fp.serveWants(t, tag, envs)
		if err != nil {
			t.Errorf("far side: %v", err)
		}
		done <- served{w, i}
	}()
	if _, err := s.fetch(c, far, tag, need, func(id crdt.OpID) bool { return id == urgentID }); err != nil {
		t.Fatal(err)
	}
	got := <-done
	t.Logf("the urgent session asked for %d envelopes in %d want frames", got.ids, got.wants)
	if got.ids > urgentFirst+siteBatch {
		t.Fatalf("an urgent session for one urgent op asked for %d envelopes (%d want frames, one round trip each) — the conversation's whole backlog", got.ids, got.wants)
	}
}

// syncedLinks: every peer a site peer, paced at once; SiteSynced counted.
type syncedLinks struct {
	mu     sync.Mutex
	synced int
}

func (l *syncedLinks) IsSitePeer(peer.ID) bool                            { return true }
func (l *syncedLinks) PaceSite(context.Context, peer.ID, int, bool) error { return nil }
func (l *syncedLinks) SiteReceived(peer.ID, int)                          {}
func (l *syncedLinks) SiteSynced(peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.synced++
}

// rt14Responder is a service (no anchor) holding tags, with site links l.
func rt14Responder(t *testing.T, l Links, tags ...[]byte) *Service {
	t.Helper()
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{}}
	now := time.Now()
	s := testService(t, n, &fakeHolder{tags: tags}, &now)
	s.cfg.Anchor = false
	s.cfg.Links = l
	s.cfg.SessionTimeout = time.Minute
	s.ctx, s.cancel = context.WithCancel(context.Background())
	t.Cleanup(s.cancel)
	return s
}

// rt14Tags is n ascending tags.
func rt14Tags(n int) [][]byte {
	var out [][]byte
	for i := range n {
		tg := make([]byte, tagLen)
		tg[0], tg[1] = 0x10, byte(i)
		out = append(out, tg)
	}
	return out
}

// siteSession runs one session a site peer opens with s: its offer of
// tags (urgent or not), our offer back, done; it reports how many complete
// sessions with the peer s recorded (Links.SiteSynced) after it.
func rt14SiteSession(t *testing.T, s *Service, l *syncedLinks, urgent bool, tags [][]byte) int {
	t.Helper()
	site := newPeerID(t)
	st, fp := rt14Pipe(site)
	ended := make(chan struct{})
	go func() { defer close(ended); s.handleSync(st) }()
	fps := make([][]byte, len(tags))
	for i := range fps {
		fps[i] = Fingerprint(nil)
	}
	if err := fp.send(frame{Kind: fOffer, Tags: tags, FPs: fps, Urgent: urgent}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fp.recv(t)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == fOffer && !f.More {
			break
		}
	}
	if err := fp.send(frame{Kind: fDone}); err != nil {
		t.Fatal(err)
	}
	<-ended
	fp.c.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced
}

// TestRedteam14UrgentSessionRecordsCompleteSync: SiteSynced "records a
// complete session with p" — the site link's last_sync (GET
// /api/v1/sites), what an operator reads to see the link keeping up. The
// initiator of an urgent session does not record it (urgentRound), but
// the responder does: a session over one conversation of the hundreds
// the anchors share, fetching only its urgent ops, counts as a complete
// sync. While routine rounds fail (a backlog that outlasts SessionTimeout,
// a link too slow for it), every urgent op keeps last_sync fresh.
func TestRedteam14UrgentSessionRecordsCompleteSync(t *testing.T) {
	tags := rt14Tags(8)
	l := &syncedLinks{}
	s := rt14Responder(t, l, tags...)
	if n := rt14SiteSession(t, s, l, true, tags[:1]); n != 0 {
		t.Fatalf("an urgent session over 1 of %d shared conversations recorded a complete sync with the site peer", len(tags))
	}
}

// TestRedteam14RoutineSessionRecordsCompleteSync: a routine session does
// (the property the test above holds urgent sessions to, the other way).
func TestRedteam14RoutineSessionRecordsCompleteSync(t *testing.T) {
	tags := rt14Tags(8)
	l := &syncedLinks{}
	s := rt14Responder(t, l, tags...)
	if n := rt14SiteSession(t, s, l, false, tags); n != 1 {
		t.Fatalf("a routine session recorded %d complete syncs", n)
	}
}

// TestRedteam14SitePeerRoutineSessionsUseUrgentSlots: a site peer may now
// run maxInbound+2 sessions with us, for "its urgent session beside its
// round, and the next one while we have not seen the last end" — but the
// slots are admitted before the offer says what the session is, so a
// site peer (a malicious site anchor, or one whose rounds pile up) runs
// four routine sessions at once: each may pin up to maxNeed IDs with
// their claims (~16 MiB) for syncTimeout, twice what maxInbound bounds.
// Here four site-peer streams each send a routine offer's first two
// pages: only maxInbound of them get past the first (which says what
// the session is).
func TestRedteam14SitePeerRoutineSessionsUseUrgentSlots(t *testing.T) {
	l := &syncedLinks{}
	s := rt14Responder(t, l)
	site := newPeerID(t)
	page, fps := make([][]byte, offerPage), make([][]byte, offerPage)
	for i := range page {
		page[i] = make([]byte, tagLen)
		page[i][0], page[i][1] = byte(i>>8), byte(i)
		fps[i] = make([]byte, fpLen)
	}
	page2 := make([][]byte, offerPage)
	for i := range page2 {
		page2[i] = make([]byte, tagLen)
		page2[i][0], page2[i][1] = 0x80|byte(i>>8), byte(i)
	}
	var wg sync.WaitGroup
	var peers []*rt14Peer
	admitted := 0
	for range maxInbound + 2 {
		st, fp := rt14Pipe(site)
		peers = append(peers, fp)
		wg.Add(1)
		go func() { defer wg.Done(); s.handleSync(st) }()
		// net.Pipe: a page is written only as the responder reads it. The
		// first page of any session is read (it says what the session
		// is); the second only in a session classified routine within
		// the limit.
		if err := fp.send(frame{Kind: fOffer, Tags: page, FPs: fps, More: true}); err != nil {
			continue
		}
		if err := fp.send(frame{Kind: fOffer, Tags: page2, FPs: fps, More: true}); err == nil {
			admitted++
		}
	}
	for _, fp := range peers {
		fp.c.Close()
	}
	wg.Wait()
	if admitted > maxInbound {
		t.Fatalf("a site peer ran %d routine sessions with us at once (maxInbound %d)", admitted, maxInbound)
	}
}

// TestRedteam14UrgentSessionPacesBacklogReconUrgent: an urgent session
// reconciles the whole of each of its conversations, and the recon frames
// list the IDs and keys of whatever differs: the routine backlog (for a
// backlog of 5,000 ops, about 200 KiB). Paced urgent, they would put 25 s
// of an 8 KiB/s link ahead of every routine frame for one 300-byte urgent
// op, charged to no allowance. Only the first urgentCtrlBytes of an urgent
// session's control frames go urgent; the rest routine.
func TestRedteam14UrgentSessionPacesBacklogReconUrgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &pacedLinks{}
	s := &Service{cfg: Config{Links: l}, ctx: ctx, cancel: cancel}
	c := &conn{svc: s, p: "site", site: true, urgent: true, s: sinkStream{}, sent: &s.sent}
	tag := make([]byte, tagLen)
	msg := make([]byte, 2<<10)
	sent := 0
	for sent < 200<<10 {
		b, err := encodeFrame(frame{Kind: fRecon, Tag: tag, Msg: msg})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.send(frame{Kind: fRecon, Tag: tag, Msg: msg}); err != nil {
			t.Fatal(err)
		}
		sent += len(b)
	}
	if c.urgentCtrl > urgentCtrlBytes {
		t.Fatalf("an urgent session paced %d B of control frames urgent (limit %d)", c.urgentCtrl, urgentCtrlBytes)
	}
	urgent, routine := 0, 0
	for _, u := range l.urgent {
		if u {
			urgent++
		} else {
			routine++
		}
	}
	if urgent == 0 || routine == 0 {
		t.Fatalf("%d B of recon: %d chunks urgent, %d routine; want the first urgent and the rest routine", sent, urgent, routine)
	}
}
