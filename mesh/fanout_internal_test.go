package mesh

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestDuePeersChoice: a periodic round takes the site and federated peers
// due and syncFanout others — those synced longest ago first, a peer seen
// for the first time behind them; a kicked round takes every peer due.
func TestDuePeersChoice(t *testing.T) {
	s := &Service{}
	ps := []peer.ID{"a", "b", "c", "d", "e", "f"}
	for _, p := range []peer.ID{"e", "a", "f", "d"} { // b and c: new
		s.noteTurn(p)
	}
	always := map[peer.ID]bool{"site": true}
	got := s.duePeersLocked(append([]peer.ID{"site"}, ps...), true, always, syncFanout)
	if want := []peer.ID{"site", "e", "a", "f"}; !slices.Equal(got, want) {
		t.Fatalf("round took %v, want %v", got, want)
	}
	if s.lastTurn["b"] != s.turnSeq || s.lastTurn["c"] != s.turnSeq {
		t.Fatalf("new peers' turns %d, %d; want %d (behind the others)", s.lastTurn["b"], s.lastTurn["c"], s.turnSeq)
	}
	if got := s.duePeersLocked(ps, true, nil, 0); len(got) != len(ps) {
		t.Fatalf("a kicked round took %v of %v", got, ps)
	}
	if got := s.duePeersLocked(ps[:syncFanout], true, nil, syncFanout); !slices.Equal(got, ps[:syncFanout]) {
		t.Fatalf("a round with no more than syncFanout peers due took %v", got)
	}
}

// TestFailingPeersTakeTheirTurn: three colleagues' devices whose every
// sync fails (malicious, or unable to speak our sync protocol) stay due
// for ever, yet take only their turns: every honest peer is synced within
// ceil(peers/syncFanout) rounds, and no peer has two turns before every
// other has one.
func TestFailingPeersTakeTheirTurn(t *testing.T) {
	s := &Service{}
	failing := []peer.ID{"x", "y", "z"}
	ps := append([]peer.ID{"a", "b", "c", "d", "e", "f"}, failing...)
	turns := map[peer.ID]int{}
	for round := range 9 {
		s.changes++ // a busy conversation: every peer due every round
		for _, p := range s.duePeersLocked(ps, round%fullEvery == 0, nil, syncFanout) {
			s.noteTurn(p) // as syncRound does when it begins
			turns[p]++
			if !slices.Contains(failing, p) {
				s.synced[p] = s.changes
			}
		}
		lo, hi := len(ps), 0
		for _, p := range ps {
			lo, hi = min(lo, turns[p]), max(hi, turns[p])
		}
		if hi-lo > 1 {
			t.Fatalf("after round %d, turns %v", round+1, turns)
		}
	}
	for _, p := range ps {
		if turns[p] != 3 {
			t.Fatalf("9 rounds of 3 over 9 peers gave turns %v", turns)
		}
	}
}
