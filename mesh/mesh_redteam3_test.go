package mesh_test

// Red-team round 3 (attacks on the device wiring; the tests named after
// the attack they stop; the open ones skip with the issue that closes them): what an admitted colleague can do to an anchor through
// the tags it offers in sync.

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// rtFrame mirrors the sync frame's wire form (mesh/sync.go).
type rtFrame struct {
	Kind uint8    `cbor:"1,keyasint"`
	Tags [][]byte `cbor:"2,keyasint,omitempty"`
}

// rtOfferTags opens /medmesh/sync/1 from p to x and offers n random tags.
func rtOfferTags(t *testing.T, p, x *testnet.Peer, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.N.Host().NewStream(ctx, x.ID, mesh.ProtoSync)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := rtFrame{Kind: 1}
	for range n {
		tag := make([]byte, 16)
		rand.Read(tag)
		f.Tags = append(f.Tags, tag)
	}
	b, err := detcbor.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := msgio.NewVarintWriter(st).WriteMsg(b); err != nil {
		t.Fatal(err)
	}
	r := msgio.NewVarintReaderSize(st, 8<<20)
	if _, err := r.ReadMsg(); err != nil { // the anchor's offer: it has accepted ours
		t.Fatal(err)
	}
}

// TestRedteam3TagFloodBreaksAnchorSync: an anchor adopts (and subscribes
// to) every 16-byte tag any admitted peer offers, with no cap per offering
// peer (DESIGN: "within a cap per offering peer"), and offers every tag it
// carries in each sync. One offer of 4096 made-up tags takes the anchor
// past maxTags: from then on every peer refuses the anchor's own offer as
// "frame too large", in both directions, so the anchor's store-and-forward
// stops for everyone. Bob, who was away, never gets the message the
// anchor holds for him.
func TestRedteam3TagFloodBreaksAnchorSync(t *testing.T) {
	t.Skip("open (issue \"Hardened against hostile networks\": tags per offering peer, offers that scale): an anchor adopts every tag offered")
	if !rtAnchorCarriesToBob(t, 0) {
		t.Fatal("control: without the flood bob does not get the message either")
	}
	if !rtAnchorCarriesToBob(t, 4096) {
		t.Fatal("FINDING: after one peer offered 4096 made-up tags, the anchor's sync is refused by every peer: bob never gets the message the anchor holds")
	}
}

func rtAnchorCarriesToBob(t *testing.T, flood int) bool {
	c := testnet.NewCA(t)
	x := start(t, c, c.Enrol(t, "anchor", mesh.RoleAnchor), true)
	a := start(t, c, c.Enrol(t, "alice"), false, x)
	bid := c.Enrol(t, "bob")
	b := start(t, c, bid, false, x)
	m := start(t, c, c.Enrol(t, "mallory"), false, x)
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	b.Stop()
	testnet.Eventually(t, 15*time.Second, "mallory admitted by the anchor", func() bool { return x.N.IsAdmitted(m.ID) })
	rtOfferTags(t, m, x, flood)
	m.Stop()
	testnet.Send(t, a, id, "for bob, via the anchor")
	tag := a.C.Tags()[0]
	testnet.Eventually(t, 15*time.Second, "the anchor carries it", func() bool { return len(x.M.IDsOf(tag)) >= len(a.M.IDsOf(tag)) })
	a.Stop()
	time.Sleep(7 * time.Second) // past gossipsub's message cache: only sync can bring it now
	b = start(t, c, bid, false, x)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if slices.Contains(testnet.Texts(b, id), "for bob, via the anchor") {
			b.Stop()
			x.Stop()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Stop()
	x.Stop()
	return false
}

// rtGhostWelcome is a welcome by from for a made-up tag naming victim as a
// holder, sealing it nothing.
func rtGhostWelcome(t *testing.T, from *testnet.Peer, victim *testnet.Peer, sealed bool) []byte {
	t.Helper()
	var to []e2e.Recipient
	if sealed {
		to = []e2e.Recipient{{ID: victim.ID, KEM: victim.Ident.Key.KEM.PublicKey().Bytes()}}
	}
	tag := make([]byte, 16)
	rand.Read(tag)
	conv := make([]byte, 16)
	rand.Read(conv)
	e := e2e.New(tag, from.ID, nil)
	if err := e2e.SealWelcome(e, e2e.NewSecret(), e2e.EpochKeys{Conv: conv, Creator: []byte(from.ID)}, []peer.ID{from.ID, victim.ID}, to); err != nil {
		t.Fatal(err)
	}
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

// TestGhostWelcomesDoNotBreakSync: any admitted colleague can publish
// welcomes on a victim's inbox topic. One that merely names the victim
// (nothing sealed to it) is not joined; one with a share sealed to it is,
// until MaxUnopened conversations wait for a welcome to open — so a flood
// cannot push the victim's sync offer past what peers accept, and its
// anti-entropy keeps working.
func TestGhostWelcomesDoNotBreakSync(t *testing.T) {
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "alice"), false)
	v := start(t, c, c.Enrol(t, "victim"), false, a)
	m := start(t, c, c.Enrol(t, "mallory"), false, v)
	testnet.Knows(t, a, v)
	if _, err := a.C.Create("ward", []peer.ID{v.ID}); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "admitted", func() bool { return len(v.C.Tags()) == 1 && v.N.IsAdmitted(m.ID) })
	synced := func() bool {
		c0 := v.M.Changes()
		v.M.SyncWith(a.ID)
		at, ok := v.M.Synced(a.ID)
		return ok && at == c0
	}
	testnet.Eventually(t, 10*time.Second, "control: the victim syncs with alice", synced)

	topic, err := m.N.PubSub().Join("/medmesh/inbox/" + v.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	publish := func(n int, sealed bool) {
		for range n {
			if err := topic.Publish(context.Background(), rtGhostWelcome(t, m, v, sealed)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(200, false)
	publish(2*conversations.MaxUnopened, true)
	testnet.Eventually(t, 15*time.Second, "the victim took the sealed ones up to its bound", func() bool {
		return len(v.C.Tags()) == 1+conversations.MaxUnopened
	})
	publish(50, true)
	testnet.Eventually(t, 10*time.Second, "the victim still syncs", synced)
	if n := len(v.C.Tags()); n > 1+conversations.MaxUnopened {
		t.Fatalf("the victim holds %d tags after the flood (bound %d)", n, 1+conversations.MaxUnopened)
	}
	if n := len(v.C.Conversations()); n != 1 {
		t.Fatalf("the victim lists %d conversations", n)
	}
}

// TestRedteam3AnyPeerCanClaimHeld: /medmesh/held/1 takes an
// acknowledgement from any admitted peer, for any tag and op IDs, and
// marks our ops "held by another node". Mallory — no anchor, not a member,
// storing nothing — makes alice's message, which nobody else has, show
// "held", so alice believes it is safe to walk out of signal. (Op IDs are
// not secret: range reconciliation of a tag reveals them to anyone who
// offers the tag.)
func TestRedteam3AnyPeerCanClaimHeld(t *testing.T) {
	t.Skip("open (issue \"Every colleague carries\" redefines held): /medmesh/held/1 takes acknowledgements from any admitted peer")
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "alice"), false)
	b := start(t, c, c.Enrol(t, "bob"), false, a)
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	b.Stop()
	op := testnet.Send(t, a, id, "only on alice's phone")
	m := start(t, c, c.Enrol(t, "mallory"), false, a)
	testnet.Eventually(t, 15*time.Second, "admitted", func() bool { return a.N.IsAdmitted(m.ID) })
	time.Sleep(time.Second) // mallory's own device has synced with alice: it acks nothing (no anchor)
	if msgs, _ := a.C.Messages(id); len(msgs) == 0 || msgs[len(msgs)-1].State != "queued" {
		t.Fatalf("precondition: the message is not queued: %+v", msgs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := m.N.Host().NewStream(ctx, a.ID, mesh.ProtoHeld)
	if err != nil {
		t.Fatal(err)
	}
	type heldFrame struct {
		Kind uint8    `cbor:"1,keyasint"`
		Tag  []byte   `cbor:"3,keyasint,omitempty"`
		IDs  [][]byte `cbor:"5,keyasint,omitempty"`
	}
	raw, _ := detcbor.Marshal(heldFrame{Kind: 3, Tag: a.C.Tags()[0], IDs: [][]byte{op[:]}})
	msgio.NewVarintWriter(st).WriteMsg(raw)
	st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		msgs, _ := a.C.Messages(id)
		for _, x := range msgs {
			if x.ID == op && x.State == "held" {
				t.Fatal("FINDING: a peer that stores nothing made alice's queued message show 'held by another node'")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}
