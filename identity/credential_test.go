package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
)

// bundleOf enrols alice with ca and returns her staff and credential chains
// as device.crt carries them.
func bundleOf(t *testing.T, ca *CA) (d device, cred []*x509.Certificate) {
	t.Helper()
	d = enrol(t, ca, alice, SignOptions{Roles: []string{"doctor", "anchor"}}, t0)
	pemBytes, err := ca.Bundle(d.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	chain, cred := SplitBundle(certs)
	if len(chain) != len(d.chain) || !chain[0].Equal(d.chain[0]) || len(cred) != len(chain) {
		t.Fatalf("bundle split into %d + %d certificates", len(chain), len(cred))
	}
	return d, cred
}

// The credential an unadmitted peer sees carries no staff details, yet
// admits, and revoking the staff certificate's serial revokes it.
func TestCredentialNamesNoOne(t *testing.T) {
	root := newRoot(t, "General Hospital")
	site, err := root.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []*CA{root, site} {
		d, cred := bundleOf(t, ca)
		for _, secret := range []string{alice.Name, alice.StaffID, alice.Department, alice.Registration} {
			if bytes.Contains(cred[0].Raw, []byte(secret)) {
				t.Errorf("credential carries %q", secret)
			}
		}
		tr := trustOf(t, root)
		tr.AddIssuers(cred, t0)
		c, err := tr.AdmitCredential(cred, d.key.PeerID(), t0)
		if err != nil {
			t.Fatalf("credential refused: %v", err)
		}
		if c.PeerID != d.key.PeerID() || !c.HasRole("anchor") || c.StaffSerial.Cmp(d.chain[0].SerialNumber) != 0 {
			t.Fatalf("credential reads %+v", c)
		}
		// Neither passes for the other.
		if _, err := tr.Admit(cred, d.key.PeerID(), t0); !errors.Is(err, ErrNotStaff) {
			t.Errorf("credential admitted as a staff certificate: %v", err)
		}
		if _, err := tr.AdmitCredential(d.chain, d.key.PeerID(), t0); !errors.Is(err, ErrNotStaff) {
			t.Errorf("staff certificate admitted as a credential: %v", err)
		}
		// Revoking the staff certificate's serial revokes the credential.
		revoke(t, tr, ca, 1, d.chain[0].SerialNumber)
		if _, err := tr.AdmitCredential(cred, d.key.PeerID(), t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("credential of a revoked staff certificate: %v", err)
		}
		// And the credential's own serial revokes it alone.
		d2, cred2 := bundleOf(t, ca)
		revoke(t, tr, ca, 2, d.chain[0].SerialNumber, cred2[0].SerialNumber)
		if _, err := tr.AdmitCredential(cred2, d2.key.PeerID(), t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("revoked credential: %v", err)
		}
	}
}

// A CA of another trust that picks the same SubjectKeyId as one of our
// roots must not take its place: our root's CRLs still apply.
func TestCollidingSubjectKeyID(t *testing.T) {
	ours := newRoot(t, "General Hospital")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := caTemplate(pkix.Name{CommonName: "Copycat", Organization: []string{"Copycat"}}, t0, RootValidity, 1)
	tmpl.SubjectKeyId = ours.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	copycat := &CA{Cert: cert, key: priv}

	d := enrol(t, ours, alice, SignOptions{}, t0)
	for _, order := range [][]*CA{{ours, copycat}, {copycat, ours}} {
		tr := trustOf(t, order...)
		revoke(t, tr, ours, 1, d.chain[0].SerialNumber)
		if _, err := tr.Admit(d.chain, d.key.PeerID(), t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("roots %s, %s: our CRL does not apply: %v", order[0].Cert.Subject.CommonName, order[1].Cert.Subject.CommonName, err)
		}
		// The copycat's CRL, naming the same key ID, is its own.
		l, _ := copycat.CreateCRL(big.NewInt(9), nil, t0)
		parsed, _ := x509.ParseRevocationList(l)
		if ok, err := tr.UpdateCRL(parsed); !ok || err != nil {
			t.Fatalf("copycat's own CRL: %v %v", ok, err)
		}
		if tr.CRLNumber(ours.Cert).Int64() != 1 || tr.CRLNumber(copycat.Cert).Int64() != 9 {
			t.Errorf("CRL numbers %v %v, want 1 and 9", tr.CRLNumber(ours.Cert), tr.CRLNumber(copycat.Cert))
		}
		if _, err := tr.Admit(d.chain, d.key.PeerID(), t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("copycat's CRL lifted our revocation: %v", err)
		}
	}
}
