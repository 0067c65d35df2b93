package crdt

import "sync"

// Store keeps applied ops. Implementations: MemStore here; the persisted one
// over the encrypted store lives with the mesh. Both pass crdttest.Run.
type Store interface {
	Put(op Op) error
	Get(id OpID) (Op, error) // ErrNotFound when absent
	Has(id OpID) (bool, error)
	Delete(id OpID) error // idempotent
	// ForEach calls fn for every op, in no particular order.
	ForEach(fn func(Op) error) error
	Len() (int, error)
}

// MemStore is an in-memory Store, safe for concurrent use.
type MemStore struct {
	mu  sync.RWMutex
	ops map[OpID]*Op // pointers: a growing map moves 40-byte slots, not whole ops
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{ops: map[OpID]*Op{}} }

func (m *MemStore) Put(op Op) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops[op.ID] = &op
	return nil
}

func (m *MemStore) Get(id OpID) (Op, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	op, ok := m.ops[id]
	if !ok {
		return Op{}, ErrNotFound
	}
	return *op, nil
}

func (m *MemStore) Has(id OpID) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.ops[id]
	return ok, nil
}

func (m *MemStore) Delete(id OpID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.ops, id)
	return nil
}

func (m *MemStore) ForEach(fn func(Op) error) error {
	m.mu.RLock()
	ops := make([]Op, 0, len(m.ops))
	for _, op := range m.ops {
		ops = append(ops, *op)
	}
	m.mu.RUnlock()
	for _, op := range ops {
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

func (m *MemStore) Len() (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.ops), nil
}
