package identity

import (
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRedteam10SiteCAKeySignsFederation: "only a root key of this trust
// signs records: never an issuing CA" is enforced when signing
// (SignFederation) but not when verifying: verifyFederation accepts any
// certificate of Trust.list, and LoadTrust/NewTrust put every certificate
// of DEV/ca.crt there without asking that it be self-signed. A device
// initialised with a site CA's ca.crt (site, then root — what `ca init
// --parent` writes) trusts the site CA as a root, and whoever holds the
// site CA's key can federate the whole trust with any other trust.
func TestRedteam10SiteCAKeySignsFederation(t *testing.T) {
	t.Skip("redteam10: verifyFederation accepts a record signed by any trust-list certificate, a site CA loaded from a site's ca.crt included")
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	north, err := a.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, EncodeCertificates(append([]*x509.Certificate{north.Cert}, north.Parents...)...), 0o644); err != nil {
		t.Fatal(err)
	}
	tr, err := LoadTrust(path)
	if err != nil {
		t.Skipf("LoadTrust refuses a site CA's ca.crt: %v", err)
	}
	// The site CA's holder signs a record by hand (SignFederation refuses it).
	raw := forgeRecord(t, north.Cert, north.key, b, 1)
	if _, changed, err := tr.InstallFederation(raw); err == nil && changed {
		ok := enrolFed(t, b, bob, "clinician")
		if aerr := admitFed(tr, ok, t0.Add(time.Hour)); aerr == nil {
			t.Fatal("a federation record signed by a site (issuing) CA's key was installed, and admits trust B's devices")
		}
		t.Fatal("a federation record signed by a site (issuing) CA's key was installed")
	}
}

// TestRedteam10FederatedCRLNumberInflates: NewestCRLNumber (Status's
// crl_number, POST /api/v1/trust/crl's answer, the audit trail's "CRL
// applied" entry) is the highest number over every CA held — federated
// trusts' CAs included. Trust B's CA publishes a CRL numbered 2^62 and
// every device of ours reports that number forever: an operator checking
// that our CRL 3 reached a device (or the audit trail recording which CRL
// was applied) is told a number of B's choosing.
func TestRedteam10FederatedCRLNumberInflates(t *testing.T) {
	t.Skip("redteam10: NewestCRLNumber (status crl_number, audit CRL applied) takes federated trusts' CRL numbers, so trust B's CA sets it")
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	tr := trustOf(t, a)
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 1, false)); err != nil {
		t.Fatal(err)
	}
	revoke(t, tr, a, 3)
	if n := tr.NewestCRLNumber(); n != 3 {
		t.Fatalf("our CRL: NewestCRLNumber = %d", n)
	}
	der, err := b.CreateCRL(big.NewInt(1<<62), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseCRL(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.UpdateCRL(l); err != nil {
		t.Fatal(err)
	}
	if n := tr.NewestCRLNumber(); n != 3 {
		t.Fatalf("NewestCRLNumber = %d after trust B's CRL: another trust's CA sets the CRL number our devices report", n)
	}
}

// TestRedteam10SecondRootCannotWithdraw: a trust of several roots (DEV/ca.crt
// holds "one or more roots"; a root rollover) keeps one record per other
// root, ordered by Number alone — yet each root's CA directory counts its
// own numbers (CADir.Federate: log.FederationNumber + 1). The new root's
// withdrawal (its record 1) is ignored while the old root's record 5 is
// held: the federation cannot be withdrawn from the new root, and the old
// root's key outranks it for as long as its counter is higher.
func TestRedteam10SecondRootCannotWithdraw(t *testing.T) {
	t.Skip("redteam10: records of several own roots are ordered by per-CA-directory numbers, so one root cannot withdraw what another signed")
	oldRoot, newRoot2, b := newRoot(t, "General Hospital"), newRoot(t, "General Hospital 2027"), newRoot(t, "County Hospital")
	tr := trustOf(t, oldRoot, newRoot2)
	if _, _, err := tr.InstallFederation(signRecord(t, oldRoot, b, clinicians, 5, false)); err != nil {
		t.Fatal(err)
	}
	_, changed, err := tr.InstallFederation(signRecord(t, newRoot2, b, clinicians, 1, true))
	if err != nil {
		t.Fatal(err)
	}
	if !changed || tr.Federated() {
		t.Fatalf("withdrawal by our other root ignored (changed=%v): trust B still federated", changed)
	}
}
