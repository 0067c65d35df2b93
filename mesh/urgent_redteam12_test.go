package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
)

// Red team 12: the envelope's signed urgency bit (sync/6). Every test here
// fails on the code under attack and is skipped so that the suite stays
// green; remove the Skip to see it fail.

// TestRedteam12BagUrgentFloodLocksOutRoutine: the bag's quota eviction
// prefers urgent envelopes across origins, with no per-sender allowance
// (the bag takes the bit straight from the header, which a carrier cannot
// hold to the payload). A colleague with 1/CarryShare devices (four by
// default: a phone, a tablet, two workstations — or two colluding
// colleagues), each marking every op urgent and staying within its origin
// share, fills every carrier's bag with urgent envelopes; from then on
// every routine envelope of every honest origin is refused for the
// carriers' whole CarryTTL (a week), however much newer it is. With the
// same flood routine, the oldest goes and the honest newcomer is kept: the
// bit, not age, decides. The package doc says "In a bag or an anchor,
// urgency reorders only a sender's own envelopes"; here it reorders
// everybody's.
func TestRedteam12BagUrgentFloodLocksOutRoutine(t *testing.T) {
	for _, urgent := range []bool{false, true} {
		name := "routine flood"
		if urgent {
			name = "urgent flood"
		}
		t.Run(name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			s := carrierService(t, 64<<10, &now)
			tag := make([]byte, tagLen)
			devices := int(1 / s.cfg.CarryShare)
			for range devices { // each within its origin share
				flooder := newPeerID(t)
				for range 200 { // small envelopes: the share fills to within a few hundred bytes
					e, raw := sprayEnvAs(t, tag, flooder, now, 100, urgent)
					s.keepSpray(tag, e, raw, 4, now)
				}
			}
			now = now.Add(time.Hour) // an honest colleague's routine message, an hour later
			e, raw := sprayEnv(t, tag, newPeerID(t), now, 1000)
			if !s.keepSpray(tag, e, raw, 4, now) {
				t.Fatalf("%d devices' hour-old %s keeps every carrier from taking an honest colleague's new routine envelope", devices, name)
			}
		})
	}
}

// TestRedteam12HandListUrgentCopiesBeforeDeliveries: the hand list puts
// every urgent entry first whoever its origin — spray copies for other
// carriers included — ahead of deliveries to a member of the
// conversation, and is cut at maxHand. One flooding device within its
// origin share of a default bag (small envelopes marked urgent; members
// would refuse them if the payload disagreed, but a carrier cannot know)
// holds more than maxHand entries: a member meeting the carrier is listed
// none of its own conversation's envelopes that session, and gets one
// session further behind for every maxHand flood entries. Before sync/6,
// deliveries came first.
func TestRedteam12HandListUrgentCopiesBeforeDeliveries(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, DefaultCarryQuota, &now)
	floodTag, memberTag := make([]byte, tagLen), make([]byte, tagLen)
	floodTag[0], memberTag[0] = 1, 2
	e, raw := sprayEnv(t, memberTag, newPeerID(t), now, 500) // a colleague's message for the member
	if !s.keepSpray(memberTag, e, raw, 4, now) {
		t.Fatal("honest envelope not kept")
	}
	honest := crdt.OpID(e2e.ID(raw))
	flooder := newPeerID(t)
	for range 2000 {
		e, raw := sprayEnvUrgent(t, floodTag, flooder, now, 16)
		s.keepSpray(floodTag, e, raw, 4, now)
	}
	if n, b := s.bagOf(flooder); n <= maxHand || b > s.carryShare() {
		t.Fatalf("setup: flooder holds %d entries (%d bytes, share %d), want more than %d", n, b, s.carryShare(), maxHand)
	}
	member := newPeerID(t)
	cands := s.candidates(member, offer{tags: [][]byte{memberTag}, carry: true}, false)
	if !slices.ContainsFunc(cands, func(c handCand) bool { return c.id == honest }) {
		t.Fatalf("the member is listed %d entries, none of them its own conversation's envelope: the flooder's urgent copies took the whole list", len(cands))
	}
}

// TestRedteam12NeedOrderUrgentFloodStarvesHonestUrgent: Need puts the
// OLDEST urgentFirst urgent-listed ops first, whoever sent them, and the
// rest in causal order. Honest relays list every envelope's bit as its
// header says (keysOf applies no allowance). A colleague's urgentFirst
// urgent ops stamped older than an honest urgent op — sent a minute
// earlier, or simply backdated (a wrong clock "costs only buffering") —
// take every slot; the honest urgent op then sorts by its clock among the
// routine backlog, and being the newest it is fetched LAST, batch after
// batch on a budgeted site link: no better than if it were routine.
func TestRedteam12NeedOrderUrgentFloodStarvesHonestUrgent(t *testing.T) {
	const now = uint64(1_700_000_000_000) << 20
	need := map[crdt.OpID]uint64{}
	for i := range 200 { // a routine backlog, the last few minutes
		need[crdt.OpID{1, byte(i)}] = now - uint64(300-i)<<30
	}
	for i := range urgentFirst { // the flooder's urgent ops, backdated
		need[crdt.OpID{2, byte(i)}] = uint64(i) | e2e.UrgentKey
	}
	honest := crdt.OpID{3}
	need[honest] = now | e2e.UrgentKey // "code blue, bed 4"
	got := needOrder(need)
	at := slices.Index(got, honest)
	if at >= 2*urgentFirst {
		t.Fatalf("the honest urgent op is fetched %d-th of %d (batch %d of %d on a site link)", at+1, len(got), at/siteBatch+1, (len(got)+siteBatch-1)/siteBatch)
	}
}

// TestRedteam12AllowanceSpentPerResend: a sender's allowance is charged
// per treatment, not per op: every frame holding its urgent envelope, to
// every site peer, every time it is wanted, spends one (and taking it in
// spends one more on an anchor with links, fetching it one more). A site
// peer (a compromised or buggy anchor of another site) that wants one old
// urgent envelope of an honest doctor again and again — each session may
// want it — drains that doctor's allowance on this anchor, and the
// doctor's next urgent message then crosses every other site link as
// routine, behind the backlog. The same happens to an honest doctor who
// sends two urgent messages in a row through an anchor with a few site
// links.
func TestRedteam12AllowanceSpentPerResend(t *testing.T) {
	tag := make([]byte, tagLen)
	t.Run("re-wanted", func(t *testing.T) {
		now := time.Unix(1_700_000_000, 0)
		s := carrierService(t, 1<<20, &now)
		doctor := newPeerID(t)
		_, old := sprayEnvUrgent(t, tag, doctor, now.Add(-time.Hour), 500)
		for range urgentBurst { // a site peer wants the same old envelope again
			s.urgentIn([][]byte{old})
		}
		_, fresh := sprayEnvUrgent(t, tag, doctor, now, 500)
		if !s.urgentIn([][]byte{fresh}) {
			t.Fatal("the doctor's first urgent message in an hour is paced routine to an honest site peer: its allowance went on resends of an old one")
		}
	})
	// Honest load alone: two urgent messages a second apart, taken in by
	// gossip on an anchor with links to four other sites.
	t.Run("two in a row", func(t *testing.T) {
		now := time.Unix(1_700_000_000, 0)
		s := carrierService(t, 1<<20, &now)
		s.cfg.Links = &budgetLinks{rate: 1 << 20}
		doctor := newPeerID(t)
		for i := range 2 {
			at := now
			now = now.Add(time.Second)
			e, raw := sprayEnvUrgent(t, tag, doctor, at, 500)
			s.mu.Lock()
			s.noteUrgentTagLocked(tag, crdt.OpID(e2e.ID(raw)), doctor, e.SyncKey(), len(raw), at) // kept (anchor.go keep)
			s.mu.Unlock()
			for site := range 4 {
				if !s.urgentIn([][]byte{raw}) {
					t.Fatalf("an honest doctor's urgent message %d goes to site peer %d as routine", i+1, site+1)
				}
			}
		}
	})
}

// TestRedteam12UrgentFrameCarriesRoutineBulk: Need puts the urgent ops
// first and then fills the same batch with the oldest routine ones, and
// urgentIn paces a whole frame urgent when one envelope in it is; a frame
// answers one want of siteBatch envelopes of up to maxFrame bytes. So one
// small urgent op, one token of its sender's allowance, carries up to 15
// routine envelopes — photo chunks of MaxChunk, ~7.5 MiB — at urgent
// priority across a budgeted site link, ahead of every routine frame; and
// the urgent op itself arrives only when its whole frame has crossed (the
// frame is decoded whole), minutes later on a slow link if the backlog
// holds photos. A colleague backdating its own photo chunks (the oldest
// routine ops go in with the urgent one) gets urgentBurst × 7.5 MiB at
// once and ~2 MiB/s after at urgent priority, where the allowance meant to
// bound it to small messages (maxUrgentSize).
func TestRedteam12UrgentFrameCarriesRoutineBulk(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := carrierService(t, 1<<20, &now)
	tag := make([]byte, tagLen)
	colleague := newPeerID(t)
	envs := map[crdt.OpID][]byte{}
	need := map[crdt.OpID]uint64{}
	for i := range 40 { // photo chunks, backdated: the oldest routine ops
		e, raw := sprayEnv(t, tag, colleague, now.Add(-time.Duration(40-i)*time.Hour), 512<<10)
		envs[crdt.OpID(e2e.ID(raw))], need[crdt.OpID(e2e.ID(raw))] = raw, e.SyncKey()
	}
	e, raw := sprayEnvUrgent(t, tag, colleague, now, 200) // one small urgent op
	urgent := crdt.OpID(e2e.ID(raw))
	envs[urgent], need[urgent] = raw, e.SyncKey()
	batch := needOrder(need)[:siteBatch] // the first want to the site peer
	if batch[0] != urgent {
		t.Fatal("setup: the urgent op is not first")
	}
	var frame [][]byte
	size := 0
	for _, id := range batch {
		frame = append(frame, envs[id])
		size += len(envs[id])
	}
	if s.urgentIn(frame) && size > maxUrgentSize {
		t.Fatalf("a frame of %d bytes (%d envelopes, %d of them routine) is paced urgent for one urgent op of %d bytes", size, len(frame), len(frame)-1, len(raw))
	}
}
