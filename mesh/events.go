package mesh

import "sync"

// Event tells the local app something changed.
type Event struct {
	Type         string `json:"type"` // conversation, message, state
	Conversation string `json:"conversation"`
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
