package mesh

import (
	"encoding/hex"

	"github.com/medmesh/medmesh/crdt"
)

// Refusals. An anchor that drops envelopes for want of room (a sender over
// its share, the quota) still finds them offered by every peer that holds
// them: fetching them again, only to drop them again, would spin each round
// — a colleague's flood would have the anchor fetch it anew from every
// holder, every round, and its sync rounds never settle. So the anchor
// remembers what it dropped for room, and does not ask for it again. The
// record lives in memory and is bounded (oldest forgotten first); after a
// restart, or once forgotten, an envelope is fetched and dropped once more.
const maxRefused = 1 << 14

type refusals struct {
	ids   map[string]map[crdt.OpID]bool // by hex tag
	order []refusal                     // oldest first
}

type refusal struct {
	tag string
	id  crdt.OpID
}

// refuseLocked records that this anchor dropped id of tag for room.
// Callers hold mu.
func (s *Service) refuseLocked(tag string, id crdt.OpID) {
	r := &s.refused
	if r.ids == nil {
		r.ids = map[string]map[crdt.OpID]bool{}
	}
	if r.ids[tag][id] {
		return
	}
	if r.ids[tag] == nil {
		r.ids[tag] = map[crdt.OpID]bool{}
	}
	r.ids[tag][id] = true
	r.order = append(r.order, refusal{tag, id})
	if len(r.order) > maxRefused {
		old := r.order[0]
		r.order = r.order[1:]
		if delete(r.ids[old.tag], old.id); len(r.ids[old.tag]) == 0 {
			delete(r.ids, old.tag)
		}
	}
}

// wanted is need without the IDs this anchor dropped for room.
func (s *Service) wanted(tag []byte, need []crdt.OpID) []crdt.OpID {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := s.refused.ids[hex.EncodeToString(tag)]
	if len(gone) == 0 {
		return need
	}
	out := make([]crdt.OpID, 0, len(need))
	for _, id := range need {
		if !gone[id] {
			out = append(out, id)
		}
	}
	return out
}
