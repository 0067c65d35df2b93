package chat

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/medmesh/medmesh/crdt"
)

var kib = strings.Repeat("x", 1024)

// rawReceive is the floor of the receive path for one 1 KiB op, measured in
// the same run: SHA-256 of the envelope, one Ed25519 verify, one
// XChaCha20-Poly1305 open. Returns ops/s.
func rawReceive(n int) float64 {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	key := make([]byte, 32)
	aead, _ := chacha20poly1305.NewX(key)
	nonce := make([]byte, 24)
	ct := aead.Seal(nil, nonce, []byte(kib), nil)
	env := append(make([]byte, 150), ct...)
	sig := ed25519.Sign(priv, env)
	start := time.Now()
	for range n {
		sha256.Sum256(env)
		if !ed25519.Verify(pub, env, sig) {
			panic("verify")
		}
		if _, err := aead.Open(nil, nonce, ct, nil); err != nil {
			panic(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// rawSend is the floor of the send path: XChaCha seal, SHA-256, Ed25519 sign.
func rawSend(n int) float64 {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key := make([]byte, 32)
	aead, _ := chacha20poly1305.NewX(key)
	nonce := make([]byte, 24)
	start := time.Now()
	for range n {
		ct := aead.Seal(nil, nonce, []byte(kib), nil)
		sha256.Sum256(ct)
		ed25519.Sign(priv, ct)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkIngest: decode + verify + decrypt + apply of 1 KiB messages, in
// order, by a member replica; ratio_vs_raw against rawReceive.
func BenchmarkIngest(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, envs := w.create(alice, "bench", bob)
	rb := w.join(bob, ra.Tag())
	deliver(b, envs, rb)
	msgs := make([][]byte, 0, b.N)
	for range b.N {
		out, _, err := ra.Send(kib, SendOptions{})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, out...)
	}
	raw := rawReceive(2000)
	b.ResetTimer()
	for _, m := range msgs {
		if err := rb.Receive(m); err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(len(msgs)) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "ops/s")
	b.ReportMetric(raw, "raw_ops/s")
	b.ReportMetric(rate/raw, "ratio_vs_raw")
}

// BenchmarkCreate: creating (and applying) 1 KiB messages; ratio_vs_raw
// against rawSend.
func BenchmarkCreate(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, _ := w.create(alice, "bench", bob)
	raw := rawSend(2000)
	b.ResetTimer()
	for range b.N {
		if _, _, err := ra.Send(kib, SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "ops/s")
	b.ReportMetric(raw, "raw_ops/s")
	b.ReportMetric(rate/raw, "ratio_vs_raw")
}

// BenchmarkMaterialise100k: the full state of a 100,000-op conversation,
// from its op store (time and allocations per materialisation).
func BenchmarkMaterialise100k(b *testing.B) {
	w := newWorld(b)
	alice, bob := w.device("alice"), w.device("bob")
	ra, _ := w.create(alice, "bench", bob)
	for i := range 100_000 {
		if _, _, err := ra.Send(fmt.Sprint("message ", i), SendOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ra.cache = nil
		if n := len(ra.State().Messages); n != 100_000 {
			b.Fatalf("%d messages", n)
		}
	}
}

// BenchmarkWelcome500: starting a new epoch for a 500-member group (one
// HPKE seal per member), beside 500 raw HPKE seals in the same run.
func BenchmarkWelcome500(b *testing.B) {
	w := newWorld(b)
	alice := w.device("alice")
	var members []peer.ID
	for i := range 499 {
		d := w.device(fmt.Sprint("m", i))
		members = append(members, d.ID)
		d.Prekeys.Current(w.now)
	}
	ra, _ := w.create(alice, "big", w.devicesExcept(alice)...)
	_ = members
	b.ResetTimer()
	for b.Loop() {
		if _, err := ra.rekey(append(members, alice.ID)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/rekey")
}

var _ = crdt.OpID{}
