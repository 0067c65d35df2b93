package mesh_test

// Red-team round 5: what one admitted colleague can do to a victim through
// /medmesh/sync/3's in-flight claims and per-session state. Each test
// fails on the code it was written against; the failure is the finding.

import (
	"bytes"
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// rt5Range and rt5Recon mirror a sync/3 reconciliation message: listed
// IDs carry causal keys (mesh/recon.go).
type rt5Range struct {
	Bound []byte   `cbor:"1,keyasint,omitempty"`
	Mode  uint8    `cbor:"2,keyasint"`
	FP    []byte   `cbor:"3,keyasint,omitempty"`
	IDs   [][]byte `cbor:"4,keyasint,omitempty"`
	Keys  []uint64 `cbor:"5,keyasint,omitempty"`
}

type rt5Recon struct {
	Ranges []rt5Range `cbor:"1,keyasint"`
}

// rt5Final is a recon message that lists ids (sorted here) with keys as
// "final" ranges — "here are mine; no answer": the victim records every
// one it lacks as needed and answers with an empty recon frame. Ranges
// hold at most perRange IDs each.
func rt5Final(t testing.TB, ids []crdt.OpID, key func(crdt.OpID) uint64, perRange int) []byte {
	t.Helper()
	ids = slices.Clone(ids)
	slices.SortFunc(ids, crdt.OpID.Compare)
	var msg rt5Recon
	for len(ids) > 0 {
		n := min(len(ids), perRange)
		r := rt5Range{Mode: 3}
		for _, id := range ids[:n] {
			r.IDs = append(r.IDs, slices.Clone(id[:]))
			r.Keys = append(r.Keys, key(id))
		}
		if ids = ids[n:]; len(ids) > 0 {
			r.Bound = slices.Clone(ids[0][:])
		}
		msg.Ranges = append(msg.Ranges, r)
	}
	b, err := detcbor.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rt5Claim is mallory's hand-written session: it offers tag, lists ids
// as its own (each with the key key gives it) over as many recon frames
// as it takes (chunk IDs each), wants nothing itself — so the victim, as
// responder, fetches what it needs from mallory — and returns once the
// victim has sent its first want: from then on the victim's in-flight
// claim on those IDs is held until mallory answers, or the frame times
// out.
func rt5Claim(t testing.TB, m, v *testnet.Peer, tag []byte, ids []crdt.OpID, key func(crdt.OpID) uint64, chunk int) *rawSync {
	t.Helper()
	s := rt5TryClaim(t, m, v, tag, ids, key, chunk)
	if s == nil {
		t.Fatal("the victim refused the session")
	}
	return s
}

// rt5TryClaim is rt5Claim, but returns nil if the victim resets the
// stream before its offer (it refuses the session).
func rt5TryClaim(t testing.TB, m, v *testnet.Peer, tag []byte, ids []crdt.OpID, key func(crdt.OpID) uint64, chunk int) *rawSync {
	t.Helper()
	s := rawOpen(t.(*testing.T), m, v)
	s.st.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := s.offer([][]byte{tag}); err != nil {
		t.Fatal(err)
	}
	vt, err := s.readOffer()
	if err != nil {
		s.st.Reset()
		return nil
	}
	if !slices.ContainsFunc(vt, func(b []byte) bool { return bytes.Equal(b, tag) }) {
		t.Fatal("the victim's offer lacks the tag")
	}
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		if err := s.send(wireFrame{Kind: 2, Tag: tag, Msg: rt5Final(t, ids[:n], key, 60000)}); err != nil {
			t.Fatal(err)
		}
		ids = ids[n:]
		if f, err := s.recv(); err != nil || f.Kind != 2 || len(f.Msg) != 0 {
			t.Fatalf("recon answer: kind %d, %d bytes, %v", f.Kind, len(f.Msg), err)
		}
	}
	if err := s.send(wireFrame{Kind: 3, Tag: tag}); err != nil { // mallory wants nothing
		t.Fatal(err)
	}
	f, err := s.recv()
	if err != nil || f.Kind != 3 || len(f.IDs) == 0 {
		t.Fatalf("expected the victim's want: kind %d, %v", f.Kind, err)
	}
	return s
}

// rt5Stall keeps a victim's fetch from mallory alive without giving it
// anything: each want is answered, empty, just inside the frame timeout,
// until stop is closed.
func rt5Stall(s *rawSync, tag []byte, every time.Duration, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
		if err := s.send(wireFrame{Kind: 4, Tag: tag}); err != nil {
			return
		}
		if _, err := s.recv(); err != nil { // the next want
			return
		}
	}
}

// TestRedteam5InflightClaimSuppressesCatchUp: two sessions never fetch
// the same op at once — the later one skips what the earlier one has
// claimed, and leaves its peer "synced again next round". A claim is held
// by whichever peer's session made it, for as long as that peer takes to
// answer: frame by frame (FrameTimeout each) up to the 2-minute session
// bound, and then again from a new stream. Mallory — any admitted
// colleague: not a member, it learns the tag from anyone's offer and the
// op IDs by reconciling that tag with a member, as a carrier would —
// lists the ops a victim lacks as its own, wants nothing, and answers the
// victim's wants slowly and empty. Every honest round (alice's, the
// victim's) meanwhile skips those ops as "being fetched": a victim back
// from the basement does not get the message alice wrote while it was
// away, for as long as mallory cares to keep re-claiming (the gap between
// two of its sessions is a few milliseconds; honest retries come once a
// period). Impact: one malicious peer suppresses, indefinitely, the
// anti-entropy delivery of any conversation to any device — the only way
// a message reaches a device that was offline when it was sent.
func TestRedteam5InflightClaimSuppressesCatchUp(t *testing.T) {
	c := testnet.NewCA(t)
	aid := c.Enrol(t, "alice")
	a := start(t, c, aid, false)
	v := start(t, c, c.Enrol(t, "victim"), false, a)
	m := start(t, c, c.Enrol(t, "mallory"), false, v)
	testnet.Knows(t, a, v)
	id, err := a.C.Create("ward", []peer.ID{v.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "the victim joined; mallory admitted", func() bool {
		return testnet.Joined(v, id, 2) && v.N.IsAdmitted(m.ID)
	})
	tag := a.C.Tags()[0]

	// Alice goes off the network and writes: nobody gets it by gossip.
	a.Stop()
	a = start(t, c, aid, false) // no bootstrap: alone
	x := testnet.Send(t, a, id, "bed 4 needs a review")
	time.Sleep(6 * time.Second) // past gossipsub's message cache (5 heartbeats): only sync can bring x now
	if slices.Contains(testnet.Texts(v, id), "bed 4 needs a review") {
		t.Fatal("setup: the victim already has the message")
	}

	// Mallory claims x on the victim (and 6 batches of made-up IDs before
	// it, which it answers one by one, empty and slowly).
	fakes := make([]crdt.OpID, 6*2048)
	rng := rand.New(rand.NewChaCha8([32]byte{5}))
	for i := range fakes {
		for j := range fakes[i] {
			fakes[i][j] = byte(rng.Uint32())
		}
	}
	key := func(id crdt.OpID) uint64 {
		if id == x {
			return 1 << 40 // last: in the last batch the victim asks for
		}
		return 0
	}
	s := rt5Claim(t, m, v, tag, append(fakes, x), key, len(fakes)+1)
	stop := make(chan struct{})
	stalled := make(chan struct{})
	go func() {
		defer close(stalled)
		rt5Stall(s, tag, 4*time.Second, stop)
	}()

	// Alice comes back; both sides complete honest sync rounds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.N.Host().Connect(ctx, peer.AddrInfo{ID: v.ID, Addrs: v.N.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice and the victim admit each other", func() bool {
		return v.N.IsAdmitted(a.ID) && a.N.IsAdmitted(v.ID)
	})
	for range 3 {
		testnet.Eventually(t, 15*time.Second, "a complete sync round from alice to the victim", func() bool { return syncs(a, v) })
		v.M.SyncWith(a.ID)
	}
	got := slices.Contains(testnet.Texts(v, id), "bed 4 needs a review")
	close(stop)
	<-stalled
	s.st.Reset()
	if !got {
		// Control: with mallory's session gone, the next round brings it.
		testnet.Eventually(t, 20*time.Second, "control: the victim gets x once mallory's claim is gone", func() bool {
			return slices.Contains(testnet.Texts(v, id), "bed 4 needs a review")
		})
		t.Fatal("FINDING: while mallory's session held the in-flight claim on alice's message, complete honest sync rounds " +
			"between alice and the victim (both directions, 3 times) skipped it — the victim never got it from alice")
	}
}

// TestRedteam5ConcurrentSessionsPinMemory: one session's "need" is
// bounded (maxNeed: 2^20 IDs then, 2^16 now), but a peer may run as many sessions at once
// as libp2p lets it open streams (64 inbound streams per protocol and
// peer by default), and nothing bounds what they hold together. Mallory
// lists 2^20 made-up IDs in each of a few sessions (10 recon frames of
// ≈4 MiB each, within the per-session control budget), wants nothing, and
// then stalls the victim's fetch: each session pins its need map, the
// sorted need list and as many in-flight claims — ≈140 MB of the victim's
// heap per session, for up to two minutes, renewable. Impact: a single
// admitted colleague drives a phone out of memory (64 sessions ≈ 9 GB);
// the node's own per-peer memory limit (64 MiB, node/gater.go) never sees
// it.
func TestRedteam5ConcurrentSessionsPinMemory(t *testing.T) {
	a, v, m := pair(t)
	tag := a.C.Tags()[0]
	const sessions = 3
	const perSession = 1<<20 + 1000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	stop := make(chan struct{})
	var stalls []chan struct{}
	refused := 0
	for i := range sessions {
		rng := rand.New(rand.NewChaCha8([32]byte{byte(i + 1)}))
		fakes := make([]crdt.OpID, perSession)
		for j := range fakes {
			for k := range fakes[j] {
				fakes[j][k] = byte(rng.Uint32())
			}
		}
		s := rt5TryClaim(t, m, v, tag, fakes, func(crdt.OpID) uint64 { return 0 }, 110000)
		fakes = nil
		if s == nil {
			refused++
			continue
		}
		done := make(chan struct{})
		stalls = append(stalls, done)
		go func() {
			defer close(done)
			rt5Stall(s, tag, 4*time.Second, stop)
			s.st.Reset()
		}()
	}
	grown := int64(heap()) - int64(before)
	close(stop)
	for _, d := range stalls {
		<-d
	}
	t.Logf("victim's heap grew by %d MiB over %d stalled sessions of one peer (%d more refused)", grown>>20, sessions-refused, refused)
	if refused != sessions-2 {
		t.Errorf("the victim refused %d of %d concurrent sessions of one peer; want all but 2", refused, sessions)
	}
	if grown > 64<<20 {
		t.Fatalf("FINDING: %d sync sessions of one admitted peer pin %d MiB of the victim's heap (≈%d MiB each; "+
			"64 concurrent sessions per peer are allowed)", sessions, grown>>20, grown>>20/sessions)
	}
}

// rt5Junk is a content envelope by from, validly signed, for a made-up
// conversation tag: nobody can read it, every check the mesh makes on an
// envelope (canonical, signed, known sender) passes.
func rt5Junk(t testing.TB, from *testnet.Peer, tag []byte, i int) []byte {
	t.Helper()
	e := e2e.New(tag, from.ID, nil)
	e.Kind = e2e.KindContent
	e.Epoch = bytes.Repeat([]byte{byte(i)}, 32)
	e.Index = uint32(i)
	e.Body = bytes.Repeat([]byte{0xee}, 512)
	e.Wall = time.Now().UnixMilli()
	if err := e.Sign(from.Ident.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestRedteam5FetchAnswerFilesForeignEnvelopes: a fetch takes whatever
// envelopes the peer answers with — not only the IDs it asked for, not
// only of the tag it is fetching (checkFetched checks signatures and
// senders only) — and an anchor carries those of tags it does not hold
// under the tag being synced (deliver passes the sync's tag as carrier
// tag). Mallory asks the anchor to reconcile alice's conversation tag,
// lists one made-up ID, and answers the anchor's want for it with
// envelopes of its own for another, made-up tag. The anchor files them
// in alice's conversation's carrier: they are listed and served in every
// sync of that tag from then on, so the carried set of the conversation
// never equals its members' (their fingerprints never match) and every
// member re-fetches, and drops, the junk in every round, up to mallory's
// share of the anchor's quota. The same path takes fresh pushes of a
// revoked sender (checkSender with viaSync), which gossip refuses.
// Impact: one admitted colleague poisons any conversation's carrier on
// an anchor — perpetual reconciliation and re-download for every member.
func TestRedteam5FetchAnswerFilesForeignEnvelopes(t *testing.T) {
	c := testnet.NewCA(t)
	x := start(t, c, c.Enrol(t, "anchor", mesh.RoleAnchor), true)
	a := start(t, c, c.Enrol(t, "alice"), false, x)
	b := start(t, c, c.Enrol(t, "bob"), false, x)
	m := start(t, c, c.Enrol(t, "mallory"), false, x)
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined; mallory admitted by the anchor", func() bool {
		return testnet.Joined(b, id, 2) && x.N.IsAdmitted(m.ID)
	})
	tag := a.C.Tags()[0]
	testnet.Eventually(t, 15*time.Second, "the anchor carries the conversation", func() bool {
		return x.M.Carries(tag) && len(x.M.IDsOf(tag)) >= len(a.M.IDsOf(tag))
	})

	other := randomTags(1)[0]
	var junk [][]byte
	junkIDs := map[crdt.OpID]bool{}
	for i := range 50 {
		raw := rt5Junk(t, m, other, i)
		junk = append(junk, raw)
		junkIDs[crdt.OpID(e2e.ID(raw))] = true
	}
	var fake crdt.OpID
	fake[0] = 0x42
	s := rt5Claim(t, m, x, tag, []crdt.OpID{fake}, func(crdt.OpID) uint64 { return 0 }, 1)
	// The anchor wants fake; mallory answers with its junk instead.
	if err := s.send(wireFrame{Kind: 4, Tag: tag, Envs: junk}); err != nil {
		t.Fatal(err)
	}
	// The anchor either goes on (its last, empty, want) or — the envelopes
	// were not asked for — ends the session.
	if f, err := s.recv(); err == nil && (f.Kind != 3 || len(f.IDs) != 0) {
		t.Fatalf("expected the anchor's last (empty) want or the end of the session: kind %d", f.Kind)
	} else if err == nil {
		s.send(wireFrame{Kind: 5})
	}
	filed := 0
	for _, op := range x.M.IDsOf(tag) {
		if junkIDs[op] {
			filed++
		}
	}
	if filed > 0 {
		// What that costs the members: alice's sync rounds with the anchor
		// never end equal.
		for range 3 {
			testnet.Eventually(t, 15*time.Second, "alice completes a sync round with the anchor", func() bool { return syncs(a, x) })
		}
		t.Fatalf("FINDING: the anchor filed %d of mallory's envelopes for another tag — none asked for — under alice's "+
			"conversation tag, and serves them to its members (alice holds %d IDs of the tag, the anchor %d after her syncs)",
			filed, len(a.M.IDsOf(tag)), len(x.M.IDsOf(tag)))
	}
}
