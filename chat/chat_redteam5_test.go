package chat

// Red-team round 5 on cumulative receipts: each test fails on the code it
// was written against; the failure is the finding.

import (
	"errors"
	"testing"

	"github.com/medmesh/medmesh/crdt"
)

// TestRedteam5UnreadableFloodStopsReceipts: a cumulative receipt must
// except every content op its device holds, was a recipient of and cannot
// read (unreadable), and is refused outright when there are more than
// maxTargets (1,024) of them; only a receipt that was made records its
// exceptions (r.excepted), so the count never goes down. A malicious
// member sends, in one burst, 1,025 content ops in the current epoch at
// fresh chain indices whose bodies are garbage: each is authorised (a
// member, in an epoch it holds, neither void nor equivocal), stored, and
// unreadable for ever. From then on the victim cannot make any delivered
// or read receipt in the conversation — every sender sees the victim
// stuck at "queued"/"held" for every later message, although its device
// has them and its user reads them. Impact: one member silences another
// member's delivery and read states for good (a lying "not delivered" on
// urgent clinical messages, which senders act on).
func TestRedteam5UnreadableFloodStopsReceipts(t *testing.T) {
	w := newWorld(t)
	alice, bob, mallory := w.device("alice"), w.device("bob"), w.device("mallory")
	ra, rb, rm := unpack3(w.group("t", alice, bob, mallory))
	ep, _ := rm.current(rm.headView())
	refused := 0
	for i := range maxTargets + 1 {
		// Garbage bodies (sealRaw without a chain); rb stores each and
		// reports that it cannot open it.
		if err := rb.Receive(sealRaw(t, rm, ep, nil, "", uint32(100+i))); errors.Is(err, ErrNotAuthorised) {
			refused++
		}
	}
	if refused > 0 {
		t.Fatalf("setup: %d garbage ops refused as unauthorised", refused)
	}
	ok := must[crdt.OpID](t)
	msg, m := ok(split(ra.Send("urgent: bed 4", SendOptions{})))
	deliver(t, msg, rb)
	out, err := rb.Receipt(Delivered)
	if err == nil && len(out.Envelopes) > 0 {
		deliver(t, out.Envelopes, ra)
	}
	if got := levelOf(t, ra, m, bob.ID); got < Delivered {
		t.Fatalf("FINDING: after mallory's %d unreadable ops bob holds alice's message but cannot acknowledge "+
			"delivery (receipt error: %v); alice sees bob at level %d for ever", maxTargets+1, err, got)
	}
	read, err := rb.Receipt(Read, m)
	if err != nil {
		t.Fatalf("FINDING: bob read alice's message but cannot say so: %v", err)
	}
	deliver(t, read.Envelopes, ra)
}
