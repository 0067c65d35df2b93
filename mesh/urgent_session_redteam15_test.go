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
func rt15Service(t *testing.T, senders ...peer.ID) *Service {
	t.Helper()
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{}}
	for _, p := range senders {
		n.roles[p] = nil
	}
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

// TestRedteam15UrgentSessionListsNoRecon: red team 15 found an urgent
// session's reconciliation of a conversation with a backlog large (about
// 30 KiB each way for 120 new ops among 2,000), nearly all of it paced
// routine behind the backlog. An urgent session now lists the urgent ops
// instead (listUrgent): the responder wants what it lacks of them, and
// refuses a recon message, a listing of more than urgentFirst IDs, or one
// of a tag not offered.
func TestRedteam15UrgentSessionListsNoRecon(t *testing.T) {
	tag := make([]byte, tagLen)
	tag[0] = 17
	var listed crdt.OpID
	rand.Read(listed[:])
	for _, tc := range []struct {
		name string
		f    frame
		good bool
	}{
		{"a listing of one urgent op", frame{Kind: fRecon, Tag: tag, IDs: [][]byte{listed[:]}}, true},
		{"a recon message", frame{Kind: fRecon, Tag: tag, Msg: []byte{1, 2, 3}}, false},
		{"a listing of urgentFirst+1 IDs", frame{Kind: fRecon, Tag: tag, IDs: listedIDs(urgentFirst + 1)}, false},
		{"a listing of a tag not offered", frame{Kind: fRecon, Tag: make([]byte, tagLen), IDs: [][]byte{listed[:]}}, false},
		{"a want", frame{Kind: fWant, Tag: tag, IDs: [][]byte{listed[:]}}, false},
	} {
		l := &syncedLinks{}
		s := rt14Responder(t, l, tag)
		st, fp := rt14Pipe(newPeerID(t))
		ended := make(chan struct{})
		go func() { defer close(ended); s.handleSync(st) }()
		fps := [][]byte{make([]byte, fpLen)}
		fps[0][0] = 1 // differs from the responder's (it holds nothing)
		if err := fp.send(frame{Kind: fOffer, Tags: [][]byte{tag}, FPs: fps, Urgent: true}); err != nil {
			t.Fatal(err)
		}
		if f, err := fp.recv(t); err != nil || f.Kind != fOffer || len(f.Tags) != 1 {
			t.Fatalf("%s: the urgent offer's answer: %+v, %v", tc.name, f, err)
		}
		if err := fp.send(tc.f); err != nil {
			t.Fatal(err)
		}
		f, err := fp.recv(t)
		if !tc.good {
			if err == nil {
				t.Errorf("%s: taken in an urgent session (answered %d)", tc.name, f.Kind)
			}
			fp.c.Close()
			<-ended
			continue
		}
		if err != nil || f.Kind != fWant || len(f.IDs) != 1 || crdt.OpID(f.IDs[0]) != listed {
			t.Fatalf("%s: the responder answered %+v, %v; want a want of the listed op", tc.name, f, err)
		}
		// It is not sent (an incomplete answer); the responder ends the tag.
		if err := fp.send(frame{Kind: fEnvs, Tag: tag}); err != nil {
			t.Fatal(err)
		}
		if f, err := fp.recv(t); err != nil || f.Kind != fWant || len(f.IDs) != 0 {
			t.Fatalf("%s: after the answer: %+v, %v; want the end of its wants", tc.name, f, err)
		}
		if err := fp.send(frame{Kind: fDone}); err != nil {
			t.Fatal(err)
		}
		<-ended
		fp.c.Close()
	}
}

// listedIDs is n random IDs as a frame lists them.
func listedIDs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, len(crdt.OpID{}))
		rand.Read(out[i])
	}
	return out
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
