package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// fakeNode is a node whose admitted peers and their roles a test sets.
type fakeNode struct {
	id        peer.ID
	roles     map[peer.ID][]string
	revoked   map[peer.ID]bool
	penalised []peer.ID
}

func (n *fakeNode) ID() peer.ID                                 { return n.id }
func (n *fakeNode) Host() host.Host                             { return nil }
func (n *fakeNode) PubSub() *pubsub.PubSub                      { return nil }
func (n *fakeNode) IsAdmitted(id peer.ID) bool                  { _, ok := n.roles[id]; return ok }
func (n *fakeNode) KnownStaff(id peer.ID) (bool, bool)          { return n.IsAdmitted(id), n.revoked[id] }
func (n *fakeNode) OnAdmitted(func(peer.ID))                    {}
func (n *fakeNode) AwaitAdmitted(context.Context, peer.ID) bool { return true }
func (n *fakeNode) HasRole(id peer.ID, role string) bool        { return slices.Contains(n.roles[id], role) }
func (n *fakeNode) Penalise(id peer.ID)                         { n.penalised = append(n.penalised, id) }

// fakeHolder holds the tags and ops a test sets and records Held calls.
type fakeHolder struct {
	tags [][]byte
	has  map[crdt.OpID]bool
	held []crdt.OpID
}

func (h *fakeHolder) Tags() [][]byte                            { return h.tags }
func (h *fakeHolder) IDs([]byte) []crdt.OpID                    { return nil }
func (h *fakeHolder) Keys([]byte, []crdt.OpID) []uint64         { return nil }
func (h *fakeHolder) Envelopes([]byte, []crdt.OpID) [][]byte    { return nil }
func (h *fakeHolder) Has(_ []byte, id crdt.OpID) bool           { return h.has[id] }
func (h *fakeHolder) Deliver([]byte, []Checked, peer.ID) bool   { return false }
func (h *fakeHolder) Held(_ []byte, ids []crdt.OpID, _ peer.ID) { h.held = append(h.held, ids...) }

func newPeerID(t testing.TB) peer.ID {
	t.Helper()
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PeerID()
}

// testService is a Service on fake parts, started on a cancelled context:
// it subscribes to nothing and starts no goroutine.
func testService(t *testing.T, n *fakeNode, h *fakeHolder, now *time.Time) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &Service{cfg: Config{Node: n, Anchor: true, AnchorTTL: time.Hour, AnchorQuota: 1 << 30, Store: ds.NewMapDatastore(), Now: func() time.Time { return *now }},
		h: h, log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel, carried: map[string]*carrier{},
		subs: map[string]*pubsub.Subscription{}, topics: map[string]*pubsub.Topic{}, adopted: map[peer.ID]int{}}
}

// envelopeBy is an envelope (unsigned: the held path never verifies) by
// sender.
func envelopeBy(t *testing.T, sender peer.ID) []byte {
	t.Helper()
	e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: make([]byte, 16), Sender: []byte(sender),
		Epoch: make([]byte, 32), Body: make([]byte, 8), Sig: make([]byte, 64)}
	rand.Read(e.Body)
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func heldMsg(t *testing.T, ids ...crdt.OpID) []byte {
	t.Helper()
	f := frame{Kind: fWant, Tag: make([]byte, 16)}
	for _, id := range ids {
		f.IDs = append(f.IDs, slices.Clone(id[:]))
	}
	b, err := encodeFrame(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeldAcksOnlyFromAnchorsForOpsSentThem: an acknowledgement counts only
// from a peer with the anchor role, only for our ops served to that very
// peer, once.
func TestHeldAcksOnlyFromAnchorsForOpsSentThem(t *testing.T) {
	self, anchor, other, mallory := newPeerID(t), newPeerID(t), newPeerID(t), newPeerID(t)
	n := &fakeNode{id: self, roles: map[peer.ID][]string{anchor: {RoleAnchor}, other: {RoleAnchor}, mallory: {"nurse"}}}
	h := &fakeHolder{}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, n, h, &now)
	mine, theirs, unsent := envelopeBy(t, self), envelopeBy(t, mallory), envelopeBy(t, self)
	id := func(raw []byte) crdt.OpID { return crdt.OpID(e2e.ID(raw)) }
	s.noteServed(anchor, [][]byte{mine, theirs})
	s.noteServed(mallory, [][]byte{mine}) // no anchor: not recorded
	for _, tc := range []struct {
		name string
		from peer.ID
		ids  []crdt.OpID
		want []crdt.OpID
	}{
		{"a peer without the anchor role", mallory, []crdt.OpID{id(mine)}, nil},
		{"an anchor it was not sent to", other, []crdt.OpID{id(mine)}, nil},
		{"an op never sent", anchor, []crdt.OpID{id(unsent)}, nil},
		{"someone else's op served", anchor, []crdt.OpID{id(theirs)}, nil},
		{"the anchor it was sent to", anchor, []crdt.OpID{id(mine), id(unsent)}, []crdt.OpID{id(mine)}},
		{"the same ack again", anchor, []crdt.OpID{id(mine)}, nil},
	} {
		h.held = nil
		s.takeHeld(tc.from, heldMsg(t, tc.ids...))
		if !slices.Equal(h.held, tc.want) {
			t.Errorf("%s: held %v, want %v", tc.name, h.held, tc.want)
		}
	}
}

// TestSentLogBounds: the record of ops sent to anchors keeps the newest
// maxSentPerPeer per anchor and maxSentPeers anchors, the least recently
// sent to dropped first.
func TestSentLogBounds(t *testing.T) {
	var l sentLog
	p := newPeerID(t)
	var ids []crdt.OpID
	for i := range maxSentPerPeer + 100 {
		var id crdt.OpID
		copy(id[:], fmt.Sprint(i))
		ids = append(ids, id)
	}
	for _, id := range ids {
		l.add(p, []crdt.OpID{id})
	}
	if n := len(l.by[p].ids); n != maxSentPerPeer {
		t.Fatalf("%d IDs recorded for one peer", n)
	}
	if got := l.take(p, ids[:100]); len(got) != 0 {
		t.Fatalf("the oldest were kept: %d", len(got))
	}
	if got := l.take(p, ids[100:]); len(got) != maxSentPerPeer {
		t.Fatalf("the newest: %d of %d", len(got), maxSentPerPeer)
	}
	for range 3 * maxSentPerPeer { // acknowledged entries do not pile up
		l.add(p, ids[:1])
		l.take(p, ids[:1])
	}
	if n := len(l.by[p].order); n > 2*maxSentPerPeer {
		t.Fatalf("order holds %d entries", n)
	}
	first := newPeerID(t)
	l.add(first, ids[:1])
	for range maxSentPeers {
		l.add(newPeerID(t), ids[:1])
	}
	if len(l.by) != maxSentPeers || l.by[first] != nil {
		t.Fatalf("%d peers recorded; the least recent kept: %v", len(l.by), l.by[first] != nil)
	}
}

// TestAdoptionCaps: an anchor adopts at most maxAdoptPerPeer tags from one
// offering peer and maxAdoptTotal in all; another peer's tags are still
// adopted while one is at its cap; tags it holds, or already carries, are
// not adopted again (a later offer refreshes them); carriers that hold
// nothing and nobody offered for the TTL go, with their owner's count.
func TestAdoptionCaps(t *testing.T) {
	self, flooder, honest := newPeerID(t), newPeerID(t), newPeerID(t)
	own := make([]byte, 16)
	h := &fakeHolder{tags: [][]byte{own}}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, &fakeNode{id: self}, h, &now)
	flood := randTags(10000)
	if got := s.accept(flood, flooder); got != maxAdoptPerPeer {
		t.Fatalf("adopted %d of 10,000 tags one peer offered", got)
	}
	if got := s.accept(randTags(10), flooder); got != 0 {
		t.Fatalf("adopted %d more at the cap", got)
	}
	mine := randTags(3)
	if got := s.accept(append([][]byte{own, inboxTag(self), flood[0]}, mine...), honest); got != 3 {
		t.Fatalf("an honest peer's 3 new tags: %d adopted", got)
	}
	// Total: many peers at their cap.
	for range maxAdoptTotal / maxAdoptPerPeer {
		s.accept(randTags(maxAdoptPerPeer), newPeerID(t))
	}
	if s.adoptedTotal != maxAdoptTotal {
		t.Fatalf("%d tags adopted in all (cap %d)", s.adoptedTotal, maxAdoptTotal)
	}
	if got := s.accept(randTags(1), newPeerID(t)); got != 0 {
		t.Fatal("adopted past the total cap")
	}

	// Ageing (TTL an hour): half an hour on, the honest peer offers
	// flood[1] (refreshed); flood[2] holds an envelope. 40 minutes after
	// that, the flooder's other tags go, and its count with them.
	now = now.Add(30 * time.Minute)
	s.accept([][]byte{flood[1]}, honest)
	c := s.carried[hexTag(flood[2])]
	s.holdLocked(c, crdt.OpID{1}, held{at: now, size: 10, sender: flooder})
	now = now.Add(40 * time.Minute)
	s.sweepCarriers(now)
	if s.adopted[flooder] != 2 || s.carried[hexTag(flood[1])] == nil || s.carried[hexTag(flood[2])] == nil || s.carried[hexTag(flood[3])] != nil {
		t.Fatalf("after the TTL: the flooder owns %d carriers", s.adopted[flooder])
	}
	if s.adopted[honest] != 0 || s.adoptedTotal != 2 {
		t.Fatalf("after the TTL: honest owns %d, %d in all", s.adopted[honest], s.adoptedTotal)
	}
	if got := s.accept(randTags(maxAdoptPerPeer), flooder); got != maxAdoptPerPeer-2 {
		t.Fatalf("after its tags aged out the peer adopts %d", got)
	}
}

func randTags(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, 16)
		rand.Read(out[i])
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

func hexTag(t []byte) string { return hex.EncodeToString(t) }

// TestForgedPushesPenaliseTheSender: a colleague pushing a malformed or
// forged envelope on a conversation topic is penalised (gossipsub's
// application score; enough and the node drops it); an envelope whose
// sender we merely do not know yet is refused without a penalty — an
// honest colleague may hold an entry we lack.
func TestForgedPushesPenaliseTheSender(t *testing.T) {
	mallory, alice := newPeerID(t), newPeerID(t)
	n := &fakeNode{id: newPeerID(t), roles: map[peer.ID][]string{mallory: nil, alice: nil}}
	now := time.Now()
	s := testService(t, n, &fakeHolder{}, &now)
	stranger := envelopeBy(t, newPeerID(t)) // well-formed, unsigned
	for _, tc := range []struct {
		name     string
		data     []byte
		penalise bool
	}{
		{"garbage", []byte("not an envelope"), true},
		{"forged signature", stranger, true},
	} {
		n.penalised = nil
		topic := convTopicPrefix + "x"
		m := &pubsub.Message{Message: &pb.Message{Data: tc.data, Topic: &topic}}
		if r := s.validate(context.Background(), mallory, m); r != pubsub.ValidationReject {
			t.Fatalf("%s accepted", tc.name)
		}
		if got := len(n.penalised) == 1 && n.penalised[0] == mallory; got != tc.penalise {
			t.Errorf("%s: penalised %v, want %v", tc.name, n.penalised, tc.penalise)
		}
	}
	// A signed envelope by a sender this node does not know: refused, no
	// penalty for the colleague who forwarded it.
	k, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e.Envelope{Version: e2e.Version, Kind: e2e.KindContent, Tag: make([]byte, 16), Sender: []byte(k.PeerID()),
		Epoch: make([]byte, 32), Body: []byte("sealed")}
	if err := e.Sign(k.Identity); err != nil {
		t.Fatal(err)
	}
	raw, _ := e.Encode()
	n.penalised = nil
	topic := convTopic(e.Tag)
	if r := s.validate(context.Background(), alice, &pubsub.Message{Message: &pb.Message{Data: raw, Topic: &topic}}); r != pubsub.ValidationReject {
		t.Fatal("an unknown sender's envelope accepted")
	}
	if len(n.penalised) != 0 {
		t.Fatal("an honest forwarder was penalised for a sender this node does not know")
	}
}
