package conversations

import (
	"fmt"
	"testing"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
)

func TestChunkedAuditEvents(t *testing.T) {
	var conv chat.ConversationID
	conv[0] = 1
	var ops []string
	for i := range audit.MaxOps*2 + 1 {
		ops = append(ops, fmt.Sprint(i))
	}
	evs := chunked(audit.Read, conv, "", ops)
	if len(evs) != 3 || len(evs[0].IDs.Ops) != audit.MaxOps || len(evs[2].IDs.Ops) != 1 || evs[2].IDs.Ops[0] != ops[len(ops)-1] {
		t.Fatalf("%d events", len(evs))
	}
	for _, ev := range evs {
		if ev.IDs.Conversation != conv.String() || ev.IDs.Peer != "" || ev.Kind != audit.Read {
			t.Fatalf("%+v", ev)
		}
	}
	if evs := chunked(audit.Sent, conv, "", nil); len(evs) != 1 || len(evs[0].IDs.Ops) != 0 {
		t.Fatalf("no ops: %+v", evs)
	}
}
