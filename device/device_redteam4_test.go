package device_test

// Red-team round 4: delivery states after the anchor that held a message
// is revoked.

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// TestRedteam4HeldOutlivesRevokedAnchor: attack — the site anchor is
// compromised (or its server stolen) and the CA revokes it. Alice's
// message to bob, who is away, shows "held" because that anchor
// acknowledged storing it. A revoked anchor is cut off by every device
// and wipes its store key as soon as it learns the CRL — so the envelope
// it held is gone or out of reach of everyone — but alice's replica keeps
// the anchor's acknowledgement (chat.Replica.MarkHeld) for ever, and
// nothing re-judges it on revocation. Impact: "held by another node" lies:
// alice walks out of signal believing her message is safe on the anchor,
// while it exists only on her phone; the curious or malicious anchor
// operator keeps "held" states green simply by having acknowledged.
func TestRedteam4HeldOutlivesRevokedAnchor(t *testing.T) {
	c := testnet.NewCA(t)
	xid := c.Enrol(t, "anchor", mesh.RoleAnchor)
	x := testnet.Start(t, c, xid, device.WithAnchor(0, 0))
	a := testnet.Start(t, c, c.Enrol(t, "alice"), testnet.Boot(x))
	b := testnet.Start(t, c, c.Enrol(t, "bob"), testnet.Boot(x))
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	b.Stop() // bob goes off shift
	op := testnet.Send(t, a, id, "bed 4 potassium 6.8, please review")
	state := func() string {
		msgs, _ := a.C.Messages(id)
		for _, m := range msgs {
			if m.ID == op {
				return m.State
			}
		}
		return ""
	}
	testnet.Eventually(t, 15*time.Second, "held by the anchor", func() bool { return state() == chat.StateHeld })

	// The anchor is revoked; alice learns it (and hands it to the anchor,
	// which wipes itself).
	if _, err := a.N.SubmitCRL(context.Background(), c.CRL(t, 1, xid)); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "alice judges the anchor revoked", func() bool { _, r := a.N.KnownStaff(x.ID); return r })
	testnet.Eventually(t, 15*time.Second, "the anchor stopped itself", func() bool {
		select {
		case <-x.D.Done():
			return true
		default:
			return false
		}
	})
	testnet.Eventually(t, 10*time.Second, "alice's message no longer shown held by the revoked (and wiped) anchor, the only node that had it", func() bool {
		return state() != chat.StateHeld
	})
}
