package mesh

import (
	"slices"

	"github.com/medmesh/medmesh/crdt"
)

// SortedHolder is a Holder that can also give a held tag's op-ID set
// sorted and shared rather than copied: the set is read for every sync
// offer, session and fetch claim, and a copy of a conversation's whole
// history each time was a large part of a busy mesh's CPU and garbage.
// The mesh never modifies the slice; the holder never modifies it once
// given (a new op makes a new slice).
type SortedHolder interface {
	Holder
	SortedIDs(tag []byte) []crdt.OpID
}

// heldIDs is the holder's op-ID set of tag, sorted and without repeats;
// shared when the holder shares it (callers must not modify it).
func (s *Service) heldIDs(tag []byte) []crdt.OpID {
	if h, ok := s.h.(SortedHolder); ok {
		return h.SortedIDs(tag) // sorted by contract: not checked on every read
	}
	out := s.h.IDs(tag)
	if !slices.IsSortedFunc(out, crdt.OpID.Compare) {
		out = slices.Clone(out)
		slices.SortFunc(out, crdt.OpID.Compare)
		out = slices.Compact(out)
	}
	return out
}
