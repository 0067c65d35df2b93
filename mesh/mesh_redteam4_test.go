package mesh

// Red-team round 4: what an admitted colleague can make an anchor do with
// the envelopes it answers in sync.

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// TestRedteam4ReplayedEnvelopesEvictTheirSender: attack — mallory, an
// admitted colleague, offers the anchor made-up tags (it adopts up to 256
// of hers), and in the sync sessions that reconcile them answers the
// anchor's wants with envelopes the anchor never asked for: copies of
// alice's real, signed envelopes (mallory holds them: she is in one of
// alice's conversations, or simply received them by gossip as any peer on
// the topic does). mesh.fetch hands whatever comes in an fEnvs frame to
// apply under the tag being reconciled — no check that the IDs are the
// ones wanted, nor that the envelope's own tag is that tag — so the anchor
// carries each copy again under every one of mallory's tags, and charges
// every copy to alice's per-sender share. Once alice is over her share the
// anchor drops alice's OLDEST envelopes: the genuine ones, carried for her
// offline colleague. Impact: one insider deletes any colleague's messages
// from the anchors (the documented guarantee "one device never evicts
// another's envelopes" fails), and alice's app keeps showing them "held"
// by the anchor that no longer has them: the store-and-forward a basement
// clinician relies on silently loses messages. (Here the sync path is
// driven at apply, where the fetched frame lands.)
func TestRedteam4ReplayedEnvelopesEvictTheirSender(t *testing.T) {
	anchorID, mallory := newPeerID(t), newPeerID(t)
	alice, err := identity.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{id: anchorID, roles: map[peer.ID][]string{mallory: {"nurse"}, alice.PeerID(): {"doctor"}}}
	now := time.Unix(1_700_000_000, 0)
	s := testService(t, n, &fakeHolder{}, &now)
	s.cfg.AnchorQuota = 16 << 20 // a small anchor: a sender's share is 4 MiB
	share := s.senderShare()

	// Alice's real conversation with bob (offline): 8 messages of 64 KiB,
	// pushed by gossip and carried by the anchor (her "held").
	convTag := make([]byte, tagLen)
	rand.Read(convTag)
	var genuine []Checked
	for range 8 {
		e := e2e.New(convTag, alice.PeerID(), nil)
		e.Kind = e2e.KindContent
		e.Epoch = make([]byte, 32)
		e.Body = make([]byte, 64<<10)
		rand.Read(e.Body)
		e.Wall = now.UnixMilli()
		if err := e.Sign(alice.Identity); err != nil {
			t.Fatal(err)
		}
		raw, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		ce, err := s.check(raw, false)
		if err != nil {
			t.Fatal(err)
		}
		genuine = append(genuine, Checked{ce, raw})
		s.deliver(convTag, []Checked{{ce, raw}}, alice.PeerID())
	}
	if got := len(s.carried[hexTag(convTag)].ops); got != len(genuine) {
		t.Fatalf("control: the anchor carries %d of alice's %d envelopes", got, len(genuine))
	}
	now = now.Add(time.Minute)

	// Mallory: her tags adopted, then one sync session per tag whose
	// fetched frame is alice's envelopes again.
	tags := randTags(maxAdoptPerPeer)
	s.accept(tags, mallory)
	raws := make([][]byte, len(genuine))
	for i, g := range genuine {
		raws[i] = g.Raw
	}
	sessions := 0
	for _, tag := range tags {
		if int64(sessions*len(raws)*(64<<10)) > 2*share {
			break
		}
		s.apply(tag, raws, mallory)
		sessions++
	}
	left := 0
	c := s.carried[hexTag(convTag)]
	for _, g := range genuine {
		if _, ok := c.ops[crdt.OpID(e2e.ID(g.Raw))]; ok {
			left++
		}
	}
	if left != len(genuine) {
		t.Fatalf("after %d sync sessions in which mallory replayed alice's envelopes under her own tags, the anchor carries %d of alice's %d genuine envelopes for bob (share %d bytes)",
			sessions, left, len(genuine), share)
	}
}
