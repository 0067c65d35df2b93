package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// BenchmarkAdmit measures the admission check of a device → site → root
// chain against a 10,000-entry CRL, beside the floor it cannot beat: two raw
// Ed25519 verifications (device and site signatures), measured in the same
// run. admit/s ÷ (2×verify)/s is reported as ratio_vs_2verify.
func BenchmarkAdmit(b *testing.B) {
	root := newRoot(b, "General Hospital")
	site, err := root.NewSiteCA("North", t0)
	if err != nil {
		b.Fatal(err)
	}
	d := enrol(b, site, alice, SignOptions{Roles: []string{"doctor"}}, t0)
	tr := trustOf(b, root)
	tr.AddIssuers(d.chain, t0)
	entries := make([]x509.RevocationListEntry, 10_000)
	for i := range entries {
		entries[i] = x509.RevocationListEntry{SerialNumber: newSerial(), RevocationTime: t0}
	}
	der, err := site.CreateCRL(big.NewInt(1), entries, t0)
	if err != nil {
		b.Fatal(err)
	}
	l, err := ParseCRL(der)
	if err != nil {
		b.Fatal(err)
	}
	if ok, err := tr.UpdateCRL(l); !ok || err != nil {
		b.Fatal(ok, err)
	}
	id := d.key.PeerID()
	now := t0.Add(time.Hour)

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 256)
	sig := ed25519.Sign(priv, msg)
	const baselineRounds = 2000
	start := time.Now()
	for range baselineRounds * 2 { // two verifications per admission
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
	baseline := float64(baselineRounds) / time.Since(start).Seconds()

	b.ResetTimer()
	for b.Loop() {
		if _, err := tr.Admit(d.chain, id, now); err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "admits/s")
	b.ReportMetric(baseline, "2verify/s")
	b.ReportMetric(rate/baseline, "ratio_vs_2verify")
}
