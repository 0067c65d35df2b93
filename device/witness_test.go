package device_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/testnet"
	"github.com/medmesh/medmesh/witness"
)

// Every device deposits its audit head with the anchors it meets, as the
// log grows; the anchor keeps the newest, and the device's status shows
// which entry a witness vouches for. A colleague without the anchor (or
// archive) role keeps nothing.
func TestAuditHeadWitnessedByAnchor(t *testing.T) {
	c := testnet.NewCA(t)
	anchorID := c.Enrol(t, "anchor", "anchor")
	anchor := testnet.Start(t, c, anchorID)
	aid := c.Enrol(t, "alice")
	a := testnet.Start(t, c, aid, testnet.Boot(anchor))
	bid := c.Enrol(t, "bob")
	b := testnet.Start(t, c, bid, testnet.Boot(anchor))
	testnet.Knows(t, a, b)
	id, err := a.C.Create("Ward 4", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 15*time.Second, "joined", func() bool { return testnet.Joined(b, id, 2) })
	testnet.Send(t, a, id, "bed 2 for review")
	if err := a.D.Audit().Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := a.D.Audit().Head()
	if want.Seq == 0 {
		t.Fatal("alice recorded nothing")
	}
	testnet.Eventually(t, 30*time.Second, "the anchor holds alice's newest head", func() bool {
		h, ok, err := witness.Held(context.Background(), anchorID.Store, a.ID)
		return err == nil && ok && h.Seq >= want.Seq
	})
	testnet.Eventually(t, 30*time.Second, "alice's status shows the witnessed head", func() bool {
		w := a.D.Audit().Stats().Witnessed
		return w != nil && w.Seq >= want.Seq && w.Peer == anchor.ID.String()
	})
	if w := a.D.Audit().Stats().Witnessed; w.Error != "" {
		t.Fatalf("alice's log does not vouch for the witnessed head: %s", w.Error)
	}
	if _, ok, _ := witness.Held(context.Background(), bid.Store, a.ID); ok {
		t.Fatal("bob, no anchor, keeps alice's head")
	}

	// The answer alice keeps is the anchor's, and checks under the trust
	// roots with the anchor role.
	alicePub := aid.Key.Identity.Public().(ed25519.PublicKey)
	var ans witness.Answer
	testnet.Eventually(t, 30*time.Second, "alice keeps the anchor's signed answer", func() bool {
		var ok bool
		ans, ok, err = witness.Mine(context.Background(), aid.Store, alicePub)
		return err == nil && ok && ans.Held.Seq >= want.Seq
	})
	if ans.Witness != anchor.ID {
		t.Fatalf("kept answer signed by %s", ans.Witness)
	}
	if err := witness.CheckWitness(ans, c.Trust(t), device.WitnessRoles...); err != nil {
		t.Fatalf("the anchor's answer: %v", err)
	}
	// What the key holder, or a colleague, forges instead.
	held, err := ans.Held.Record()
	if err != nil {
		t.Fatal(err)
	}
	outsiderCA := testnet.NewCA(t)
	outsider := outsiderCA.Enrol(t, "mallory", "anchor")
	for name, f := range map[string]struct {
		by    *testnet.Identity
		certs []*x509.Certificate
	}{
		"a colleague without the anchor role": {bid, bid.Chain},
		"an anchor of another trust":          {outsider, outsider.Chain},
		"a colleague with the anchor's chain": {bid, anchorID.Chain},
	} {
		raw := forgeAnswer(t, f.by.Key.Identity, a.ID, f.by.Key.PeerID(), held, identity.EncodeCertificates(f.certs...))
		got, err := witness.DecodeAnswer(raw, alicePub)
		if err != nil {
			t.Fatalf("%s: the forged answer does not even decode: %v", name, err)
		}
		if err := witness.CheckWitness(got, c.Trust(t), device.WitnessRoles...); !errors.Is(err, witness.ErrNotWitness) {
			t.Errorf("%s: CheckWitness says %v", name, err)
		}
	}
	// The anchor's genuine answer with its certificates swapped, or for
	// another device: the signature or the device does not match.
	if _, err := witness.DecodeAnswer(forgeAnswer(t, bid.Key.Identity, a.ID, anchor.ID, held, nil), alicePub); !errors.Is(err, witness.ErrAnswer) {
		t.Errorf("an answer signed by bob in the anchor's name: %v", err)
	}
	if _, err := witness.DecodeAnswer(ans.Raw, bid.Key.Identity.Public().(ed25519.PublicKey)); !errors.Is(err, witness.ErrAnswer) {
		t.Errorf("alice's answer replayed as bob's: %v", err)
	}
}

// forgeAnswer encodes an answer as package witness does, signed by sk.
func forgeAnswer(t *testing.T, sk ed25519.PrivateKey, dev, wit peer.ID, held, certs []byte) []byte {
	t.Helper()
	body, err := detcbor.Marshal(struct {
		V       uint8  `cbor:"1,keyasint"`
		Device  []byte `cbor:"2,keyasint"`
		Witness []byte `cbor:"3,keyasint"`
		Time    int64  `cbor:"4,keyasint"`
		Held    []byte `cbor:"5,keyasint,omitempty"`
		Certs   []byte `cbor:"8,keyasint,omitempty"`
	}{1, []byte(dev), []byte(wit), time.Now().UnixNano(), held, certs})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := detcbor.Marshal(struct {
		Body []byte `cbor:"1,keyasint"`
		Sig  []byte `cbor:"2,keyasint"`
	}{body, ed25519.Sign(sk, append([]byte(witness.AnswerDomain), body...))})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
