package mesh

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestDuePeersChoice: a periodic round takes the site and federated peers
// due and syncFanout others — those on a conversation that changed since
// our last sync with them first, then those synced longest ago, a peer
// seen for the first time behind them — and over rounds every peer has
// its turn before any has two.
func TestDuePeersChoice(t *testing.T) {
	s := &Service{}
	ps := []peer.ID{"a", "b", "c", "d", "e", "f"}
	for _, p := range []peer.ID{"e", "a", "f", "d"} { // b and c: new
		s.noteTurn(p)
	}
	always := map[peer.ID]bool{"site": true}
	got := s.duePeersLocked(append([]peer.ID{"site"}, ps...), true, always, nil)
	if want := []peer.ID{"site", "e", "a", "f"}; !slices.Equal(got, want) {
		t.Fatalf("round took %v, want %v", got, want)
	}
	if s.lastSync["b"] != s.syncSeq || s.lastSync["c"] != s.syncSeq {
		t.Fatalf("new peers' turns %d, %d; want %d (behind the others)", s.lastSync["b"], s.lastSync["c"], s.syncSeq)
	}

	// d is on a conversation that changed after our last sync with it.
	s.noteChange([]byte("ward"))
	for _, p := range ps {
		s.synced[p] = s.changes
	}
	s.noteChange([]byte("ward"))
	got = s.duePeersLocked(ps, false, nil, map[peer.ID]uint64{"d": s.changes, "e": s.changes - 1})
	if len(got) != syncFanout || got[0] != "d" {
		t.Fatalf("round took %v, want d (its conversation changed) first", got)
	}

	if got := s.duePeersLocked(ps[:syncFanout], true, nil, nil); !slices.Equal(got, ps[:syncFanout]) {
		t.Fatalf("a round with no more than syncFanout peers due took %v", got)
	}
	turns := map[peer.ID]int{}
	for round := range 4 {
		for _, p := range s.duePeersLocked(ps, true, nil, nil) {
			s.noteTurn(p)
			turns[p]++
		}
		lo, hi := len(ps), 0
		for _, p := range ps {
			lo, hi = min(lo, turns[p]), max(hi, turns[p])
		}
		if hi-lo > 1 {
			t.Fatalf("after round %d, turns %v", round+1, turns)
		}
	}
	if len(s.tagChanged) != 1 {
		t.Fatalf("a change a peer has not been synced past forgotten: %v", s.tagChanged)
	}
	for _, p := range ps {
		s.synced[p] = s.changes
	}
	s.duePeersLocked(ps, false, nil, nil)
	if len(s.tagChanged) != 0 {
		t.Fatalf("changes every peer was synced past still kept: %v", s.tagChanged)
	}
}
