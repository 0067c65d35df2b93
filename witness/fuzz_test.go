package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// FuzzDecodeDeposit: what a witness reads from any admitted peer. A
// deposit that decodes has a proof of at most audit.MaxProof hashes of 32
// bytes, only with an entry to prove, and re-encodes to the same bytes.
func FuzzDecodeDeposit(f *testing.F) {
	f.Add(depositOf(f, []byte{0xa2, 0x01, 0x40, 0x02, 0x40}))
	raw, _ := detcbor.Marshal(deposit{Head: []byte{1}, From: 3, Proof: [][]byte{make([]byte, 32), bytes.Repeat([]byte{7}, 32)}})
	f.Add(raw)
	raw, _ = detcbor.Marshal(deposit{Head: []byte{1}, Proof: [][]byte{make([]byte, 32)}})
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDeposit(b)
		if err != nil {
			return
		}
		if len(d.Proof) > audit.MaxProof || (d.From == 0 && len(d.Proof) > 0) {
			t.Fatalf("accepted a proof of %d hashes from %d", len(d.Proof), d.From)
		}
		if len(d.proof()) != len(d.Proof) {
			t.Fatal("proof hashes lost")
		}
		again, err := detcbor.Marshal(d)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("a deposit that decoded re-encodes otherwise (%v)", err)
		}
	})
}

// FuzzDecodeAnswer: what a device keeps and `audit verify` reads. An
// answer that decodes is signed by the witness it names, about this
// device, and decodes again from its kept bytes.
func FuzzDecodeAnswer(f *testing.F) {
	dev, wit := key(2), key(1)
	pub := dev.Public().(ed25519.PublicKey)
	devID, witID := peerID(f, dev), peerID(f, wit)
	l, err := audit.Open(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), dev, audit.WithClock(clock()))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := l.Append(context.Background(), audit.Event{Kind: audit.Sent}); err != nil {
		f.Fatal(err)
	}
	hrec, err := l.Current().Record()
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range []answerBody{
		{Device: []byte(devID), Witness: []byte(witID), Time: t0.UnixNano(), Held: hrec},
		{Device: []byte(devID), Witness: []byte(witID), Time: t0.UnixNano(), Held: hrec, Conflict: hrec, Want: 1, Certs: []byte("-----BEGIN CERTIFICATE-----\n")},
		{Device: []byte(witID), Witness: []byte(witID), Time: t0.UnixNano()},
		{Device: []byte(devID), Witness: []byte(witID), Time: t0.UnixNano(), Conflict: hrec}, // evidence without a held head
	} {
		raw, err := signAnswer(wit, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	// The device's key holder answering itself.
	self, err := signAnswer(dev, answerBody{Device: []byte(devID), Witness: []byte(devID), Time: t0.UnixNano(), Held: hrec})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(self)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAnswer(b, pub)
		if err != nil {
			return
		}
		if a.Device != devID {
			t.Fatalf("an answer about %s decoded for %s", a.Device, devID)
		}
		if a.Witness != witID {
			t.Fatalf("an answer signed by %s decoded", a.Witness)
		}
		if a.Conflict != nil && a.Held.Seq == 0 {
			t.Fatal("an answer with evidence and no held head decoded")
		}
		if _, err := DecodeAnswer(a.Raw, pub); err != nil {
			t.Fatalf("a kept answer does not decode again: %v", err)
		}
	})
}

func peerID(t testing.TB, sk ed25519.PrivateKey) peer.ID {
	t.Helper()
	priv, err := crypto.UnmarshalEd25519PrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
