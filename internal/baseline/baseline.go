// Package baseline measures, in the same run as a benchmark, the physical
// limits it is compared against: the raw cryptography of one 1 KiB op.
package baseline

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// OpSize is the payload size of the baselines.
const OpSize = 1024

// Receive is the receive floor of one 1 KiB op — SHA-256 of the envelope,
// one Ed25519 verify, one XChaCha20-Poly1305 open — in ops/s on one core,
// measured over n ops.
func Receive(n int) float64 {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	aead, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	ct := aead.Seal(nil, nonce, make([]byte, OpSize), nil)
	env := append(make([]byte, 150), ct...)
	sig := ed25519.Sign(priv, env)
	start := time.Now()
	for range n {
		sha256.Sum256(env)
		if !ed25519.Verify(pub, env, sig) {
			panic("baseline: verify failed")
		}
		if _, err := aead.Open(nil, nonce, ct, nil); err != nil {
			panic(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// Send is the send floor: XChaCha20-Poly1305 seal, SHA-256, Ed25519 sign.
func Send(n int) float64 {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	aead, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	pt := make([]byte, OpSize)
	start := time.Now()
	for range n {
		ct := aead.Seal(nil, nonce, pt, nil)
		sha256.Sum256(ct)
		ed25519.Sign(priv, ct)
	}
	return float64(n) / time.Since(start).Seconds()
}

// Runs and RunOps shape Best: seven runs of 500 ops (about 40 ms each on
// this machine).
const (
	Runs   = 7
	RunOps = 500
)

// Best is the best of Runs runs of measure over RunOps ops each: the
// machine's limit, which other load on a shared machine can only lower
// (one long run would count whatever else ran during it). A ratio against
// Best is the conservative one.
func Best(measure func(n int) float64) float64 {
	best := 0.0
	for range Runs {
		best = max(best, measure(RunOps))
	}
	return best
}

// Timer is the part of testing.B that Interleave needs.
type Timer interface {
	StopTimer()
	StartTimer()
}

// Interleave runs ours over total ops in chunks of chunk ops, and after
// each chunk, with t's timer stopped, measures raw over as many ops. It
// returns raw's rate in ops/s over all of them: a baseline taken under the
// same machine conditions as the code it is compared with, so a shared
// machine's drift (±15% between back-to-back runs here) lands on both.
func Interleave(t Timer, total, chunk int, ours func(n int), raw func(n int) float64) float64 {
	var rawSecs float64
	for done := 0; done < total; {
		n := min(chunk, total-done)
		ours(n)
		done += n
		t.StopTimer()
		rawSecs += float64(n) / raw(n)
		t.StartTimer()
	}
	if rawSecs == 0 {
		return 0
	}
	return float64(total) / rawSecs
}
