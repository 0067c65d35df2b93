package crdt

// Stamp orders concurrent writes: sort key, then op ID. Every replica
// derives the same stamp for the same op.
type Stamp struct {
	Key Timestamp
	ID  OpID
}

// Compare orders stamps.
func (s Stamp) Compare(o Stamp) int {
	if c := s.Key.Compare(o.Key); c != 0 {
		return c
	}
	return s.ID.Compare(o.ID)
}

// LWW is a last-writer-wins register: the write with the highest stamp wins.
type LWW[T any] struct {
	Value T
	At    Stamp
	set   bool
}

// Set applies a write; order of application does not matter.
func (r *LWW[T]) Set(v T, at Stamp) {
	if !r.set || at.Compare(r.At) > 0 {
		r.Value, r.At, r.set = v, at, true
	}
}

// IsSet reports whether any write was applied.
func (r *LWW[T]) IsSet() bool { return r.set }

// ORSet is an observed-remove set: an add is tagged with its op ID; a remove
// deletes the tags of that element it observed, so an add concurrent with a
// remove survives. A remove covers (element, tag) pairs: naming the tag of
// another element's add removes nothing of it.
type ORSet[T comparable] struct {
	tags    map[T]map[OpID]struct{}
	removed map[T]map[OpID]struct{}
}

// NewORSet returns an empty set.
func NewORSet[T comparable]() *ORSet[T] {
	return &ORSet[T]{tags: map[T]map[OpID]struct{}{}, removed: map[T]map[OpID]struct{}{}}
}

// Add adds v under tag (the adding op's ID), unless a remove of v observed
// that tag.
func (s *ORSet[T]) Add(v T, tag OpID) {
	if _, gone := s.removed[v][tag]; gone {
		return
	}
	if s.tags[v] == nil {
		s.tags[v] = map[OpID]struct{}{}
	}
	s.tags[v][tag] = struct{}{}
}

// Remove deletes the observed tags of v; tags may arrive before their adds.
func (s *ORSet[T]) Remove(v T, observed []OpID) {
	if len(observed) == 0 {
		return
	}
	if s.removed[v] == nil {
		s.removed[v] = map[OpID]struct{}{}
	}
	for _, t := range observed {
		s.removed[v][t] = struct{}{}
		if m := s.tags[v]; m != nil {
			delete(m, t)
			if len(m) == 0 {
				delete(s.tags, v)
			}
		}
	}
}

// Contains reports whether v is in the set.
func (s *ORSet[T]) Contains(v T) bool { return len(s.tags[v]) > 0 }

// Tags are the live tags of v: what a remove must name.
func (s *ORSet[T]) Tags(v T) []OpID {
	out := make([]OpID, 0, len(s.tags[v]))
	for t := range s.tags[v] {
		out = append(out, t)
	}
	return out
}

// Elements lists the members (unordered).
func (s *ORSet[T]) Elements() []T {
	out := make([]T, 0, len(s.tags))
	for v := range s.tags {
		out = append(out, v)
	}
	return out
}

// MaxRegister keeps, per device, the highest value written: receipts only
// move forward (delivered → read → acknowledged).
type MaxRegister[K comparable] struct {
	m map[K]int
}

// NewMaxRegister returns an empty register.
func NewMaxRegister[K comparable]() *MaxRegister[K] { return &MaxRegister[K]{m: map[K]int{}} }

// Raise sets k's value to v if v is higher.
func (r *MaxRegister[K]) Raise(k K, v int) {
	if v > r.m[k] {
		r.m[k] = v
	}
}

// Get returns k's value (0 if never raised).
func (r *MaxRegister[K]) Get(k K) int { return r.m[k] }

// Each calls fn for every key with a value.
func (r *MaxRegister[K]) Each(fn func(K, int)) {
	for k, v := range r.m {
		fn(k, v)
	}
}
