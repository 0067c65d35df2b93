package mesh

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// Red team 15: the sync/7 urgent session after red team 14's fixes, read
// cold.

// rt15Chain is n ops of one sender in tag, each depending on the one
// before; urgent(i) says which carry the urgency bit in their signed
// header. It returns the envelopes by ID, the IDs oldest first, their
// sync keys (what a peer lists in recon) and the sender.
func rt15Chain(t *testing.T, tag []byte, n int, urgent func(i int) bool) (envs map[crdt.OpID][]byte, ids []crdt.OpID, keys map[crdt.OpID]uint64, sender peer.ID) {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	sender = k.PeerID()
	envs, keys = map[crdt.OpID][]byte{}, map[crdt.OpID]uint64{}
	wall := time.Now().Add(-time.Hour)
	var prev *crdt.OpID
	for i := range n {
		e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: tag, Sender: []byte(sender),
			Epoch: make([]byte, 32), Body: make([]byte, 300), Wall: wall.Add(time.Duration(i) * time.Second).UnixMilli(),
			Urgent: urgent(i)}
		if prev != nil {
			e.Deps = [][]byte{append([]byte(nil), prev[:]...)}
		}
		if err := e.Sign(k.Identity); err != nil {
			t.Fatal(err)
		}
		raw, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := crdt.OpID(e2e.ID(raw))
		envs[id], keys[id] = raw, e.SyncKey()
		ids = append(ids, id)
		prev = &id
	}
	return envs, ids, keys, sender
}

// rt15Reconcile runs a recon of an empty side against a peer holding ids
// with keys, in memory, and returns the empty side's session: its Need
// and Urgent, as reconcileTag hands them to fetch.
func rt15Reconcile(t *testing.T, ids []crdt.OpID, keys map[crdt.OpID]uint64) *Session {
	t.Helper()
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, crdt.OpID.Compare)
	ks := make([]uint64, len(sorted))
	for i, id := range sorted {
		ks[i] = keys[id]
	}
	far := NewKeyedSession(sorted, ks)
	mine := NewKeyedSession(nil, nil)
	m, err := mine.Initiate()
	if err != nil {
		t.Fatal(err)
	}
	for m != nil {
		r, err := far.Reply(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(r) == 0 {
			break
		}
		if m, err = mine.Reply(r); err != nil {
			t.Fatal(err)
		}
	}
	return mine
}

// rt15Fetch runs s.fetch in an urgent session (c.urgent) from a far side
// serving envs, and reports how many IDs and want frames it asked for.
func rt15Fetch(t *testing.T, s *Service, tag []byte, envs map[crdt.OpID][]byte, need []crdt.OpID, urgent func(crdt.OpID) bool) (ids, wants int) {
	t.Helper()
	far := newPeerID(t)
	st, fp := rt14Pipe(far)
	defer st.Close()
	c := rt14Conn(s, st, far, false, true)
	type served struct{ wants, ids int }
	done := make(chan served, 1)
	go func() {
		w, i, err := fp.serveWants(t, tag, envs)
		if err != nil {
			t.Errorf("far side: %v", err)
		}
		done <- served{w, i}
	}()
	if _, err := s.fetch(c, far, tag, need, urgent); err != nil {
		t.Fatal(err)
	}
	got := <-done
	return got.ids, got.wants
}

// rt15Service is a member device (not an anchor) that knows sender.
func rt15Service(t *testing.T, sender peer.ID) *Service {
	t.Helper()
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{sender: nil}}
	now := time.Now()
	s := testService(t, n, &fakeHolder{}, &now)
	s.cfg.Anchor = false
	s.ctx, s.cancel = context.WithCancel(context.Background())
	t.Cleanup(s.cancel)
	return s
}

// TestRedteam15UrgentSessionFetchesEveryOpMarkedUrgent: red team 14's
// fix has an urgent session fetch "only urgent ops" — but which ops are
// urgent is Session.Urgent: the bit in the key the peer listed, i.e. the
// bit any member may set in its own ops' signed header, whatever its
// allowance, and not only the urgentFirst ops Need puts first. A
// colleague who marks every message urgent (a malicious one, or a client
// whose default is urgent) — or a site anchor that lists every key with
// the bit — makes every urgent session in that conversation fetch the
// whole backlog: all of it, 16 per want, waiting on no claim (claimNeed
// now), while the peer's urgentRound runs no other session (the urgent
// ops of every other conversation wait for it; a backlog that outlasts
// SessionTimeout fails and is retried three times). That is red team
// 14's first finding again, by another door. Here a backlog of 200 ops,
// all marked urgent: the urgent session should take at most the one
// batch of urgent ops Need lists first.
func TestRedteam15UrgentSessionFetchesEveryOpMarkedUrgent(t *testing.T) {
	const backlog = 200
	tag := make([]byte, tagLen)
	tag[0] = 15
	envs, ids, keys, sender := rt15Chain(t, tag, backlog, func(int) bool { return true })
	sess := rt15Reconcile(t, ids, keys)
	need := sess.Need()
	if len(need) != backlog {
		t.Fatalf("recon found %d of %d needed", len(need), backlog)
	}
	s := rt15Service(t, sender)
	asked, wants := rt15Fetch(t, s, tag, envs, need, sess.Urgent)
	t.Logf("the urgent session asked for %d of %d envelopes in %d want frames", asked, backlog, wants)
	// One batch of urgent ops, and one of their direct dependencies.
	if asked > urgentFirst+siteBatch {
		t.Fatalf("an urgent session asked for %d envelopes (%d want frames) of a backlog of %d marked urgent — at most %d jump the queue", asked, wants, backlog, urgentFirst+siteBatch)
	}
}

// TestRedteam15UrgentSessionTakesFewUrgentOps: what the test above holds
// to, in the case that works: a backlog of routine ops with one urgent
// op; the urgent session takes that op and its parent only.
func TestRedteam15UrgentSessionTakesFewUrgentOps(t *testing.T) {
	const backlog = 50
	tag := make([]byte, tagLen)
	tag[0] = 15
	envs, ids, keys, sender := rt15Chain(t, tag, backlog, func(i int) bool { return i == backlog-1 })
	sess := rt15Reconcile(t, ids, keys)
	s := rt15Service(t, sender)
	if asked, _ := rt15Fetch(t, s, tag, envs, sess.Need(), sess.Urgent); asked != 2 {
		t.Fatalf("the urgent session asked for %d envelopes; want the one urgent op and its parent", asked)
	}
}

// TestRedteam15UrgentOpWithoutItsFreshParent: an urgent session now
// fetches no ancestor at all. The common urgent message is a reply: a
// colleague writes "bed 4 deteriorating" (routine) and, a moment later,
// "bed 4 arrest" (urgent, depending on it). The urgent session starts at
// once (urgentSites) and brings the urgent op across alone; the routine
// parent follows only in a routine round — KickDelay later, and if a
// session is moving this conversation's backlog, skipped as busy until
// that session ends, then fetched in causal-key order behind whatever is
// left. Until then the far side's DAG buffers the urgent op (missing
// dependency): no device at the far site shows it, so it crossed first
// for nothing. Here the peer holds the routine parent and the urgent op,
// and we lack both: the urgent session should bring the parent too (one
// generation — a bounded set, unlike red team 14's whole ancestry).
func TestRedteam15UrgentOpWithoutItsFreshParent(t *testing.T) {
	tag := make([]byte, tagLen)
	tag[0] = 16
	envs, ids, keys, sender := rt15Chain(t, tag, 2, func(i int) bool { return i == 1 })
	sess := rt15Reconcile(t, ids, keys)
	need := sess.Need()
	if len(need) != 2 || need[0] != ids[1] {
		t.Fatalf("need %v; want the urgent op, then its parent", need)
	}
	s := rt15Service(t, sender)
	asked, wants := rt15Fetch(t, s, tag, envs, need, sess.Urgent)
	t.Logf("the urgent session asked for %d envelopes in %d want frames", asked, wants)
	if asked != 2 {
		t.Fatalf("the urgent session asked for %d envelope(s): the urgent op without its one missing parent, which it cannot be applied without", asked)
	}
}

// TestRedteam15UrgentSessionReconcilesBacklogRoutine: an urgent session
// reconciles the whole ID set of each of its conversations, and only the
// first urgentCtrlBytes of a side's control frames go urgent (red team
// 14's fix: the recon of a backlog never goes ahead of the link). But in
// the case urgent sessions exist for — a conversation whose newest ops, a
// backlog and the urgent op, have not crossed
// (TestUrgentOvertakesSessionInFlight) — that recon is large: for 120
// new ops in a conversation of 2,000, about 30 KiB each way, more than
// the 120 envelopes themselves (≈36 KiB of 300-byte messages). The
// frames past the budget go routine, in the queue with the frames of the
// session moving the backlog, chunk by chunk: on a link of 8 KiB/s the
// urgent op's want leaves only after ≈60 KiB of routine recon shared with
// the backlog — about as late as the backlog's own last batch, so the
// urgent session buys nothing (README's 53 ms is for a conversation of
// 120 ops). Here the responder's frames before its want for the urgent
// op should all have gone urgent.
func TestRedteam15UrgentSessionReconcilesBacklogRoutine(t *testing.T) {
	t.Skip("open (README, Several sites): an urgent session reconciles each conversation's whole ID set — ≈30 KiB each way for 120 new ops among 2,000 — and all but 8 KiB of it goes routine, behind the backlog: the urgent op's want waits for it")
	const held, backlog = 2000, 120
	all := make([]crdt.OpID, held+backlog)
	keys := map[crdt.OpID]uint64{}
	for i := range all {
		rand.Read(all[i][:])
		keys[all[i]] = uint64(i+1) << 20
	}
	keys[all[len(all)-1]] |= e2e.UrgentKey // the newest: the urgent op
	session := func(ids []crdt.OpID) *Session {
		ids = slices.Clone(ids)
		slices.SortFunc(ids, crdt.OpID.Compare)
		ks := make([]uint64, len(ids))
		for i, id := range ids {
			ks[i] = keys[id]
		}
		return NewKeyedSession(ids, ks)
	}
	initiator, responder := session(all), session(all[:held])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &pacedLinks{}
	s := &Service{cfg: Config{Links: l}, ctx: ctx, cancel: cancel}
	c := &conn{svc: s, p: "site", site: true, urgent: true, s: sinkStream{}, sent: &s.sent}
	tag := make([]byte, tagLen)
	// The responder: its answer to the urgent offer, its recon replies,
	// then its want for what it lacks, urgent first.
	if err := c.send(frame{Kind: fOffer, Tags: [][]byte{tag}, FPs: [][]byte{make([]byte, fpLen)}}); err != nil {
		t.Fatal(err)
	}
	m, err := initiator.Initiate()
	if err != nil {
		t.Fatal(err)
	}
	recon := 0
	for m != nil {
		r, err := responder.Reply(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.send(frame{Kind: fRecon, Tag: tag, Msg: r}); err != nil {
			t.Fatal(err)
		}
		recon += len(r)
		if len(r) == 0 {
			break
		}
		if m, err = initiator.Reply(r); err != nil {
			t.Fatal(err)
		}
	}
	need := responder.Need()
	if len(need) != backlog || !responder.Urgent(need[0]) {
		t.Fatalf("the responder needs %d (urgent first: %v); want %d, the urgent op first", len(need), len(need) > 0 && responder.Urgent(need[0]), backlog)
	}
	routine := 0
	for _, u := range l.urgent {
		if !u {
			routine++
		}
	}
	t.Logf("responder recon %d B in %d frames, %d of them paced routine; %d B of control paced urgent", recon, len(l.urgent)-1, routine, c.urgentCtrl)
	if routine > 0 {
		t.Fatalf("before its want for the urgent op the responder sent %d B of recon, %d frame(s) of it paced routine (behind the backlog)", recon, routine)
	}
}

// TestRedteam15UrgentWantPacedUrgent: the want goes urgent when the recon
// was small (passes).
func TestRedteam15UrgentWantPacedUrgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &pacedLinks{}
	s := &Service{cfg: Config{Links: l}, ctx: ctx, cancel: cancel}
	c := &conn{svc: s, p: "site", site: true, urgent: true, s: sinkStream{}, sent: &s.sent}
	tag := make([]byte, tagLen)
	if err := c.send(frame{Kind: fRecon, Tag: tag, Msg: make([]byte, 512)}); err != nil {
		t.Fatal(err)
	}
	if err := c.send(frame{Kind: fWant, Tag: tag, IDs: [][]byte{make([]byte, 32)}}); err != nil {
		t.Fatal(err)
	}
	if !l.urgent[len(l.urgent)-1] {
		t.Fatal("the want for the urgent op went routine after a small recon")
	}
}
