package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/keywrap"
)

var fastKDF = keywrap.Params{Time: 1, MemoryKiB: 64, Threads: 1}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

type device struct {
	key   *DeviceKey
	chain []*x509.Certificate
}

func newRoot(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := NewRootCA(name, t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func enrol(t testing.TB, ca *CA, d Details, o SignOptions, now time.Time) device {
	t.Helper()
	k, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return enrolKey(t, ca, k, d, o, now)
}

func enrolKey(t testing.TB, ca *CA, k *DeviceKey, d Details, o SignOptions, now time.Time) device {
	t.Helper()
	csr, err := CreateCSR(k, d)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(r, o, now)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ParseCertificates(ca.Chain(cert))
	if err != nil {
		t.Fatal(err)
	}
	return device{key: k, chain: chain}
}

var alice = Details{Name: "Dr Alice Adams", StaffID: "A1001", Department: "Radiology", Site: "North", Registration: "GMC 7654321"}

func trustOf(t testing.TB, roots ...*CA) *Trust {
	t.Helper()
	var certs []*x509.Certificate
	for _, r := range roots {
		certs = append(certs, r.Cert)
	}
	tr, err := NewTrust(certs)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func revoke(t testing.TB, tr *Trust, ca *CA, n int64, serials ...*big.Int) {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: t0})
	}
	der, err := ca.CreateCRL(big.NewInt(n), entries, t0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseCRL(EncodeCRL(der))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tr.UpdateCRL(l); err != nil || !ok {
		t.Fatalf("UpdateCRL = %v, %v", ok, err)
	}
}

func TestAdmitGood(t *testing.T) {
	root := newRoot(t, "General Hospital")
	site, err := root.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	tr := trustOf(t, root)
	for name, ca := range map[string]*CA{"root": root, "site": site} {
		t.Run(name, func(t *testing.T) {
			d := enrol(t, ca, alice, SignOptions{Roles: []string{"doctor", "admin"}}, t0)
			s, err := tr.Admit(d.chain, d.key.PeerID(), t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != alice.Name || s.StaffID != "A1001" || s.Department != "Radiology" || s.Registration != alice.Registration {
				t.Fatalf("staff = %+v", s)
			}
			if s.Trust != "General Hospital" || !s.HasRole("admin") || s.HasRole("archive") {
				t.Fatalf("trust/roles = %q %v", s.Trust, s.Roles)
			}
			if string(s.KEMKey) != string(d.key.KEMPublic()) {
				t.Fatal("KEM key not carried into the certificate")
			}
			if got := s.NotAfter.Sub(t0); got != DefaultDays*24*time.Hour {
				t.Fatalf("validity %v, want %d days", got, DefaultDays)
			}
		})
	}
}

func TestAdmitErrors(t *testing.T) {
	root := newRoot(t, "General Hospital")
	site, err := root.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	other := newRoot(t, "Other Trust")
	sameName := newRoot(t, "General Hospital") // a forger's CA with our trust's name
	good := enrol(t, site, alice, SignOptions{}, t0)
	foreign := enrol(t, other, alice, SignOptions{}, t0)
	forged := enrol(t, sameName, alice, SignOptions{}, t0)
	future := enrol(t, root, alice, SignOptions{}, t0.Add(48*time.Hour))
	revoked := enrol(t, root, alice, SignOptions{}, t0)
	renewed := enrolKey(t, root, revoked.key, alice, SignOptions{}, t0)
	revokedSiteCA, _ := root.NewSiteCA("South", t0)
	underRevokedSite := enrol(t, revokedSiteCA, alice, SignOptions{}, t0)

	tr := trustOf(t, root)
	revoke(t, tr, root, 1, revoked.chain[0].SerialNumber, revokedSiteCA.Cert.SerialNumber)

	// A certificate whose signature bytes were altered.
	tampered := *good.chain[0]
	tampered.Signature = append([]byte(nil), tampered.Signature...)
	tampered.Signature[3] ^= 1
	// A CA certificate presented as a device certificate.
	caAsLeaf := []*x509.Certificate{site.Cert, root.Cert}

	now := t0.Add(time.Hour)
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		id    peer.ID
		now   time.Time
		want  error
	}{
		{"unknown CA", foreign.chain, foreign.key.PeerID(), now, ErrUnknownCA},
		{"same-name CA", forged.chain, forged.key.PeerID(), now, ErrUnknownCA},
		{"bad signature", []*x509.Certificate{&tampered, good.chain[1], good.chain[2]}, good.key.PeerID(), now, ErrBadSignature},
		{"expired", good.chain, good.key.PeerID(), t0.Add(31 * 24 * time.Hour), ErrExpired},
		{"not yet valid", future.chain, future.key.PeerID(), now, ErrNotYetValid},
		{"revoked", revoked.chain, revoked.key.PeerID(), now, ErrRevoked},
		{"issuing CA revoked", underRevokedSite.chain, underRevokedSite.key.PeerID(), now, ErrRevoked},
		{"peer mismatch", good.chain, foreign.key.PeerID(), now, ErrPeerMismatch},
		{"wrong key usage", caAsLeaf, good.key.PeerID(), now, ErrKeyUsage},
		{"chain too long", append(append([]*x509.Certificate{}, good.chain...), root.Cert), good.key.PeerID(), now, ErrChainTooLong},
		{"empty chain", nil, good.key.PeerID(), now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tr.Admit(tc.chain, tc.id, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Admit err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("renewed under new serial", func(t *testing.T) {
		if _, err := tr.Admit(renewed.chain, renewed.key.PeerID(), now); err != nil {
			t.Fatalf("renewed certificate refused: %v", err)
		}
	})
}

func TestUpdateCRL(t *testing.T) {
	root := newRoot(t, "General Hospital")
	other := newRoot(t, "Other Trust")
	site, _ := root.NewSiteCA("North", t0)
	tr := trustOf(t, root)
	mk := func(ca *CA, n int64) *x509.RevocationList {
		der, err := ca.CreateCRL(big.NewInt(n), nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseCRL(der)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if ok, err := tr.UpdateCRL(mk(root, 2)); !ok || err != nil {
		t.Fatalf("first CRL: %v %v", ok, err)
	}
	if ok, err := tr.UpdateCRL(mk(root, 1)); ok || err != nil {
		t.Fatalf("older CRL: replaced=%v err=%v, want ignored", ok, err)
	}
	if ok, err := tr.UpdateCRL(mk(root, 2)); ok || err != nil {
		t.Fatalf("equal CRL: replaced=%v err=%v, want ignored", ok, err)
	}
	if _, err := tr.UpdateCRL(mk(other, 9)); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("foreign CRL: %v", err)
	}
	// A CRL claiming our root's key ID but signed by another key.
	forged := mk(other, 10)
	forged.AuthorityKeyId = root.Cert.SubjectKeyId
	if _, err := tr.UpdateCRL(forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged CRL: %v", err)
	}
	if tr.CRLNumber(root.Cert).Int64() != 2 {
		t.Fatal("CRL number changed by a refused CRL")
	}
	// A site CA's CRL is accepted once the site CA is learnt from a chain.
	if _, err := tr.UpdateCRL(mk(site, 1)); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("site CRL before learning the site CA: %v", err)
	}
	tr.AddIssuers([]*x509.Certificate{site.Cert, root.Cert}, t0)
	if ok, err := tr.UpdateCRL(mk(site, 1)); !ok || err != nil {
		t.Fatalf("site CRL: %v %v", ok, err)
	}
	if len(tr.CRLs()) != 2 {
		t.Fatalf("CRLs() = %d, want 2", len(tr.CRLs()))
	}
}

func TestFederatedRoots(t *testing.T) {
	a, b := newRoot(t, "Trust A"), newRoot(t, "Trust B")
	tr := trustOf(t, a, b)
	for _, ca := range []*CA{a, b} {
		d := enrol(t, ca, alice, SignOptions{}, t0)
		if _, err := tr.Admit(d.chain, d.key.PeerID(), t0); err != nil {
			t.Fatalf("%s: %v", ca.Cert.Subject.CommonName, err)
		}
	}
}

func TestCSRRejectsBadSignature(t *testing.T) {
	k, _ := GenerateDeviceKey()
	csr, err := CreateCSR(k, alice)
	if err != nil {
		t.Fatal(err)
	}
	// Re-sign the same request body with another key: the embedded public key
	// no longer matches the signature.
	der := pemBody(t, csr)
	parsed, _ := x509.ParseCertificateRequest(der)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	sig := ed25519.Sign(other, parsed.RawTBSCertificateRequest)
	forged := replaceSuffix(der, parsed.Signature, sig)
	if _, err := ParseCSR(pemOf("CERTIFICATE REQUEST", forged)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged CSR: %v", err)
	}
	if _, err := ParseCSR([]byte("not pem")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage CSR: %v", err)
	}
	if _, err := CreateCSR(k, Details{Name: "No ID"}); !errors.Is(err, ErrNotStaff) {
		t.Fatalf("CSR without staff ID: %v", err)
	}
}

func TestDeviceKeyRoundTrip(t *testing.T) {
	k, _ := GenerateDeviceKey()
	raw, err := k.Marshal([]byte("pass"), fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDeviceKey(raw, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	if got.PeerID() != k.PeerID() || string(got.KEMPublic()) != string(k.KEMPublic()) {
		t.Fatal("keys changed in a round trip")
	}
	if _, err := ParseDeviceKey(raw, []byte("wrong")); !errors.Is(err, keywrap.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	// A CA key file is not a device key file.
	root := newRoot(t, "T")
	caKey, _ := root.MarshalKey([]byte("pass"), fastKDF)
	if _, err := ParseDeviceKey(caKey, []byte("pass")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("CA key read as device key: %v", err)
	}
}
