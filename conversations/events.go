package conversations

import (
	"sync"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// Event kinds.
const (
	// EventConversation: a conversation appeared (created or joined).
	EventConversation = "conversation"
	// EventMessage: ops of a conversation were made or taken in.
	EventMessage = "message"
	// EventState: delivery state changed (another node holds our ops).
	EventState = "state"
)

// Event tells the app what changed: which conversation, and the ops
// (messages, edits, receipts…) it concerns, so it can update that one
// conversation instead of re-reading everything.
type Event struct {
	Kind         string
	Conversation chat.ConversationID
	Ops          []crdt.OpID
}

// broker fans events out to subscribers; a slow subscriber loses events
// rather than blocking the mesh.
type broker struct {
	mu     sync.Mutex
	subs   map[chan Event]struct{}
	closed bool
}

func newBroker() *broker { return &broker{subs: map[chan Event]struct{}{}} }

func (b *broker) emit(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.subs {
		select {
		case c <- e:
		default:
		}
	}
}

func (b *broker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for c := range b.subs {
		close(c)
		delete(b.subs, c)
	}
}

// Events subscribes to changes; call cancel when done.
func (s *Service) Events() (<-chan Event, func()) {
	b := s.events
	c := make(chan Event, 64)
	b.mu.Lock()
	if b.closed {
		close(c)
	} else {
		b.subs[c] = struct{}{}
	}
	b.mu.Unlock()
	return c, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[c]; ok {
			delete(b.subs, c)
			close(c)
		}
	}
}
