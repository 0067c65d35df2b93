package device

import (
	"context"
	"errors"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// RecordExport records in the audit trail that messages msgs of
// conversation conv left the device (an export to the record): "exported"
// events naming the conversation and at most audit.MaxOps message IDs
// each. Unlike Record it appends at once and reports failure, so that an
// export the trail cannot record does not happen (it implements
// fhir.Recorder).
func (t *Trail) RecordExport(conv chat.ConversationID, msgs []crdt.OpID) error {
	switch {
	case t == nil || t.last.Load():
		return errors.New("audit trail closed: export not recorded")
	case t.broken != nil:
		t.stats.failed.Add(1)
		return errors.New("audit trail unreadable: export not recorded")
	}
	ops := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ops = append(ops, m.String())
	}
	evs := audit.Chunked(audit.Exported, audit.IDs{Conversation: conv.String()}, ops)
	if _, err := t.log.Append(context.Background(), evs...); err != nil {
		t.stats.failed.Add(uint64(len(evs)))
		return errors.New("audit trail: export not recorded")
	}
	return nil
}
