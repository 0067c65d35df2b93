package conversations

import (
	"sync"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/internal/fifo"
)

// recentOps is how many of a conversation's most recently applied ops
// recent remembers.
const recentOps = 256

// recent is a bounded set of the ops of others a conversation applied
// most recently (as they came, not those applied later when a missing
// dependency arrived), with a lock of its own. The mesh asks it (Has), for
// every envelope it takes in, whether this is a copy of an op already
// applied — gossip and a sync round racing each other bring such copies,
// soon after the first — which then costs neither a signature check nor a
// delivery. Asking the replica would wait on the conversation's lock,
// which a batch holds while it is made durable. An op that fell out is
// checked in full, as any other.
type recent struct {
	mu  sync.Mutex
	set *fifo.Map[crdt.OpID, struct{}] // made on first use: a quiet conversation pays little
}

func (r *recent) add(id crdt.OpID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set = fifo.New[crdt.OpID, struct{}](recentOps)
	}
	r.set.Put(id, struct{}{})
}

func (r *recent) has(id crdt.OpID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		return false
	}
	_, ok := r.set.Get(id)
	return ok
}
