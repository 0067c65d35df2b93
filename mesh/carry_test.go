package mesh_test

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
)

// carryScene: c is an admitted device that is in no conversation of a's
// and b's; b met c once (so a learns b's entry through c) and is away; a
// meets c, writes to b, and leaves; then b comes back and meets c only.
// A and b are never connected. It returns b (running) and the
// conversation.
func carryScene(t *testing.T, carry bool) (a, b, c *testnet.Peer, id chat.ConversationID, text string) {
	t.Helper()
	ca := testnet.NewCA(t)
	c = testnet.Start(t, ca, ca.Enrol(t, "c"), device.WithCarry(carry))
	bdev := ca.Enrol(t, "b")
	b = testnet.Start(t, ca, bdev, testnet.Boot(c))
	testnet.Eventually(t, 15*time.Second, "b and c admitted", func() bool { return c.N.IsAdmitted(b.ID) && b.N.IsAdmitted(c.ID) })
	b.Stop()
	a = testnet.Start(t, ca, ca.Enrol(t, "a"), testnet.Boot(c))
	testnet.Knows(t, a, b) // b's entry, through c
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	text = "bed 12 needs review"
	op := testnet.Send(t, a, id, text)
	if carry {
		// A learns that c carries it: the message is held.
		testnet.Eventually(t, 20*time.Second, "a's message held by c", func() bool {
			msgs, _ := a.C.Messages(id)
			for _, m := range msgs {
				if m.ID == op {
					return m.State == chat.StateHeld
				}
			}
			return false
		})
	} else {
		// Both sides synced after the message was sent: c was offered
		// nothing to carry, or refused it.
		testnet.Eventually(t, 20*time.Second, "a and c synced since the message", func() bool {
			at, ok := a.M.Synced(c.ID)
			return ok && at >= a.M.Changes()
		})
		if n := c.M.CarriedCount(); n != 0 {
			t.Fatalf("c carries %d envelopes with carriage off", n)
		}
	}
	a.Stop()
	b = testnet.Start(t, ca, bdev, testnet.Boot(c))
	return a, b, c, id, text
}

// TestCarriedByNonMember: a message reaches its recipient through a
// colleague's device that is not in the conversation, and nothing else.
func TestCarriedByNonMember(t *testing.T) {
	_, b, c, id, text := carryScene(t, true)
	testnet.Eventually(t, 30*time.Second, "b reads a's message, carried by c", func() bool {
		return slices.Contains(testnet.Texts(b, id), text)
	})
	if _, err := c.C.Messages(id); err == nil {
		t.Fatal("the carrier holds the conversation")
	}
}

// TestCarriageOff: with carriage off on c, the message does not arrive
// that way.
func TestCarriageOff(t *testing.T) {
	_, b, c, id, _ := carryScene(t, false)
	testnet.Eventually(t, 20*time.Second, "b synced with c", func() bool {
		_, ok := b.M.Synced(c.ID)
		return ok
	})
	if _, err := b.C.Messages(id); err == nil {
		t.Fatal("b holds the conversation though nobody carried it")
	}
	if c.M.CarriedCount() != 0 {
		t.Fatal("c carries with carriage off")
	}
}

// TestCarriedHandedOnce: what a carrier carries of a member's conversation
// goes to the member once — later sessions between them send neither the
// envelope again nor any reconciliation of the carried tag (sync/5; sync/4
// reconciled it whenever the carrier took something new, and offered it
// to everyone).
func TestCarriedHandedOnce(t *testing.T) {
	_, b, c, id, text := carryScene(t, true)
	testnet.Eventually(t, 30*time.Second, "b reads a's message, carried by c", func() bool {
		return slices.Contains(testnet.Texts(b, id), text)
	})
	// Complete sessions each way, started after b had the message: the
	// first ones let any session that was handing already end.
	syncs := func() {
		t.Helper()
		for _, pair := range [][2]*testnet.Peer{{b, c}, {c, b}, {b, c}} {
			now := pair[0].M.Changes()
			testnet.Eventually(t, 20*time.Second, "a complete sync", func() bool {
				pair[0].M.SyncWith(pair[1].ID)
				done, ok := pair[0].M.Synced(pair[1].ID)
				return ok && done >= now
			})
		}
	}
	syncs()
	handed := c.M.SyncBytesByFrame()["hand-envelopes"]
	if handed == 0 {
		t.Fatal("c handed b nothing in a hand phase")
	}
	recon := c.M.SyncBytesByFrame()["recon"] + b.M.SyncBytesByFrame()["recon"]
	syncs()
	if got := c.M.SyncBytesByFrame()["hand-envelopes"]; got != handed {
		t.Fatalf("c handed b %d more bytes of envelopes it had already", got-handed)
	}
	if got := c.M.SyncBytesByFrame()["recon"] + b.M.SyncBytesByFrame()["recon"]; got != recon {
		t.Fatalf("b and c reconciled (%d bytes): they share no conversation", got-recon)
	}
}
