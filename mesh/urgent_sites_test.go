package mesh_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// arrivals records the order in which an anchor takes in ops.
type arrivals struct {
	mu    sync.Mutex
	order []crdt.OpID
	seen  map[crdt.OpID]bool
}

func (a *arrivals) observe(id crdt.OpID, _ peer.ID, dup bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[crdt.OpID]bool{}
	}
	if !dup && !a.seen[id] {
		a.seen[id] = true
		a.order = append(a.order, id)
	}
}

// before reports whether id has arrived, and how many of set came before it.
func (a *arrivals) before(id crdt.OpID, set map[crdt.OpID]bool) (arrived bool, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.order {
		if x == id {
			return true, n
		}
		if set[x] {
			n++
		}
	}
	return false, n
}

// siteWorld is two sites: anchor a (site A, where X and Y are) and anchor
// b (site B, far) list each other as site peers with the smallest budget,
// 8 KiB/s.
// a waits 2 s after anything new before syncing (so what X and Y bring it
// at once crosses in one session), and neither anchor syncs periodically
// within a test.
type siteWorld struct {
	c    *testnet.CA
	a, b *testnet.Peer
	far  *arrivals
	x, y *testnet.Peer
}

const siteBudget = 8 << 10

func newSiteWorld(t *testing.T) *siteWorld {
	t.Helper()
	w := &siteWorld{c: testnet.NewCA(t), far: &arrivals{}}
	idA := w.c.Enrol(t, "anchor-a", mesh.RoleAnchor)
	// Each anchor lists the other (b has no address for a: a dials).
	w.b = testnet.Start(t, w.c, w.c.Enrol(t, "anchor-b", mesh.RoleAnchor), device.WithAnchor(0, 0),
		device.WithTimers(time.Minute, 0), device.WithObserve(w.far.observe),
		device.WithSitePeers(siteBudget, peer.AddrInfo{ID: idA.Key.PeerID()}))
	w.a = testnet.Start(t, w.c, idA, device.WithAnchor(0, 0),
		device.WithTimers(time.Minute, 2*time.Second),
		device.WithSitePeers(siteBudget, peer.AddrInfo{ID: w.b.ID, Addrs: w.b.N.Host().Addrs()}))
	w.x = testnet.Start(t, w.c, w.c.Enrol(t, "x"), testnet.Boot(w.a))
	w.y = testnet.Start(t, w.c, w.c.Enrol(t, "y"), testnet.Boot(w.a))
	testnet.Eventually(t, 30*time.Second, "the site link is up", func() bool {
		l := w.a.N.SiteLinks()
		return len(l) == 1 && l[0].Up
	})
	testnet.Knows(t, w.x, w.y)
	testnet.Knows(t, w.y, w.x)
	// The far anchor learns X's and Y's certificates from site A's
	// directory forwards; until then it refuses their ops, and one refused
	// is fetched again only in a later session.
	testnet.Knows(t, w.b, w.x, w.y)
	return w
}

// conversation makes a conversation of X and Y (created by by) and waits
// until both joined and the far anchor holds what site A's anchor does.
func (w *siteWorld) conversation(t *testing.T, by *testnet.Peer, title string) (chat.ConversationID, []byte) {
	t.Helper()
	other := w.y
	if by == w.y {
		other = w.x
	}
	id, err := by.C.Create(title, []peer.ID{other.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 30*time.Second, "both joined "+title, func() bool {
		return testnet.Joined(w.x, id, 2) && testnet.Joined(w.y, id, 2)
	})
	tag := chat.TagOf(id, by.ID)
	testnet.Eventually(t, 60*time.Second, title+" crossed to the far site", func() bool {
		n := len(w.a.M.IDsOf(tag))
		return n > 0 && len(w.b.M.IDsOf(tag)) >= n
	})
	return id, tag
}

// offline stops p and starts it again with its store and no peers.
func (w *siteWorld) offline(t *testing.T, p *testnet.Peer) *testnet.Peer {
	t.Helper()
	p.Stop()
	return testnet.Start(t, w.c, p.Ident)
}

// backlog writes n routine messages of about 300 bytes on p.
func backlog(t *testing.T, p *testnet.Peer, id chat.ConversationID, n int) map[crdt.OpID]bool {
	t.Helper()
	out := map[crdt.OpID]bool{}
	for i := range n {
		out[testnet.Send(t, p, id, fmt.Sprintf("routine %d %s", i, strings.Repeat("·", 140)))] = true
	}
	return out
}

// crossedBefore waits until urgent reaches the far anchor and returns how
// many of the backlog had arrived there before it.
func (w *siteWorld) crossedBefore(t *testing.T, urgent crdt.OpID, routine map[crdt.OpID]bool) int {
	t.Helper()
	var n int
	testnet.Eventually(t, 3*time.Minute, "the urgent message crossed", func() bool {
		var ok bool
		ok, n = w.far.before(urgent, routine)
		return ok
	})
	return n
}

const backlogSize = 120

// TestUrgentCrossesSiteLinkBeforeBacklog: X writes a routine backlog in a
// conversation while Y, another member, writes an urgent message there
// that does not depend on it (both offline, then back at site A at once).
// Across a site link of 8 KiB/s the urgent message reaches the far
// anchor before most of the backlog: the far anchor learns from the listed
// keys which op is urgent and fetches it first, though it is the newest.
// Before sync/6 it came after every op of the backlog (causal order).
func TestUrgentCrossesSiteLinkBeforeBacklog(t *testing.T) {
	w := newSiteWorld(t)
	id, _ := w.conversation(t, w.x, "ward")
	routine := w.urgentAheadOfBacklog(t, id, id, "bed 4 arrest")
	testnet.Eventually(t, 3*time.Minute, "the backlog crossed too", func() bool {
		for id := range routine {
			if ok, _ := w.far.before(id, nil); !ok {
				return false
			}
		}
		return true
	})
}

// TestUrgentCrossesSiteLinkAcrossConversations: the same with the urgent
// message in another conversation, written by Y (a device, not the
// anchor): the anchor paces a frame holding it ahead of the backlog's
// frames, since its signed header says it is urgent.
func TestUrgentCrossesSiteLinkAcrossConversations(t *testing.T) {
	w := newSiteWorld(t)
	ward, _ := w.conversation(t, w.x, "ward")
	theatre, _ := w.conversation(t, w.y, "theatre")
	w.urgentAheadOfBacklog(t, ward, theatre, "theatre 2 now")
}

// urgentAheadOfBacklog takes X and Y offline, has X write a routine
// backlog in conversation backlogIn and Y an urgent message in urgentIn,
// brings both back to site A's anchor at once, and fails unless the urgent
// message reaches the far site before half the backlog has. It returns
// the backlog's ops.
func (w *siteWorld) urgentAheadOfBacklog(t *testing.T, backlogIn, urgentIn chat.ConversationID, text string) map[crdt.OpID]bool {
	t.Helper()
	x, y := w.offline(t, w.x), w.offline(t, w.y)
	routine := backlog(t, x, backlogIn, backlogSize)
	urgent, err := y.C.Send(urgentIn, text, chat.SendOptions{Urgent: true})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Connect(t, x, w.a)
	testnet.Connect(t, y, w.a)
	n := w.crossedBefore(t, urgent, routine)
	t.Logf("the urgent message crossed after %d of the %d-message backlog", n, backlogSize)
	if n >= backlogSize/2 {
		t.Fatalf("the urgent message crossed after %d of the %d-message backlog", n, backlogSize)
	}
	return routine
}

// TestUrgentOvertakesSessionInFlight: X's routine backlog is already
// crossing the site link (the far anchor holds part of it) when Y comes
// back with an urgent message in the same conversation. Site A's anchor
// starts an urgent session at once, beside the one moving the backlog:
// the urgent message crosses before the rest of the backlog — behind at
// most what that session had already asked for — instead of waiting for
// that session to end and the next round to begin.
func TestUrgentOvertakesSessionInFlight(t *testing.T) {
	w := newSiteWorld(t)
	id, tag := w.conversation(t, w.x, "ward")
	x, y := w.offline(t, w.x), w.offline(t, w.y)
	routine := backlog(t, x, id, backlogSize)
	urgent, err := y.C.Send(id, "bed 4 arrest", chat.SendOptions{Urgent: true})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Connect(t, x, w.a)
	testnet.Eventually(t, 2*time.Minute, "the backlog began to cross", func() bool {
		_, n := w.far.before(crdt.OpID{}, routine) // the zero ID never arrives: counts all
		return n > 0
	})
	testnet.Connect(t, y, w.a)
	// Counted from when site A's anchor holds the urgent message: how
	// long Y's admission and sync take on a loaded machine is not the
	// anchor's doing, and the backlog crosses meanwhile.
	testnet.Eventually(t, time.Minute, "site A's anchor holds the urgent message", func() bool {
		_, held := slices.BinarySearchFunc(w.a.M.IDsOf(tag), urgent, crdt.OpID.Compare)
		return held
	})
	_, started := w.far.before(crdt.OpID{}, routine)
	n := w.crossedBefore(t, urgent, routine)
	t.Logf("the backlog had %d of %d across when site A's anchor took the urgent message; %d when it crossed", started, backlogSize, n)
	// At most the two batches of 16 the backlog's session had asked for
	// may still cross first (before sync/7: 32 more, waiting on claims,
	// and the urgent session's offer and recon behind the backlog).
	if n-started > 2*16 {
		t.Fatalf("%d of the backlog crossed after Y came back, before the urgent message", n-started)
	}
}

// TestUrgentSessionOffersOnlyItsTags: an urgent session lists only the
// conversations it is for, both ways — not every tag the anchors hold,
// which across a small budget would cross before the urgent op does
// (300 more tags each: about 10 KiB of offer, 1.2 s at 8 KiB/s, each way).
func TestUrgentSessionOffersOnlyItsTags(t *testing.T) {
	w := newSiteWorld(t)
	_, tag := w.conversation(t, w.x, "ward")
	w.a.M.AddCarriers(300)
	w.b.M.AddCarriers(300)
	offered := func() (int64, int64) {
		return w.a.M.SyncBytesByFrame()["offer"], w.b.M.SyncBytesByFrame()["offer"]
	}
	a0, b0 := offered()
	if err := w.a.M.UrgentSession(w.b.ID, tag); err != nil {
		t.Fatal(err)
	}
	a1, b1 := offered()
	t.Logf("urgent session offers: %d B out, %d B back", a1-a0, b1-b0)
	if a1-a0 > 512 || b1-b0 > 512 {
		t.Fatalf("an urgent session for one conversation offered %d B out and %d B back", a1-a0, b1-b0)
	}
}
