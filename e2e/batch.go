package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"

	"filippo.io/edwards25519"
)

// sigBatch checks Ed25519 signatures together under ZIP 215, the rules of
// ed25519consensus (which Verify uses one by one): with random 128-bit z_i,
//
//	[8]( [-Σ z_i s_i]B + Σ [z_i]R_i + Σ_A [Σ_{i: A_i = A} z_i k_i]A ) = 0
//
// — ed25519consensus's batch equation with the terms of one key summed
// into one, which is the same sum: a batch from one sender multiplies
// n+2 points instead of 2n+1 and decodes its key once.
type sigBatch struct {
	pubs       [][]byte
	msgs, sigs [][]byte
}

func (b *sigBatch) add(pub ed25519.PublicKey, msg, sig []byte) {
	b.pubs, b.msgs, b.sigs = append(b.pubs, pub), append(b.msgs, msg), append(b.sigs, sig)
}

// verify reports whether every signature of the batch is valid; false
// for an empty batch.
func (b *sigBatch) verify() bool {
	n := len(b.sigs)
	if n == 0 {
		return false
	}
	svals := make([]edwards25519.Scalar, 1+2*n)
	pvals := make([]edwards25519.Point, 1+2*n)
	bcoeff := &svals[0]
	pvals[0].Set(edwards25519.NewGeneratorPoint())
	keys := make(map[[ed25519.PublicKeySize]byte]int, 1)
	zs := make([]byte, 16*n)
	if _, err := rand.Read(zs); err != nil {
		return false
	}
	var zb [32]byte
	var digest [64]byte
	var s, k edwards25519.Scalar
	h := sha512.New()
	for i := range n {
		pub, sig := b.pubs[i], b.sigs[i]
		if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			return false
		}
		// ZIP 215: SetBytes accepts non-canonical point encodings.
		if _, err := pvals[1+i].SetBytes(sig[:32]); err != nil {
			return false
		}
		z := &svals[1+i]
		copy(zb[:16], zs[16*i:])
		if _, err := z.SetCanonicalBytes(zb[:]); err != nil {
			return false
		}
		if _, err := s.SetCanonicalBytes(sig[32:]); err != nil {
			return false
		}
		bcoeff.MultiplyAdd(z, &s, bcoeff)
		h.Reset()
		h.Write(sig[:32])
		h.Write(pub)
		h.Write(b.msgs[i])
		h.Sum(digest[:0])
		if _, err := k.SetUniformBytes(digest[:]); err != nil {
			return false
		}
		j, ok := keys[[ed25519.PublicKeySize]byte(pub)]
		if !ok {
			j = 1 + n + len(keys)
			keys[[ed25519.PublicKeySize]byte(pub)] = j
			if _, err := pvals[j].SetBytes(pub); err != nil {
				return false
			}
		}
		svals[j].MultiplyAdd(z, &k, &svals[j])
	}
	bcoeff.Negate(bcoeff)
	m := 1 + n + len(keys)
	scalars := make([]*edwards25519.Scalar, m)
	points := make([]*edwards25519.Point, m)
	for i := range m {
		scalars[i], points[i] = &svals[i], &pvals[i]
	}
	check := new(edwards25519.Point).VarTimeMultiScalarMult(scalars, points)
	check.MultByCofactor(check)
	return check.Equal(edwards25519.NewIdentityPoint()) == 1
}
