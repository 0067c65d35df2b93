package device_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/witness"
)

// Every device deposits its audit head with the anchors it meets, as the
// log grows; the anchor keeps the newest, and the device's status shows
// which entry a witness vouches for. A colleague without the anchor (or
// archive) role keeps nothing.
func TestAuditHeadWitnessedByAnchor(t *testing.T) {
	c := testnet.NewCA(t)
	anchorID := c.Enrol(t, "anchor", "anchor")
	anchor := testnet.Start(t, c, anchorID)
	a := testnet.Start(t, c, c.Enrol(t, "alice"), testnet.Boot(anchor))
	bid := c.Enrol(t, "bob")
	b := testnet.Start(t, c, bid, testnet.Boot(anchor))
	testnet.Knows(t, a, b)
	id, err := a.C.Create("Ward 4", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "joined", func() bool { return testnet.Joined(b, id, 2) })
	testnet.Send(t, a, id, "bed 2 for review")
	if err := a.D.Audit().Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := a.D.Audit().Head()
	if want.Seq == 0 {
		t.Fatal("alice recorded nothing")
	}
	testnet.Eventually(t, 30*time.Second, "the anchor holds alice's newest head", func() bool {
		h, ok, err := witness.Held(context.Background(), anchorID.Store, a.ID)
		return err == nil && ok && h.Seq >= want.Seq
	})
	testnet.Eventually(t, 30*time.Second, "alice's status shows the witnessed head", func() bool {
		w := a.D.Audit().Stats().Witnessed
		return w != nil && w.Seq >= want.Seq && w.Peer == anchor.ID.String()
	})
	if w := a.D.Audit().Stats().Witnessed; w.Error != "" {
		t.Fatalf("alice's log does not vouch for the witnessed head: %s", w.Error)
	}
	if _, ok, _ := witness.Held(context.Background(), bid.Store, a.ID); ok {
		t.Fatal("bob, no anchor, keeps alice's head")
	}
}
