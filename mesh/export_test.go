package mesh

import (
	"crypto/rand"
	"encoding/hex"
	"maps"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/crdt"
)

// Test hooks: the external tests (package mesh_test, which run real
// devices) look inside through these.

var FrameTimeout = frameTimeout

// SetRoundLimit lowers MaxRounds until the returned func restores it.
func SetRoundLimit(n int) (restore func()) {
	old := loweredRounds.Swap(int32(n))
	return func() { loweredRounds.Store(old) }
}

// Cuts is how many reconciliations this device ended at the round limit.
func (s *Service) Cuts() int64 { return s.cuts.Load() }

func (s *Service) DuePeers(full bool) []peer.ID { return s.duePeers(full, 0) }
func (s *Service) SyncWith(p peer.ID)           { s.syncWith(p) }

// DueTurns is a periodic round's choice of peers (DuePeers, at most
// syncFanout beyond site and federated peers) with, taken at the same
// moment, the number of each connected peer's last turn (see noteTurn).
func (s *Service) DueTurns(full bool) ([]peer.ID, map[peer.ID]uint64) {
	peers, always := s.connected()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duePeersLocked(peers, full, always, syncFanout), maps.Clone(s.lastTurn)
}

// CarriedCount is how many envelopes an anchor carries.
func (s *Service) CarriedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, cr := range s.carried {
		n += len(cr.ops)
	}
	return n
}

// CarriedBytes sums the carried index, beside the running total.
func (s *Service) CarriedBytes() (held, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cr := range s.carried {
		for _, h := range cr.ops {
			held += int64(h.size)
		}
	}
	return held, s.carriedBytes
}

// SetAnchorQuota changes the quota and returns a sender's share of it.
func (s *Service) SetAnchorQuota(q int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.AnchorQuota = q
	return s.senderShare()
}

// Changes is the change counter; Synced the counter at the last complete
// sync with p.
func (s *Service) Changes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

func (s *Service) Synced(p peer.ID) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.synced[p]
	return at, ok
}

// CarriedFrom is what an anchor carries from one sender: the IDs and bytes
// in its index, and the running total in its per-sender ledger.
type CarriedFrom struct {
	IDs    map[crdt.OpID]bool
	Bytes  int64 // summed over the index
	Ledger int64 // the running total
}

func (s *Service) SenderView(sender peer.ID) CarriedFrom {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := CarriedFrom{IDs: map[crdt.OpID]bool{}}
	for _, c := range s.carried {
		for id, h := range c.ops {
			if h.sender == sender {
				v.IDs[id] = true
				v.Bytes += int64(h.size)
			}
		}
	}
	if a := s.sendersLocked().by[sender]; a != nil {
		v.Ledger = a.bytes
	}
	return v
}

// Sync/2 limits, for the attack tests.
const (
	OfferPage    = offerPage
	MaxOfferTags = maxOfferTags
	RoundsBase   = roundsBase
	RoundsPerTag = roundsPerTag
	MaxAdopt     = maxAdoptPerPeer
)

// AddCarriers makes n carriers of random tags, holding nothing and
// subscribed to nothing: a device that carries (and offers) many tags.
func (s *Service) AddCarriers(n int) [][]byte {
	var tags [][]byte
	for range n {
		t := make([]byte, tagLen)
		rand.Read(t)
		if c := s.carrierOn(t, ""); c != nil {
			tags = append(tags, c.tag)
		}
	}
	return tags
}

// AddCarriersOf makes carriers of the given tags (see AddCarriers).
func (s *Service) AddCarriersOf(tags [][]byte) {
	for _, t := range tags {
		s.carrierOn(t, "")
	}
}

// Adopted is how many tags an anchor adopted from p's offers, and in all.
func (s *Service) Adopted(p peer.ID) (from, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adopted[p], s.adoptedTotal
}

// Carries reports whether the device carries tag.
func (s *Service) Carries(tag []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.carried[hex.EncodeToString(tag)] != nil
}

// Tags is what the device offers in sync.
func (s *Service) Tags() [][]byte { return s.tags() }

// AddCarriedIDs records made-up op IDs (with no envelope behind them) in
// the carriers of tags, so their op-ID sets differ from a peer's.
func (s *Service) AddCarriedIDs(tags [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range tags {
		if c := s.carried[hex.EncodeToString(t)]; c != nil {
			var id crdt.OpID
			rand.Read(id[:])
			s.holdLocked(c, id, held{at: s.now()})
		}
	}
}

// InboxTag is the carrier tag of a device's inbox.
func InboxTag(id peer.ID) []byte { return inboxTag(id) }

// UrgentSession runs an urgent session (sync/7) with site peer p for tag,
// listing ids (none: the tag's last op ID in order).
func (s *Service) UrgentSession(p peer.ID, tag []byte, ids ...crdt.OpID) error {
	if len(ids) == 0 {
		if held := s.IDsOf(tag); len(held) > 0 {
			ids = held[len(held)-1:]
		}
	}
	_, err := s.initiateOnly(p, map[string][]crdt.OpID{string(tag): ids})
	return err
}
