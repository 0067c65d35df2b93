package mesh_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestRedteam12UrgentSlotsTakenSiteLink: TestRedteam12NeedOrderUrgent-
// FloodStarvesHonestUrgent end to end. X (a colleague: honest code, only
// many urgent messages) writes a routine backlog and then urgentFirst
// urgent messages while offline; Y writes one urgent message just after, which X gets first (they meet on the ward).
// The far anchor lists them all urgent (the listed keys carry the bit, no
// allowance applies to them), takes X's as the oldest urgent ops first,
// and sorts Y's, the newest op of all, after the whole backlog: it
// crosses the 8 KiB/s link last, as before sync/6. (Without X's urgent
// messages, the same run has Y's cross before any of the backlog.)
func TestRedteam12UrgentSlotsTakenSiteLink(t *testing.T) {
	w := newSiteWorld(t)
	id, tag := w.conversation(t, w.x, "ward")
	x, y := w.offline(t, w.x), w.offline(t, w.y)
	routine := backlog(t, x, id, backlogSize)
	for i := range 16 { // urgentFirst = siteBatch
		if _, err := x.C.Send(id, fmt.Sprintf("urgent %d", i), chat.SendOptions{Urgent: true}); err != nil {
			t.Fatal(err)
		}
	}
	urgent, err := y.C.Send(id, "bed 4 arrest", chat.SendOptions{Urgent: true})
	if err != nil {
		t.Fatal(err)
	}
	// Y's message reaches X first, so that site A's anchor takes all of
	// them in at once (else Y's lone op crosses in a round of its own).
	testnet.Connect(t, y, x)
	testnet.Eventually(t, 30*time.Second, "X holds Y's urgent message", func() bool {
		return slices.Contains(x.M.IDsOf(tag), urgent)
	})
	y.Stop()
	testnet.Connect(t, x, w.a)
	n := w.crossedBefore(t, urgent, routine)
	t.Logf("the urgent message crossed after %d of the %d-message backlog", n, backlogSize)
	if n >= backlogSize/2 {
		t.Fatalf("Y's urgent message crossed after %d of the %d-message routine backlog: X's 16 urgent messages took the urgent slots", n, backlogSize)
	}
}
