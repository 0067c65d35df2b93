package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

func opN(n byte) crdt.OpID { return crdt.OpID{n} }

// TestNeedOrderUrgentFirst: urgent-listed IDs come first (the newest
// urgentFirst of them, in causal order); the rest, further urgent ones included, in
// causal key order whatever the urgency bit.
func TestNeedOrderUrgentFirst(t *testing.T) {
	need := map[crdt.OpID]uint64{}
	for i := range 40 { // a routine backlog, keys 100..139
		need[opN(byte(i))] = uint64(100 + i)
	}
	need[opN(200)] = 500 | e2e.UrgentKey // urgent, newest
	need[opN(201)] = 50 | e2e.UrgentKey  // urgent, older than the backlog
	got := needOrder(need)
	if got[0] != opN(201) || got[1] != opN(200) {
		t.Fatalf("urgent ops not first, in causal order: %x %x", got[0][:1], got[1][:1])
	}
	if !slices.IsSortedFunc(got[2:], func(a, b crdt.OpID) int { return int(a[0]) - int(b[0]) }) {
		t.Fatal("the rest is not in causal order")
	}
	// A peer listing everything urgent moves urgentFirst ahead, no more:
	// the rest stay in causal order, interleaved with routine ones.
	flood := map[crdt.OpID]uint64{}
	for i := range 100 {
		k := uint64(1000 + i)
		if i%2 == 0 {
			k |= e2e.UrgentKey
		}
		flood[opN(byte(i))] = k
	}
	got = needOrder(flood)
	for i, id := range got[:urgentFirst] { // the newest urgent ones: 1068, 1070, ..., 1098
		if want := uint64(1100-2*urgentFirst+2*i) | e2e.UrgentKey; flood[id] != want {
			t.Fatalf("%d-th op ahead has key %x, want %x (the newest urgent ones, in causal order)", i, flood[id], want)
		}
	}
	for i := urgentFirst + 1; i < len(got); i++ {
		if e2e.CausalKey(flood[got[i-1]]) > e2e.CausalKey(flood[got[i]]) {
			t.Fatal("past the urgent batch, not in causal order")
		}
	}
}

// TestAncestorsPromoted: once an urgent op comes, its missing deps move to
// the front of what is left, then theirs; an op not urgent, or urgent past
// its sender's allowance, moves nothing.
func TestAncestorsPromoted(t *testing.T) {
	checked := func(urgent bool, deps ...crdt.OpID) Checked {
		e := &e2e.Envelope{Urgent: urgent, Sender: []byte("x"), Body: []byte{byte(len(deps)), deps[0][0]}}
		for _, d := range deps {
			e.Deps = append(e.Deps, slices.Clone(d[:]))
		}
		raw, _ := e.Encode()
		return Checked{e, raw}
	}
	rest := []crdt.OpID{opN(1), opN(2), opN(3), opN(4), opN(5)}
	yes := func(Checked) bool { return true }
	no := func(Checked) bool { return false }
	var a ancestors
	if got := a.promote([]Checked{checked(false, opN(4))}, rest, yes); !slices.Equal(got, rest) {
		t.Fatalf("a routine op moved its deps: %v", got)
	}
	if got := a.promote([]Checked{checked(true, opN(4))}, rest, no); !slices.Equal(got, rest) {
		t.Fatalf("an urgent op past its allowance moved its deps: %v", got)
	}
	u := checked(true, opN(4), opN(5))
	got := a.promote([]Checked{u}, rest, yes)
	if want := []crdt.OpID{opN(4), opN(5), opN(1), opN(2), opN(3)}; !slices.Equal(got, want) {
		t.Fatalf("after the urgent op: %v, want %v", got, want)
	}
	// Op 4 comes (routine, depending on 2): an ancestor, so 2 moves up.
	four := checked(false, opN(2))
	a[crdt.OpID(e2e.ID(four.Raw))] = true // as if 4's ID were this envelope's
	got = a.promote([]Checked{four}, got[2:], yes)
	if want := []crdt.OpID{opN(2), opN(1), opN(3)}; !slices.Equal(got, want) {
		t.Fatalf("after an ancestor: %v, want %v", got, want)
	}
}

// TestUrgencyLedger: a sender gets urgentBurst urgent treatments at once
// and one more per urgentRefill; another sender's allowance is its own.
func TestUrgencyLedger(t *testing.T) {
	var l urgencyLedger
	now := time.Unix(1_700_000_000, 0)
	a, b := peer.ID("a"), peer.ID("b")
	n := 0
	for l.take(a, now) {
		n++
		if n > 1000 {
			t.Fatal("no limit")
		}
	}
	if n != urgentBurst {
		t.Fatalf("%d at once, want %d", n, urgentBurst)
	}
	if !l.take(b, now) {
		t.Fatal("another sender's allowance was spent")
	}
	if l.take(a, now.Add(urgentRefill/2)) {
		t.Fatal("refilled too soon")
	}
	if !l.take(a, now.Add(urgentRefill)) || l.take(a, now.Add(urgentRefill)) {
		t.Fatal("not exactly one more after urgentRefill")
	}
}

// TestUrgentFloodBoundedPerSender: a colleague marking every op urgent
// gets urgent pacing on a site link for urgentBurst of them, then one per
// urgentRefill; its other frames are routine, and another sender's urgent
// message is still paced first.
func TestUrgentFloodBoundedPerSender(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	flooder, honest := newPeerID(t), newPeerID(t)
	urgentFrames := 0
	for range 100 {
		_, raw := sprayEnvUrgent(t, tag, flooder, now, 500)
		if s.urgentIn([][]byte{raw}) {
			urgentFrames++
		}
	}
	if urgentFrames != urgentBurst {
		t.Fatalf("%d of the flooder's 100 urgent frames paced urgent, want %d", urgentFrames, urgentBurst)
	}
	_, raw := sprayEnvUrgent(t, tag, honest, now, 500)
	if !s.urgentIn([][]byte{raw}) {
		t.Fatal("another sender's urgent message is routine after the flood")
	}
	now = now.Add(urgentRefill)
	_, raw = sprayEnvUrgent(t, tag, flooder, now, 500)
	if !s.urgentIn([][]byte{raw}) {
		t.Fatal("the flooder's allowance never refills")
	}
}

// TestUrgentTagsFirst: on an anchor with site links, a conversation an
// urgent envelope came in for goes first in a session with a site peer,
// for urgentTagTTL; a routine envelope, one past its sender's allowance,
// or a peer that is no site peer changes nothing.
func TestUrgentTagsFirst(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	s.cfg.Links = &budgetLinks{rate: 1 << 20}
	tags := [][]byte{{1}, {2}, {3}}
	sender := newPeerID(t)
	s.mu.Lock()
	s.noteUrgentTagLocked(tags[1], crdt.OpID{1}, sender, 5, 100, now) // routine
	s.mu.Unlock()
	if got := s.urgentTagsFirst("site", tags); got[0][0] != 1 {
		t.Fatal("a routine envelope moved its conversation first")
	}
	s.mu.Lock()
	key := func(at time.Time) uint64 { return uint64(at.UnixMilli())<<20 | e2e.UrgentKey } // stamped at
	s.noteUrgentTagLocked(tags[2], crdt.OpID{2}, sender, key(now), 100, now)
	s.mu.Unlock()
	if got := s.urgentTagsFirst("site", tags); got[0][0] != 3 || got[1][0] != 1 || got[2][0] != 2 {
		t.Fatalf("order %v, want 3 1 2", got)
	}
	now = now.Add(urgentTagTTL + time.Second)
	if got := s.urgentTagsFirst("site", tags); got[0][0] != 1 {
		t.Fatal("a conversation stays first past urgentTagTTL")
	}
	for range urgentBurst + 5 { // spend the allowance
		s.urgency.take(sender, now)
	}
	s.mu.Lock()
	s.noteUrgentTagLocked(tags[2], crdt.OpID{3}, sender, key(now), 100, now)
	s.mu.Unlock()
	if got := s.urgentTagsFirst("site", tags); got[0][0] != 1 {
		t.Fatal("an urgent envelope past its sender's allowance moved its conversation first")
	}
}

// TestNeedOrderPostdatedUrgent: urgent ops stamped more than urgentAhead
// ahead of the fetching device's clock count as routine (else, as the
// newest, they would take every urgent slot); one stamped within it
// still counts.
func TestNeedOrderPostdatedUrgent(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	key := func(at time.Time) uint64 { return uint64(at.UnixMilli()) << 20 }
	need := map[crdt.OpID]uint64{}
	for i := range 40 { // routine backlog
		need[opN(byte(i))] = key(now.Add(-time.Duration(40-i) * time.Second))
	}
	for i := range urgentFirst { // a colleague's, post-dated an hour
		need[opN(byte(100+i))] = key(now.Add(time.Hour+time.Duration(i)*time.Second)) | e2e.UrgentKey
	}
	honest, skewed := opN(200), opN(201)
	need[honest] = key(now) | e2e.UrgentKey
	need[skewed] = key(now.Add(urgentAhead/2)) | e2e.UrgentKey // a clock a little fast
	got := needOrderAt(need, now)
	if got[0] != honest || got[1] != skewed {
		t.Fatalf("first %x %x, want the honest urgent ops", got[0][:1], got[1][:1])
	}
	for _, id := range got[2 : 2+40] {
		if id[0] >= 100 {
			t.Fatalf("a post-dated urgent op is fetched before the routine backlog")
		}
	}
	s := &Session{need: need, now: func() time.Time { return now }}
	if !s.Urgent(honest) || s.Urgent(opN(100)) || s.Urgent(opN(0)) {
		t.Fatal("Session.Urgent disagrees with needOrderAt")
	}
}

// TestUrgencyVerdictOncePerOp: an op's urgency verdict is decided once,
// spending one treatment, and reused; past its sender's allowance an op
// stays routine even after the allowance refills; the verdicts kept are
// bounded.
func TestUrgencyVerdictOncePerOp(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var l urgencyLedger
	sender := newPeerID(t)
	for i := range urgentBurst {
		for range 3 {
			if !l.op(crdt.OpID{1, byte(i)}, sender, now) {
				t.Fatalf("op %d within the allowance refused", i)
			}
		}
	}
	late := crdt.OpID{2}
	if l.op(late, sender, now) {
		t.Fatal("an op past the allowance allowed")
	}
	now = now.Add(10 * urgentRefill)
	if l.op(late, sender, now) {
		t.Fatal("a verdict changed on asking again")
	}
	if !l.op(crdt.OpID{3}, sender, now) {
		t.Fatal("the allowance never refills")
	}
	for i := range 2 * maxUrgentVerdicts {
		l.op(crdt.OpID{4, byte(i), byte(i >> 8)}, sender, now)
	}
	if l.verdicts.Len() > maxUrgentVerdicts {
		t.Fatalf("%d verdicts kept, want at most %d", l.verdicts.Len(), maxUrgentVerdicts)
	}
}
