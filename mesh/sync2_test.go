package mesh_test

// Sync/2 against hostile and heavy peers: offers that scale, per-session
// budgets, and what an admitted colleague can make a peer do through them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// wireFrame mirrors the sync frame's wire form (mesh/sync.go).
type wireFrame struct {
	Kind uint8    `cbor:"1,keyasint"`
	Tags [][]byte `cbor:"2,keyasint,omitempty"`
	Tag  []byte   `cbor:"3,keyasint,omitempty"`
	Msg  []byte   `cbor:"4,keyasint,omitempty"`
	IDs  [][]byte `cbor:"5,keyasint,omitempty"`
	Envs [][]byte `cbor:"6,keyasint,omitempty"`
	More bool     `cbor:"7,keyasint,omitempty"`
	FPs  [][]byte `cbor:"8,keyasint,omitempty"`
	// sync/4 and sync/5: the offer says whether its side carries for others.
	Carry bool `cbor:"9,keyasint,omitempty"`
}

// wireRange and wireRecon mirror a reconciliation message (mesh/recon.go).
type wireRange struct {
	Bound []byte   `cbor:"1,keyasint,omitempty"`
	Mode  uint8    `cbor:"2,keyasint"`
	FP    []byte   `cbor:"3,keyasint,omitempty"`
	IDs   [][]byte `cbor:"4,keyasint,omitempty"`
}

type wireRecon struct {
	Ranges []wireRange `cbor:"1,keyasint"`
}

// rawSync speaks the sync protocol by hand, as a hostile peer would.
type rawSync struct {
	st network.Stream
	r  msgio.ReadCloser
	w  msgio.WriteCloser
}

func rawOpen(t *testing.T, from, to *testnet.Peer) *rawSync {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := from.N.Host().NewStream(ctx, to.ID, mesh.ProtoSync)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Reset() })
	st.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawSync{st: st, r: msgio.NewVarintReaderSize(st, 8<<20), w: msgio.NewVarintWriter(st)}
}

func (r *rawSync) send(f wireFrame) error {
	b, err := detcbor.Marshal(f)
	if err != nil {
		return err
	}
	return r.w.WriteMsg(b)
}

func (r *rawSync) recv() (wireFrame, error) {
	b, err := r.r.ReadMsg()
	if err != nil {
		return wireFrame{}, err
	}
	var f wireFrame
	err = detcbor.Unmarshal(b, &f, 8<<20)
	return f, err
}

// offer sends tags (sorted here) in full pages, each with a made-up
// fingerprint (so each differs from the peer's).
func (r *rawSync) offer(tags [][]byte) error {
	tags = slices.Clone(tags)
	slices.SortFunc(tags, bytes.Compare)
	for {
		n := min(len(tags), mesh.OfferPage)
		f := wireFrame{Kind: 1, Tags: tags[:n], FPs: randomTags(n), More: n < len(tags)}
		if err := r.send(f); err != nil {
			return err
		}
		if tags = tags[n:]; !f.More {
			return nil
		}
	}
}

// readOffer reads the peer's offer pages.
func (r *rawSync) readOffer() ([][]byte, error) {
	var out [][]byte
	for {
		f, err := r.recv()
		if err != nil {
			return nil, err
		}
		out = append(out, f.Tags...)
		if !f.More {
			return out, nil
		}
	}
}

func randomTags(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, 16)
		rand.Read(out[i])
	}
	return out
}

// fpMsg is a one-range reconciliation message with a made-up fingerprint:
// the answer is never "equal", so it always takes another round.
func fpMsg(t *testing.T) []byte {
	t.Helper()
	fp := make([]byte, 16)
	rand.Read(fp)
	b, err := detcbor.Marshal(wireRecon{Ranges: []wireRange{{Mode: 1, FP: fp}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncs reports whether one complete sync round from p to q succeeds now.
func syncs(p, q *testnet.Peer) bool {
	c0 := p.M.Changes()
	p.M.SyncWith(q.ID)
	at, ok := p.M.Synced(q.ID)
	return ok && at == c0
}

// pair starts alice and a victim sharing a conversation, and mallory,
// admitted by the victim.
func pair(t *testing.T) (a, v, m *testnet.Peer) {
	t.Helper()
	c := testnet.NewCA(t)
	a = start(t, c, c.Enrol(t, "alice"), false)
	v = start(t, c, c.Enrol(t, "victim"), false, a)
	m = start(t, c, c.Enrol(t, "mallory"), false, v)
	testnet.Knows(t, a, v)
	id, err := a.C.Create("ward", []peer.ID{v.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "the victim joined; mallory admitted", func() bool {
		return testnet.Joined(v, id, 2) && v.N.IsAdmitted(m.ID)
	})
	return a, v, m
}

// TestSyncTenThousandTags: a device carrying 10,000 tags (sync/1 refused
// any offer of more than 4,096, in both directions) completes sync rounds
// with a peer that carries 10,000 too, 3,000 of them shared — 1,000 of
// those with op-ID sets that differ, so they are reconciled, the rest
// skipped on their offered fingerprints — both ways; what they share in a
// conversation still moves.
func TestSyncTenThousandTags(t *testing.T) {
	c := testnet.NewCA(t)
	a := start(t, c, c.Enrol(t, "alice"), false)
	b := start(t, c, c.Enrol(t, "bob"), false, a)
	testnet.Knows(t, a, b)
	id, err := a.C.Create("ward", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "bob joined", func() bool { return testnet.Joined(b, id, 2) })
	common := randomTags(3000)
	a.M.AddCarriersOf(common)
	b.M.AddCarriersOf(common)
	a.M.AddCarriedIDs(common[:1000])
	a.M.AddCarriers(7000)
	b.M.AddCarriers(7000)
	if n := len(a.M.Tags()); n < 10000 {
		t.Fatalf("alice offers %d tags", n)
	}
	testnet.Eventually(t, 30*time.Second, "alice completes a sync with bob", func() bool { return syncs(a, b) })
	testnet.Eventually(t, 30*time.Second, "bob completes a sync with alice", func() bool { return syncs(b, a) })
	testnet.Send(t, b, id, "still in touch")
	testnet.Eventually(t, 15*time.Second, "alice reads bob", func() bool { return slices.Contains(testnet.Texts(a, id), "still in touch") })
}

// TestSyncHostileSessionsCutOff: an admitted colleague that keeps a sync
// session going — reconciliation of tags it never offered (sync/1 answered
// a fresh tag after fresh tag, for as long as the peer liked), endless
// ranges on a shared tag, a reconciled tag opened again, more wants than
// the tag holds, an offer too large or out of order — is cut off within
// the session's budget; honest peers keep syncing.
func TestSyncHostileSessionsCutOff(t *testing.T) {
	a, v, m := pair(t)
	// Mallory learns the victim's tags: its offer is its answer to any.
	probe := rawOpen(t, m, v)
	if err := probe.offer(nil); err != nil {
		t.Fatal(err)
	}
	vtags, err := probe.readOffer()
	if err != nil || len(vtags) < 2 {
		t.Fatalf("victim's offer: %d tags, %v", len(vtags), err)
	}
	probe.send(wireFrame{Kind: 5})

	// answered counts the recon frames the victim answers (up to n).
	answered := func(s *rawSync, n int, next func(i int) wireFrame) int {
		for i := range n {
			if err := s.send(next(i)); err != nil {
				return i
			}
			f := next(i)
			if f.Kind == 2 && len(f.Msg) == 0 {
				continue // an empty recon frame gets no answer
			}
			if _, err := s.recv(); err != nil {
				return i
			}
		}
		return n
	}
	// session opens one; the victim resets a stream before reading when
	// mallory already runs maxInbound sessions with it (mallory's own node
	// syncs too, and the victim may not have seen the last one end yet):
	// open again until it answers.
	session := func(offer [][]byte) *rawSync {
		var s *rawSync
		testnet.Eventually(t, 15*time.Second, "the victim answers an offer", func() bool {
			s = rawOpen(t, m, v)
			if s.offer(offer) != nil {
				return false
			}
			_, err := s.readOffer()
			return err == nil
		})
		return s
	}
	const tries = 2000
	t.Run("fresh tags", func(t *testing.T) {
		s := session(randomTags(5))
		got := answered(s, tries, func(int) wireFrame {
			return wireFrame{Kind: 2, Tag: randomTags(1)[0], Msg: fpMsg(t)}
		})
		if got > 0 {
			t.Fatalf("the victim answered %d recon frames for tags nobody shares", got)
		}
	})
	t.Run("endless ranges on a shared tag", func(t *testing.T) {
		s := session(vtags)
		got := answered(s, tries, func(int) wireFrame { return wireFrame{Kind: 2, Tag: vtags[0], Msg: fpMsg(t)} })
		if got > mesh.MaxRounds+1 { // +1: an initiator's last message after its cut
			t.Fatalf("the victim answered %d rounds of one tag", got)
		}
	})
	t.Run("a tag reconciled again", func(t *testing.T) {
		s := session(vtags)
		// One honest-looking pass over vtags[0]: a round, no wants; the
		// victim's own (empty) want ends the tag. Then the same again.
		got := answered(s, tries, func(i int) wireFrame {
			switch i % 3 {
			case 0:
				return wireFrame{Kind: 2, Tag: vtags[0], Msg: fpMsg(t)}
			case 1:
				return wireFrame{Kind: 2, Tag: vtags[0]}
			}
			return wireFrame{Kind: 3, Tag: vtags[0]}
		})
		if got > 3 {
			t.Fatalf("the victim took %d frames reconciling one tag over and over", got)
		}
	})
	t.Run("more wants than held", func(t *testing.T) {
		s := session(vtags)
		got := answered(s, tries, func(i int) wireFrame {
			if i == 0 {
				return wireFrame{Kind: 2, Tag: vtags[0], Msg: fpMsg(t)}
			}
			if i == 1 {
				return wireFrame{Kind: 2, Tag: vtags[0]}
			}
			ids := make([][]byte, 2048)
			for j := range ids {
				ids[j] = make([]byte, 32)
				rand.Read(ids[j])
			}
			return wireFrame{Kind: 3, Tag: vtags[0], IDs: ids}
		})
		if got > 3 {
			t.Fatalf("the victim served %d want frames for one small tag", got-2)
		}
	})
	t.Run("offers", func(t *testing.T) {
		var tooMany []wireFrame
		for i := range mesh.MaxOfferTags/mesh.OfferPage + 1 {
			tags := make([][]byte, mesh.OfferPage)
			for j := range tags {
				tags[j] = make([]byte, 16)
				binary.BigEndian.PutUint32(tags[j], uint32(i*mesh.OfferPage+j))
			}
			tooMany = append(tooMany, wireFrame{Kind: 1, Tags: tags, FPs: randomTags(len(tags)), More: true})
		}
		for name, pages := range map[string][]wireFrame{
			"too many tags":     tooMany,
			"short pages":       slices.Repeat([]wireFrame{{Kind: 1, Tags: randomTags(1), FPs: randomTags(1), More: true}}, 100),
			"not ascending":     {{Kind: 1, Tags: [][]byte{bytes.Repeat([]byte{2}, 16), bytes.Repeat([]byte{1}, 16)}, FPs: randomTags(2)}},
			"not 16-byte tags":  {{Kind: 1, Tags: [][]byte{make([]byte, 17)}, FPs: randomTags(1)}},
			"no fingerprints":   {{Kind: 1, Tags: randomTags(1)}},
			"more on no offer":  {{Kind: 5, More: true}},
			"no offer at first": {{Kind: 2, Tag: vtags[0], Msg: fpMsg(t)}},
		} {
			s := rawOpen(t, m, v)
			for _, p := range pages {
				if s.send(p) != nil {
					break
				}
			}
			if f, err := s.recv(); err == nil {
				t.Errorf("%s: the victim answered (frame kind %d)", name, f.Kind)
			}
		}
	})
	testnet.Eventually(t, 15*time.Second, "alice still syncs with the victim", func() bool { return syncs(a, v) })
	testnet.Eventually(t, 15*time.Second, "the victim still syncs with alice", func() bool { return syncs(v, a) })
}
