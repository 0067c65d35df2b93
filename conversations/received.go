package conversations

import (
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// ReceivedAt returns, for the messages msgs of conversation id, when a
// recipient first signed a receipt for each (chat.Replica.ReceivedAt);
// messages no recipient has signed for are absent.
func (s *Service) ReceivedAt(id chat.ConversationID, msgs []crdt.OpID) (map[crdt.OpID]time.Time, error) {
	c, err := s.conv(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r.ReceivedAt(msgs), nil
}
