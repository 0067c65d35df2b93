package mesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// Red team 16: the urgent session's listing (listUrgent, takeListed,
// noteID) after red team 15's fixes, read cold.

// rt16Open opens an urgent session with s from remote: its one-tag urgent
// offer (the fingerprint differs), s's answer read. The session runs in
// handleSync until ended is closed.
func rt16Open(t *testing.T, s *Service, remote peer.ID, tag []byte) (fp *rt14Peer, ended chan struct{}) {
	t.Helper()
	st, fp := rt14Pipe(remote)
	ended = make(chan struct{})
	go func() { defer close(ended); s.handleSync(st) }()
	fps := [][]byte{make([]byte, fpLen)}
	fps[0][0] = 1
	if err := fp.send(frame{Kind: fOffer, Tags: [][]byte{tag}, FPs: fps, Urgent: true}); err != nil {
		t.Fatal(err)
	}
	if f, err := fp.recv(t); err != nil || f.Kind != fOffer || len(f.Tags) != 1 {
		t.Fatalf("the urgent offer's answer: %+v, %v", f, err)
	}
	return fp, ended
}

// TestRedteam16UrgentListingFrontRun: the responder of an urgent session
// fetches the listed ops it lacks "waiting on no other session's claims":
// what another session claimed it leaves to that session, and the tag is
// done — the initiator's session ends as if the op crossed, and its
// urgentRound forgets the op (it is listed only once). The other session
// may be a malicious site anchor's urgent session listing the same op:
// every anchor an honest anchor lists an urgent op to learns its ID at
// once, and one that lists it to a third anchor first (a link faster than
// the honest one, or the honest anchor's one-at-a-time urgent session
// with that anchor still busy with the previous listing) holds the claim
// and never answers. Its claim lapses (claimTTL) or ends (an incomplete
// answer), but by then the honest listing is gone: the op crosses in the
// next routine round, behind whatever backlog the link carries. Claims
// were to bound what a staller costs to claimTTL per honest round; here
// one stall downgrades an urgent op to routine. Here M lists the urgent op
// X first and stalls; H, the honest anchor, lists X; M then answers
// nothing. X should be fetched from H in H's session (after M's claim
// ends, or without heeding it).
func TestRedteam16UrgentListingFrontRun(t *testing.T) {

	synctest.Test(t, func(t *testing.T) {
		tag := make([]byte, tagLen)
		tag[0] = 0x16
		var x crdt.OpID
		rand.Read(x[:])
		s := rt14Responder(t, &syncedLinks{}, tag)

		// M, the malicious anchor, lists X first and stalls its answer.
		m, mEnded := rt16Open(t, s, newPeerID(t), tag)
		if err := m.send(frame{Kind: fRecon, Tag: tag, IDs: [][]byte{x[:]}}); err != nil {
			t.Fatal(err)
		}
		if f, err := m.recv(t); err != nil || f.Kind != fWant || len(f.IDs) != 1 {
			t.Fatalf("M's listing: %+v, %v; want a want of X", f, err)
		}

		// H, the honest anchor, lists X while M's claim is live.
		h, hEnded := rt16Open(t, s, newPeerID(t), tag)
		if err := h.send(frame{Kind: fRecon, Tag: tag, IDs: [][]byte{x[:]}}); err != nil {
			t.Fatal(err)
		}
		hFrame := make(chan frame, 1)
		go func() {
			f, err := h.recv(t)
			if err != nil {
				f = frame{Kind: 0}
			}
			hFrame <- f
		}()
		synctest.Wait() // H's listing is taken in (or waits on M's claim)

		// M answers nothing: its claim ends.
		if err := m.send(frame{Kind: fEnvs, Tag: tag}); err != nil {
			t.Fatal(err)
		}
		if f, err := m.recv(t); err != nil || f.Kind != fWant || len(f.IDs) != 0 {
			t.Fatalf("after M's answer: %+v, %v", f, err)
		}
		m.send(frame{Kind: fDone})
		<-mEnded

		f := <-hFrame
		asked := f.Kind == fWant && slices.ContainsFunc(f.IDs, func(b []byte) bool { return crdt.OpID(b) == x })
		if asked {
			h.send(frame{Kind: fEnvs, Tag: tag})
			h.recv(t)
		}
		h.send(frame{Kind: fDone})
		h.c.Close()
		<-hEnded
		m.c.Close()
		if !asked {
			t.Fatalf("H's urgent listing of X ended with %+v: X was left to M's stalled claim, and H's session is done — X crosses routine", f)
		}
	})
}

// rt16Node is a fake node whose host's NewStream calls open.
type rt16Node struct {
	*fakeNode
	h host.Host
}

func (n rt16Node) Host() host.Host { return n.h }

type rt16Host struct {
	host.Host
	open func() (network.Stream, error)
}

func (h rt16Host) NewStream(context.Context, peer.ID, ...protocol.ID) (network.Stream, error) {
	return h.open()
}

// rt16IDs is n random op IDs.
func rt16IDs(n int) []crdt.OpID {
	out := make([]crdt.OpID, n)
	for i := range out {
		rand.Read(out[i][:])
	}
	return out
}

// TestRedteam16UrgentRetryEvictsNewest: noteID keeps "the newest
// urgentFirst" urgent ops of a tag for the next urgent session. When a
// session fails, urgentRound notes its ops again — after those noted
// while it ran, so the retried (older) ones count as the newest and the
// ones that came in meanwhile, never listed yet, are evicted: with 16
// noted for a conversation (a burst: two colleagues' allowances) and a
// failed session (a link that dropped a frame), the next urgent ops of
// that conversation are dropped from every urgent session and cross
// routine. Here the session listing a1…a16 fails while b1…b3 come in: the
// retry should list the newest 16 (a4…a16, b1…b3).
func TestRedteam16UrgentRetryEvictsNewest(t *testing.T) {

	synctest.Test(t, func(t *testing.T) {
		tag := string(make([]byte, tagLen))
		olds, news := rt16IDs(urgentFirst), rt16IDs(3)
		p := newPeerID(t)
		started := make(chan struct{}, 1)
		fail := make(chan struct{})
		n := rt16Node{fakeNode: &fakeNode{id: newPeerID(t)}}
		n.h = rt16Host{open: func() (network.Stream, error) {
			started <- struct{}{}
			<-fail
			return nil, errors.New("link dropped")
		}}
		now := time.Now()
		s := testService(t, n.fakeNode, &fakeHolder{}, &now)
		s.cfg.Node = n
		s.ctx, s.cancel = context.WithCancel(context.Background())
		defer s.cancel()
		s.urgentFor = map[peer.ID]map[string][]crdt.OpID{p: {tag: slices.Clone(olds)}}
		s.urgentRun = map[peer.ID]bool{p: true}
		done := make(chan struct{})
		go func() { defer close(done); s.urgentRound(p) }()
		<-started
		s.mu.Lock() // b1…b3 come in while the session runs (urgentSites)
		for _, id := range news {
			s.urgentFor[p][tag] = noteID(s.urgentFor[p][tag], id)
		}
		s.mu.Unlock()
		close(fail)
		synctest.Wait() // the failed session's ops noted again; the retry waits
		s.mu.Lock()
		got := slices.Clone(s.urgentFor[p][tag])
		s.mu.Unlock()
		s.cancel()
		<-done
		var lost int
		for _, id := range news {
			if !slices.Contains(got, id) {
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("the retry lists %d ops: %d of the 3 urgent ops that came in during the failed session are dropped (the older retried ones kept)", len(got), lost)
		}
	})
}

// rt16Holder holds the IDs held of every tag (sorted), nothing else.
type rt16Holder struct {
	fakeHolder
	held []crdt.OpID
}

func (h *rt16Holder) IDs([]byte) []crdt.OpID { return h.held }

// rt16Op is an op of k in tag with deps, urgent or not, encoded.
func rt16Op(t *testing.T, k *identity.DeviceKey, tag []byte, urgent bool, deps ...crdt.OpID) (crdt.OpID, []byte) {
	t.Helper()
	e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: tag, Sender: []byte(k.PeerID()),
		Epoch: make([]byte, 32), Body: make([]byte, 300), Wall: time.Now().Add(-time.Minute).UnixMilli(), Urgent: urgent}
	for _, d := range deps {
		e.Deps = append(e.Deps, slices.Clone(d[:]))
	}
	if err := e.Sign(k.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return crdt.OpID(e2e.ID(raw)), raw
}

// TestRedteam16UrgentDepsCapSpentOnHeld: the urgent session's second batch
// is "their missing direct dependencies", at most siteBatch — but
// directDeps cuts at siteBatch before what is held is left out (take does
// that after). An urgent op listed first whose dependencies are sixteen
// ops the responder holds (a colleague's op naming many heads — any
// member, within its allowance, may write one; or a merge after a
// partition) fills the cut, and the one missing parent of an honest
// urgent reply in the same listing is not fetched: that reply crosses
// first for nothing (the far DAG buffers it until the parent comes
// routine, behind the backlog). Here the listing is the colleague's op
// (sixteen held deps), then the honest reply whose routine parent we
// lack: the urgent session should ask for the parent too.
func TestRedteam16UrgentDepsCapSpentOnHeld(t *testing.T) {
	tag := make([]byte, tagLen)
	tag[0] = 0x17
	mk, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	hk, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	held := rt16IDs(siteBatch)
	slices.SortFunc(held, crdt.OpID.Compare)
	envs := map[crdt.OpID][]byte{}
	crowd, raw := rt16Op(t, mk, tag, true, held...)
	envs[crowd] = raw
	parent, raw := rt16Op(t, hk, tag, false)
	envs[parent] = raw
	reply, raw := rt16Op(t, hk, tag, true, parent)
	envs[reply] = raw

	s := rt15Service(t, mk.PeerID(), hk.PeerID())
	s.h = &rt16Holder{held: held}
	asked, wants := rt15Fetch(t, s, tag, envs, []crdt.OpID{crowd, reply}, func(crdt.OpID) bool { return true })
	t.Logf("asked for %d envelopes in %d want frames", asked, wants)
	if asked != 3 {
		t.Fatalf("the urgent session asked for %d envelopes: the two listed, without the honest reply's one missing parent", asked)
	}
}

// TestRedteam16UrgentDepsFetched: with no crowding op, the reply's missing
// parent is fetched (passes).
func TestRedteam16UrgentDepsFetched(t *testing.T) {
	tag := make([]byte, tagLen)
	tag[0] = 0x18
	hk, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	envs := map[crdt.OpID][]byte{}
	parent, raw := rt16Op(t, hk, tag, false)
	envs[parent] = raw
	reply, raw := rt16Op(t, hk, tag, true, parent)
	envs[reply] = raw
	s := rt15Service(t, hk.PeerID())
	if asked, _ := rt15Fetch(t, s, tag, envs, []crdt.OpID{reply}, func(crdt.OpID) bool { return true }); asked != 2 {
		t.Fatalf("asked for %d envelopes; want the reply and its parent", asked)
	}
}

// lanLinks: site links where no peer is a site peer (the peer is a LAN
// colleague).
type lanLinks struct{ syncedLinks }

func (l *lanLinks) IsSitePeer(peer.ID) bool { return false }

// TestRedteam16UrgentSessionFromNonSitePeer: an urgent session is one an
// anchor opens with a site peer (urgentSites), yet respond runs one for
// any admitted peer that sets the offer's urgent key: a colleague's device
// on the LAN (or any peer reaching the anchor) gets the session's
// exemptions — its listings fetched without waiting on other sessions'
// claims, no tag marked busy — and, with the front-run above, any device
// that sees an urgent op on its site's gossip can list it to a far anchor
// before the site's own anchor does, and stall. The responder should
// refuse an urgent offer from a peer that is not a site peer.
func TestRedteam16UrgentSessionFromNonSitePeer(t *testing.T) {

	tag := make([]byte, tagLen)
	tag[0] = 0x19
	s := rt14Responder(t, &lanLinks{}, tag)
	st, fp := rt14Pipe(newPeerID(t))
	ended := make(chan struct{})
	go func() { defer close(ended); s.handleSync(st) }()
	fps := [][]byte{make([]byte, fpLen)}
	fps[0][0] = 1
	if err := fp.send(frame{Kind: fOffer, Tags: [][]byte{tag}, FPs: fps, Urgent: true}); err != nil {
		t.Fatal(err)
	}
	f, err := fp.recv(t)
	fp.c.Close()
	<-ended
	if err == nil {
		t.Fatalf("a LAN peer's urgent offer was answered (%d tags): the session runs with the urgent session's exemptions", len(f.Tags))
	}
}

// rt16Net is a network with no peers connected.
type rt16Net struct{ network.Network }

func (rt16Net) Peers() []peer.ID { return nil }

type rt16PeersHost struct{ host.Host }

func (rt16PeersHost) Network() network.Network { return rt16Net{} }

// TestRedteam16StaleUrgentListingSpendsAllowance: a site anchor picks
// exactly which ops the far anchor fetches in an urgent session — any ID
// it lists that the far anchor lacks, urgent or not, however old. An old
// urgent op of a colleague (one the far anchor let expire, or never got:
// the backlog after a link outage) is charged to that colleague's
// allowance at the far anchor when it arrives (keep → the ledger's
// verdict, kept only for the last 4,096 ops), as if it were new: listing
// eight of a colleague's day-old urgent ops empties its bucket there, and
// one more every urgentRefill keeps it empty, so the colleague's next real
// urgent op is routine at that anchor (no urgent session onward, paced
// behind the backlog). The same happens without malice when an anchor
// catches up on a backlog with a colleague's urgent ops in it. The
// colleague's fresh urgent op should still be within its allowance.
func TestRedteam16StaleUrgentListingSpendsAllowance(t *testing.T) {

	tag := make([]byte, tagLen)
	tag[0] = 0x1a
	hk, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	envs := map[crdt.OpID][]byte{}
	var old []crdt.OpID
	for i := range urgentBurst {
		e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: tag, Sender: []byte(hk.PeerID()),
			Epoch: make([]byte, 32), Body: make([]byte, 300), Wall: now.Add(-24*time.Hour + time.Duration(i)*time.Second).UnixMilli(), Urgent: true}
		if err := e.Sign(hk.Identity); err != nil {
			t.Fatal(err)
		}
		raw, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := crdt.OpID(e2e.ID(raw))
		envs[id] = raw
		old = append(old, id)
	}
	fresh, _ := rt16Op(t, hk, tag, true)

	n := rt16Quiet{rt16Node{fakeNode: &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{hk.PeerID(): nil}}, h: rt16PeersHost{}}}
	s := testService(t, n.fakeNode, &fakeHolder{}, &now)
	s.cfg.Node = n
	s.cfg.Links = &lanLinks{} // a site link configured (fromSite, gossip, left out here)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	s.carried[hex.EncodeToString(tag)] = &carrier{tag: tag, ops: map[crdt.OpID]held{}, seen: now}

	// The site anchor's listing of the old urgent ops, as respond hands it
	// to takeListed in an urgent session.
	far := newPeerID(t)
	st, m := rt14Pipe(far)
	defer st.Close()
	c := rt14Conn(s, st, far, false, true)
	listing := frame{Kind: fRecon, Tag: tag}
	for _, id := range old {
		listing.IDs = append(listing.IDs, slices.Clone(id[:]))
	}
	served := make(chan int, 1)
	go func() {
		_, got, err := m.serveWants(t, tag, envs)
		if err != nil {
			t.Errorf("far side: %v", err)
		}
		served <- got
	}()
	if err := s.takeListed(c, far, listing); err != nil {
		t.Fatal(err)
	}
	if got := <-served; got != len(old) {
		t.Fatalf("served %d of the %d listed", got, len(old))
	}
	s.mu.Lock()
	kept := len(s.carried[hex.EncodeToString(tag)].ops)
	s.mu.Unlock()
	if kept != len(old) {
		t.Fatalf("the anchor kept %d of the %d day-old urgent ops", kept, len(old))
	}
	if !s.urgency.op(fresh, hk.PeerID(), now) {
		t.Fatalf("after %d day-old urgent ops listed by a site anchor, the colleague's fresh urgent op is past its allowance: routine here", len(old))
	}
}

// rt16Quiet is rt16Node admitting no one in reach (no acknowledgement of
// storage is sent), while its staff are known.
type rt16Quiet struct{ rt16Node }

func (rt16Quiet) IsAdmitted(peer.ID) bool { return false }
