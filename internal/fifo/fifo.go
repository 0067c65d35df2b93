// Package fifo is a map that holds at most a fixed number of keys and
// forgets the oldest first: what a device remembers of recent ops (an
// urgency verdict, an op applied) without growing with a flood of them.
package fifo

// Map is a map of at most its limit of keys; putting a new key when it is
// full forgets the key put longest ago. It is not safe for concurrent use.
type Map[K comparable, V any] struct {
	limit int
	m     map[K]V
	ring  []K // keys, oldest at next once full
	next  int
}

// New returns an empty Map of at most limit keys (limit > 0).
func New[K comparable, V any](limit int) *Map[K, V] {
	if limit <= 0 {
		panic("fifo: limit must be positive")
	}
	return &Map[K, V]{limit: limit, m: map[K]V{}}
}

// Get returns the value of k, if k is held.
func (f *Map[K, V]) Get(k K) (V, bool) {
	v, ok := f.m[k]
	return v, ok
}

// Put sets k to v. A new key takes the place of the oldest when the map
// is full; a key already held keeps its place.
func (f *Map[K, V]) Put(k K, v V) {
	if _, ok := f.m[k]; !ok {
		if len(f.ring) < f.limit {
			f.ring = append(f.ring, k)
		} else {
			delete(f.m, f.ring[f.next])
			f.ring[f.next] = k
			f.next = (f.next + 1) % f.limit
		}
	}
	f.m[k] = v
}

// Len is the number of keys held.
func (f *Map[K, V]) Len() int { return len(f.m) }
