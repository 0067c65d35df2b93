package e2e

import (
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
	"github.com/hdevalence/ed25519consensus"
)

// sigBatch accepts exactly what ed25519consensus accepts, one by one and
// as a batch: valid batches of one or several keys, and batches with one
// altered byte anywhere (key, R, s, message), a non-canonical s (s + ℓ),
// a small-order R or key.
func TestSigBatchAgreesWithEd25519consensus(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var keys []ed25519.PrivateKey
	for i := range 3 {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		keys = append(keys, ed25519.NewKeyFromSeed(seed))
	}
	type item struct{ pub, msg, sig []byte }
	batch := func(n, nkeys int) []item {
		var b []item
		for i := range n {
			k := keys[i%nkeys]
			msg := fmt.Appendf(nil, "op %d", i)
			b = append(b, item{k.Public().(ed25519.PublicKey), msg, ed25519.Sign(k, msg)})
		}
		return b
	}
	// ℓ, little-endian: s + ℓ is a non-canonical s.
	ell := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 31: 0x10}
	identity := edwards25519.NewIdentityPoint().Bytes()
	mutations := []func(it *item){
		func(it *item) {},
		func(it *item) { it.msg = append([]byte{}, it.msg...); it.msg[0] ^= 1 },
		func(it *item) { it.sig = append([]byte{}, it.sig...); it.sig[r.IntN(32)] ^= 1 << r.IntN(8) },
		func(it *item) { it.sig = append([]byte{}, it.sig...); it.sig[32+r.IntN(32)] ^= 1 << r.IntN(8) },
		func(it *item) { it.pub = append([]byte{}, it.pub...); it.pub[r.IntN(32)] ^= 1 << r.IntN(8) },
		func(it *item) {
			it.sig = append([]byte{}, it.sig...)
			var c uint16
			for i := range 32 {
				c += uint16(it.sig[32+i]) + uint16(ell[i])
				it.sig[32+i], c = byte(c), c>>8
			}
		},
		func(it *item) { it.sig = append(append([]byte{}, identity...), it.sig[32:]...) },
		func(it *item) { it.pub = identity },
	}
	for round := range 200 {
		n, nkeys := 1+r.IntN(20), 1+r.IntN(3)
		b := batch(n, nkeys)
		m := round % len(mutations)
		mutations[m](&b[r.IntN(n)])
		var ours sigBatch
		theirs := ed25519consensus.NewBatchVerifier()
		single := true
		for _, it := range b {
			ours.add(it.pub, it.msg, it.sig)
			theirs.Add(it.pub, it.msg, it.sig)
			single = single && ed25519consensus.Verify(it.pub, it.msg, it.sig)
		}
		got, want := ours.verify(), theirs.Verify()
		if got != want || got != single {
			t.Fatalf("round %d (mutation %d, %d sigs, %d keys): sigBatch %v, ed25519consensus batch %v, one by one %v", round, m, n, nkeys, got, want, single)
		}
		if (m == 0) != got && m != 6 && m != 7 {
			t.Fatalf("round %d (mutation %d): batch verified %v", round, m, got)
		}
	}
	var empty sigBatch
	if empty.verify() {
		t.Fatal("empty batch accepted")
	}
}

// BenchmarkVerifyBatch: 64 envelopes of one sender (a fetch), VerifyBatch
// against ed25519consensus's batch verifier on the same inputs.
func BenchmarkVerifyBatch(b *testing.B) {
	alice := newDev(b)
	epoch, _ := testEpoch()
	var envs []*Envelope
	for i := range 64 {
		e := envelope(alice, []byte("conv"))
		e.Kind, e.Epoch, e.Body = KindControl, epoch[:], []byte{byte(i)}
		e.Sign(alice.key)
		envs = append(envs, e)
	}
	b.Run("sigBatch", func(b *testing.B) {
		for b.Loop() {
			for _, err := range VerifyBatch(envs) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(envs)), "us/sig")
	})
	b.Run("ed25519consensus", func(b *testing.B) {
		for b.Loop() {
			v := ed25519consensus.NewBatchVerifier()
			for _, e := range envs {
				pub, msg, err := e.verifyInput()
				if err != nil {
					b.Fatal(err)
				}
				v.Add(pub, msg, e.Sig)
			}
			if !v.Verify() {
				b.Fatal("refused")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(envs)), "us/sig")
	})
}
