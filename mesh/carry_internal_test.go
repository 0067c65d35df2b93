package mesh

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// carrierService is a device that carries (no anchor) on fake parts, with
// a bag of quota bytes.
func carrierService(t *testing.T, quota int64, now *time.Time) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &Service{cfg: Config{Node: &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{}}, Carry: true,
		CarryQuota: quota, CarryTTL: time.Hour, CarryShare: DefaultCarryShare, CarryCopies: DefaultCarryCopies,
		AnchorTTL: 30 * 24 * time.Hour, AnchorQuota: 1 << 30, Store: ds.NewMapDatastore(), Now: func() time.Time { return *now }},
		h: &fakeHolder{}, log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel, carried: map[string]*carrier{},
		subs: map[string]*pubsub.Subscription{}, topics: map[string]*pubsub.Topic{}, adopted: map[peer.ID]int{}}
}

// sprayEnv is an envelope of tag by sender written at wall, of about size
// bytes (unsigned: keepSpray takes checked envelopes).
func sprayEnv(t *testing.T, tag []byte, sender peer.ID, wall time.Time, size int) (*e2e.Envelope, []byte) {
	t.Helper()
	return sprayEnvAs(t, tag, sender, wall, size, false)
}

// sprayEnvUrgent is sprayEnv, marked urgent in its header.
func sprayEnvUrgent(t *testing.T, tag []byte, sender peer.ID, wall time.Time, size int) (*e2e.Envelope, []byte) {
	t.Helper()
	return sprayEnvAs(t, tag, sender, wall, size, true)
}

func sprayEnvAs(t *testing.T, tag []byte, sender peer.ID, wall time.Time, size int, urgent bool) (*e2e.Envelope, []byte) {
	t.Helper()
	e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: tag, Sender: []byte(sender),
		Epoch: make([]byte, 32), Body: make([]byte, size), Sig: make([]byte, 64), Wall: wall.UnixMilli(), Urgent: urgent}
	rand.Read(e.Body)
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return e, raw
}

func (s *Service) bagOf(sender peer.ID) (n int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.bag {
		if it.sender == sender {
			n++
			bytes += int64(it.size)
		}
	}
	return n, bytes
}

// TestCarryOriginShare: one origin flooding a carrier fills at most its
// share of the bag, oldest dropped first; another origin's envelopes stay.
func TestCarryOriginShare(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 64<<10, &now)
	tag := make([]byte, tagLen)
	flood, honest := newPeerID(t), newPeerID(t)
	var honestIDs []crdt.OpID
	for range 8 {
		e, raw := sprayEnv(t, tag, honest, now, 1000)
		if !s.keepSpray(tag, e, raw, 4, now) {
			t.Fatal("an honest origin's envelope not kept")
		}
		honestIDs = append(honestIDs, crdt.OpID(e2e.ID(raw)))
	}
	var last crdt.OpID
	for range 200 { // 200 KB from one origin into a 64 KiB bag
		e, raw := sprayEnv(t, tag, flood, now, 1000)
		s.keepSpray(tag, e, raw, 4, now)
		last = crdt.OpID(e2e.ID(raw))
	}
	if _, b := s.bagOf(flood); b > s.carryShare() {
		t.Fatalf("flooding origin holds %d bytes, share %d", b, s.carryShare())
	}
	if n, _ := s.bagOf(honest); n != 8 {
		t.Fatalf("the honest origin keeps %d of 8 envelopes", n)
	}
	if !s.carriesIn(tag, last) {
		t.Fatal("the flooder's newest envelope went; its oldest should go first")
	}
	for _, id := range honestIDs {
		if !s.carriesIn(tag, id) {
			t.Fatal("an honest envelope's index entry went")
		}
	}
	if s.bagBytes > s.cfg.CarryQuota {
		t.Fatalf("bag of %d bytes over quota %d", s.bagBytes, s.cfg.CarryQuota)
	}
}

func (s *Service) carriesIn(tag []byte, id crdt.OpID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.carried[hexTag(tag)]
	if c == nil {
		return false
	}
	_, ok := c.ops[id]
	return ok
}

// TestCarryQuotaUrgentFirst: a full bag drops an envelope of the origin
// of its oldest one, urgent or not: that origin's oldest non-urgent
// envelope (even when an urgent one of it is older), its oldest urgent one
// when all of its are urgent; other origins' envelopes, newer, stay.
func TestCarryQuotaUrgentFirst(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 20<<10, &now)
	s.cfg.CarryShare = 1 // the quota alone decides
	tag := make([]byte, tagLen)
	origin := newPeerID(t)
	keep := func(e *e2e.Envelope, raw []byte) crdt.OpID {
		t.Helper()
		if !s.keepSpray(tag, e, raw, 2, now) {
			t.Fatal("envelope not kept")
		}
		return crdt.OpID(e2e.ID(raw))
	}
	var ids []crdt.OpID // origin's: urgent, routine, urgent, routine, ...
	for i := range 6 {
		ids = append(ids, keep(sprayEnvAs(t, tag, origin, now, 1800, i%2 == 0)))
	}
	var others []crdt.OpID
	for range 4 {
		others = append(others, keep(sprayEnvUrgent(t, tag, newPeerID(t), now, 1800)))
	}
	// Full: a newcomer of another origin, routine, takes the place of the
	// oldest origin's oldest routine envelope, not of its older urgent one.
	newcomer := keep(sprayEnv(t, tag, newPeerID(t), now, 1800))
	if s.carriesIn(tag, ids[1]) || !s.carriesIn(tag, ids[0]) || !s.carriesIn(tag, newcomer) {
		t.Fatal("not the oldest origin's oldest routine envelope evicted")
	}
	for _, id := range others {
		if !s.carriesIn(tag, id) {
			t.Fatal("a newer origin's envelope went")
		}
	}
	// When all of the oldest origin's envelopes are urgent, its oldest
	// urgent one goes, for a routine newcomer too.
	s2 := carrierService(t, 20<<10, &now)
	s2.cfg.CarryShare = 1
	var first crdt.OpID
	for i := range 10 {
		e, raw := sprayEnvUrgent(t, tag, newPeerID(t), now, 1800)
		if !s2.keepSpray(tag, e, raw, 2, now) {
			t.Fatal("urgent envelope not kept")
		}
		if i == 0 {
			first = crdt.OpID(e2e.ID(raw))
		}
	}
	e, raw := sprayEnv(t, tag, newPeerID(t), now, 1800)
	if !s2.keepSpray(tag, e, raw, 2, now) || s2.carriesIn(tag, first) {
		t.Fatal("a bag full of others' urgent envelopes refused a newer routine one")
	}
	if s.bagBytes > s.cfg.CarryQuota || s2.bagBytes > s2.cfg.CarryQuota {
		t.Fatalf("bag over quota")
	}
}

// TestCarryTTL: an envelope expires CarryTTL after the time in its header
// (a future time counts as now), is dropped by the sweep and never handed
// on; one expired already is refused.
func TestCarryTTL(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	e, raw := sprayEnv(t, tag, newPeerID(t), now.Add(-2*time.Hour), 100)
	if s.keepSpray(tag, e, raw, 4, now) {
		t.Fatal("an envelope past its TTL was kept")
	}
	e, raw = sprayEnv(t, tag, newPeerID(t), now.Add(-30*time.Minute), 100)
	old := crdt.OpID(e2e.ID(raw))
	s.keepSpray(tag, e, raw, 4, now)
	e, raw = sprayEnv(t, tag, newPeerID(t), now.Add(1000*time.Hour), 100) // a lying clock
	future := crdt.OpID(e2e.ID(raw))
	s.keepSpray(tag, e, raw, 4, now)
	if len(s.candidates(newPeerID(t), carrierOffer, false)) != 2 {
		t.Fatal("fresh envelopes with copies to spare not offered")
	}
	now = now.Add(31 * time.Minute)
	s.sweepCarriers(now)
	if s.carriesIn(tag, old) || !s.carriesIn(tag, future) {
		t.Fatal("sweep: the expired envelope stays, or the fresh one went")
	}
	now = now.Add(30 * time.Minute)
	if len(s.candidates(newPeerID(t), carrierOffer, false)) != 0 || s.carriesIn(tag, future) {
		t.Fatal("an envelope from a future clock outlived the TTL")
	}
	if n, _ := s.cfg.Store.(ds.Datastore).GetSize(context.Background(), carrierKey(tag).ChildString(future.String())); n > 0 {
		t.Fatal("expired envelope still in the store")
	}
}

// TestCarryRestore: what a carrier carries survives a restart with its
// copies and urgency; with carriage turned off it is dropped.
func TestCarryRestore(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	e, raw := sprayEnvUrgent(t, tag, newPeerID(t), now, 100)
	s.keepSpray(tag, e, raw, 4, now)
	for _, carry := range []bool{true, false} {
		r := carrierService(t, 1<<20, &now)
		r.cfg.Store, r.cfg.Carry = s.cfg.Store, carry
		if err := r.restoreCarried(); err != nil {
			t.Fatal(err)
		}
		c := r.candidates(newPeerID(t), carrierOffer, false)
		if carry && (len(c) != 1 || c[0].give != 2 || !c[0].urgent) {
			t.Fatalf("restored: %+v", c)
		}
		if !carry && (len(c) != 0 || r.CarriedCount() != 0) {
			t.Fatal("carried envelopes kept with carriage off")
		}
	}
}

// TestSprayHalves: the origin hands half its copies at each handover and
// stops at one (kept for members); a carrier hands on half of what it was
// given and, with one copy, waits for a member.
func TestSprayHalves(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	_, raw := sprayEnv(t, tag, s.cfg.Node.ID(), now, 100)
	s.noteOwn(tag, [][]byte{raw}, nil, nil)
	var gave []uint32
	for range 5 {
		c := s.candidates(newPeerID(t), carrierOffer, false)
		if len(c) == 0 {
			break
		}
		gave = append(gave, c[0].give)
		handOver(s, newPeerID(t), c)
	}
	if !slices.Equal(gave, []uint32{4, 2, 1}) {
		t.Fatalf("origin handed %v copies, want 4, 2, 1", gave)
	}
	e, raw := sprayEnv(t, tag, newPeerID(t), now, 100)
	s.keepSpray(tag, e, raw, 2, now)
	c := s.candidates(newPeerID(t), carrierOffer, false)
	if len(c) != 1 || c[0].give != 1 {
		t.Fatalf("carrier of 2 copies offers %+v", c)
	}
	handOver(s, newPeerID(t), c)
	if len(s.candidates(newPeerID(t), carrierOffer, false)) != 0 {
		t.Fatal("a carrier with one copy left hands it to another carrier")
	}
	if !s.carriesIn(tag, crdt.OpID(e2e.ID(raw))) {
		t.Fatal("the last copy is not kept for a member")
	}
}

// TestAlteredEnvelopeRefused: a carrier that alters an envelope it serves
// changes its ID (the hash of its bytes): the member that asked for the
// original refuses it, counts it against the carrier and ends the session.
func TestAlteredEnvelopeRefused(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{}}
	carrierID := newPeerID(t)
	n.roles[carrierID] = nil
	s := testService(t, n, &fakeHolder{}, &now)
	tag := make([]byte, tagLen)
	_, raw := sprayEnv(t, tag, carrierID, now, 100)
	id := crdt.OpID(e2e.ID(raw))
	altered := slices.Clone(raw)
	altered[len(altered)-70] ^= 1 // in the body
	ok, _, err := s.checkAnswer([][]byte{altered}, []crdt.OpID{id}, tag, true, carrierID)
	if err == nil || len(ok) != 0 {
		t.Fatal("an altered envelope was taken")
	}
	if !slices.Contains(n.penalised, carrierID) {
		t.Fatal("the altering carrier was not penalised")
	}
}

// TestListedOnce: an entry listed to a carrier (taken or not) is not
// listed to it again; another carrier still gets it.
func TestListedOnce(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	_, raw := sprayEnv(t, tag, s.cfg.Node.ID(), now, 100)
	s.noteOwn(tag, [][]byte{raw}, nil, nil)
	p, q := newPeerID(t), newPeerID(t)
	c := s.candidates(p, carrierOffer, false)
	if len(c) != 1 {
		t.Fatal("own op not a candidate")
	}
	s.listed(p, c) // p declined it
	if len(s.candidates(p, carrierOffer, false)) != 0 || len(s.candidates(q, carrierOffer, false)) != 1 {
		t.Fatal("listed again to a peer that declined, or not to another")
	}
}

// TestSkipCarried: a tag either side carries only is never reconciled
// (it goes in the hand phase); the others are.
func TestSkipCarried(t *testing.T) {
	held, carried, both := []byte("held-tag-0000000"), []byte("carried-tag-0000"), []byte("both-carry-00000")
	tags := [][]byte{both, carried, held} // sorted
	mine := offer{tags: tags, only: map[string]bool{string(carried): true, string(both): true}}
	theirs := offer{tags: tags, only: map[string]bool{string(both): true}}
	if got := skipCarried(slices.Clone(tags), mine, theirs); len(got) != 1 || !slices.Equal(got[0], held) {
		t.Fatalf("reconciled: %q", got)
	}
	if got := skipCarried(slices.Clone(tags), theirs, mine); len(got) != 1 || !slices.Equal(got[0], held) {
		t.Fatalf("reconciled, other side: %q", got)
	}
	if got := skipCarried(slices.Clone(tags), offer{tags: tags}, offer{tags: tags}); len(got) != 3 {
		t.Fatalf("nothing carried: %q", got)
	}
}

// carrierOffer is the offer of a peer that carries and holds nothing.
var carrierOffer = offer{carry: true}

// handOver hands c to p as a hand phase does when p keeps all of it.
func handOver(s *Service, p peer.ID, c []handCand) { s.handed(p, c, s.debit(c)) }
