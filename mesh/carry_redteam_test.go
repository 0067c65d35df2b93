package mesh_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/mesh"
)

// handFrame mirrors a sync/6 frame with the hand phase's fields.
type handFrame struct {
	Kind   uint8    `cbor:"1,keyasint"`
	Tags   [][]byte `cbor:"2,keyasint,omitempty"`
	Tag    []byte   `cbor:"3,keyasint,omitempty"`
	IDs    [][]byte `cbor:"5,keyasint,omitempty"`
	Envs   [][]byte `cbor:"6,keyasint,omitempty"`
	More   bool     `cbor:"7,keyasint,omitempty"`
	FPs    [][]byte `cbor:"8,keyasint,omitempty"`
	Carry  bool     `cbor:"9,keyasint,omitempty"`
	Hand   [][]byte `cbor:"10,keyasint,omitempty"`
	Copies []uint32 `cbor:"11,keyasint,omitempty"`
}

const (
	kOffer = 1
	kEnvs  = 4
	kDone  = 5
	kHand  = 6
	kTake  = 7
)

func (r *rawSync) sendHand(f handFrame) error {
	b, err := detcbor.Marshal(f)
	if err != nil {
		return err
	}
	return r.w.WriteMsg(b)
}

func (r *rawSync) recvHand() (handFrame, error) {
	b, err := r.r.ReadMsg()
	if err != nil {
		return handFrame{}, err
	}
	var f handFrame
	err = detcbor.Unmarshal(b, &f, 8<<20)
	return f, err
}

// signedBy is a content envelope of tag signed with id's key at now.
func signedBy(t *testing.T, id *testnet.Identity, tag []byte) []byte {
	t.Helper()
	e := e2e.New(tag, id.Key.PeerID(), nil)
	e.Kind, e.Epoch, e.Body, e.Wall = e2e.KindContent, make([]byte, 32), make([]byte, 64), time.Now().UnixMilli()
	rand.Read(e.Body)
	if err := e.Sign(id.Key.Identity); err != nil {
		t.Fatal(err)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func entry(tag, raw []byte) []byte { id := e2e.ID(raw); return append(slices.Clone(tag), id[:]...) }

// TestCarrierRefusesForgedRevokedUnknown: a colleague hands a carrier a
// forged envelope, one by a revoked colleague, one by a stranger to the
// trust and one of its own: the carrier keeps only its own.
func TestCarrierRefusesForgedRevokedUnknown(t *testing.T) {
	ca := testnet.NewCA(t)
	c := testnet.Start(t, ca, ca.Enrol(t, "c"))
	rid := ca.Enrol(t, "revoked")
	r := testnet.Start(t, ca, rid, testnet.Boot(c))
	testnet.Knows(t, c, r)
	r.Stop()
	if _, err := c.N.SubmitCRL(context.Background(), ca.CRL(t, 1, rid)); err != nil {
		t.Fatal(err)
	}
	mid := ca.Enrol(t, "m")
	m := testnet.Start(t, ca, mid, testnet.Boot(c))
	testnet.Eventually(t, 15*time.Second, "m admitted", func() bool { return c.N.IsAdmitted(m.ID) && m.N.IsAdmitted(c.ID) })
	stranger := testnet.NewCA(t).Enrol(t, "stranger")

	tag := make([]byte, 16)
	rand.Read(tag)
	good := signedBy(t, mid, tag)
	forged := signedBy(t, mid, tag)
	forged[len(forged)-3] ^= 1 // in the signature: a new ID, a bad signature
	revoked := signedBy(t, rid, tag)
	unknown := signedBy(t, stranger, tag)
	envs := [][]byte{forged, revoked, unknown, good}

	s := rawOpen(t, m, c)
	if err := s.sendHand(handFrame{Kind: kOffer}); err != nil {
		t.Fatal(err)
	}
	off, err := s.recvHand()
	if err != nil || off.Kind != kOffer || !off.Carry {
		t.Fatalf("carrier's offer: %+v, %v", off, err)
	}
	h := handFrame{Kind: kHand}
	for _, raw := range envs {
		h.Hand, h.Copies = append(h.Hand, entry(tag, raw)), append(h.Copies, 4)
	}
	if err := s.sendHand(h); err != nil {
		t.Fatal(err)
	}
	take, err := s.recvHand()
	if err != nil || take.Kind != kTake || len(take.Hand) != len(envs) {
		t.Fatalf("take: %+v, %v", take, err)
	}
	if err := s.sendHand(handFrame{Kind: kEnvs, Envs: envs}); err != nil {
		t.Fatal(err)
	}
	kept, err := s.recvHand()
	if err != nil || kept.Kind != kTake {
		t.Fatalf("kept: %+v, %v", kept, err)
	}
	if len(kept.Hand) != 1 || !bytes.Equal(kept.Hand[0], entry(tag, good)) {
		t.Fatalf("carrier kept %d envelopes, want only the good one", len(kept.Hand))
	}
	if got := c.M.IDsOf(tag); len(got) != 1 || got[0] != crdt.OpID(e2e.ID(good)) {
		t.Fatalf("carrier holds %d envelopes of the tag", len(got))
	}
}

// TestCarrierHandedOnlyWhatItTook: a carrier that takes an entry it was
// not offered (to be handed another conversation's envelopes) has its
// session cut, and gets nothing.
func TestCarrierHandedOnlyWhatItTook(t *testing.T) {
	ca := testnet.NewCA(t)
	a := testnet.Start(t, ca, ca.Enrol(t, "a"))
	b := testnet.Start(t, ca, ca.Enrol(t, "b"), testnet.Boot(a), device.WithCarry(false))
	// Mal's own device does not carry (a lists an entry to a carrier once):
	// it speaks carriage by hand below.
	mal := testnet.Start(t, ca, ca.Enrol(t, "mal"), testnet.Boot(a), device.WithCarry(false))
	testnet.Knows(t, a, b)
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "hello")
	testnet.Eventually(t, 15*time.Second, "mal admitted", func() bool { return a.N.IsAdmitted(mal.ID) })

	s := rawOpen(t, mal, a)
	if err := s.sendHand(handFrame{Kind: kOffer, Carry: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.recvHand(); err != nil { // a's offer
		t.Fatal(err)
	}
	if err := s.sendHand(handFrame{Kind: kHand}); err != nil { // nothing for a
		t.Fatal(err)
	}
	h, err := s.recvHand()
	if err != nil || h.Kind != kHand || len(h.Hand) == 0 {
		t.Fatalf("a's hand: %+v, %v", h, err)
	}
	// What it is handed is a's own recent ops, and their tags, no more.
	for _, e := range h.Hand {
		if !slices.ContainsFunc(a.M.IDsOf(e[:16]), func(x crdt.OpID) bool { return bytes.Equal(x[:], e[16:]) }) &&
			!bytes.Equal(e[:16], mesh.InboxTag(b.ID)) {
			t.Fatalf("handed an entry of a tag a holds nothing of")
		}
	}
	ask := slices.Clone(h.Hand[0])
	ask[len(ask)-1] ^= 1 // an op it was not offered
	if err := s.sendHand(handFrame{Kind: kTake, Hand: [][]byte{ask}}); err != nil {
		t.Fatal(err)
	}
	if f, err := s.recvHand(); err == nil {
		t.Fatalf("a answered a take of an entry it did not offer: %+v", f)
	}
}

// TestUnadmittedCannotCarryOrHand: a device of another trust, on the same
// LAN, can neither hand a carrier envelopes nor be handed any: its sync
// stream is reset before anything is read.
func TestUnadmittedCannotCarryOrHand(t *testing.T) {
	ca := testnet.NewCA(t)
	a := testnet.Start(t, ca, ca.Enrol(t, "a"))
	b := testnet.Start(t, ca, ca.Enrol(t, "b"), testnet.Boot(a), device.WithCarry(false))
	testnet.Knows(t, a, b)
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Send(t, a, id, "hello")
	other := testnet.NewCA(t)
	out := testnet.Start(t, other, other.Enrol(t, "outsider"), testnet.Boot(a))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := out.N.Host().NewStream(ctx, a.ID, mesh.ProtoSync)
	if err != nil {
		return // refused outright
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(20 * time.Second))
	s := &rawSync{st: st, r: msgio.NewVarintReaderSize(st, 8<<20), w: msgio.NewVarintWriter(st)}
	s.sendHand(handFrame{Kind: kOffer, Carry: true})
	s.sendHand(handFrame{Kind: kHand, Hand: [][]byte{entry(make([]byte, 16), signedBy(t, out.Ident, make([]byte, 16)))}, Copies: []uint32{8}})
	if f, err := s.recvHand(); err == nil {
		t.Fatalf("an unadmitted peer got an answer: %+v", f)
	}
	if a.M.CarriedCount() > 1 { // a carries its own welcome for b's inbox, nothing else
		t.Fatalf("a carries %d envelopes", a.M.CarriedCount())
	}
}
