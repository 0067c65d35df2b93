package identity

import (
	"crypto/x509"
	"errors"
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
	oldRoot, newRoot2, b := newRoot(t, "General Hospital"), newRoot(t, "General Hospital 2027"), newRoot(t, "County Hospital")
	tr := trustOf(t, oldRoot, newRoot2)
	if _, _, err := tr.InstallFederation(signRecord(t, oldRoot, b, clinicians, 5, false)); err != nil {
		t.Fatal(err)
	}
	// The new root withdraws later (its own directory's record 1).
	withdraw, err := newRoot2.SignFederation(b.Cert, clinicians, 1, true, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, changed, err := tr.InstallFederation(withdraw)
	if err != nil {
		t.Fatal(err)
	}
	if !changed || tr.Federated() {
		t.Fatalf("withdrawal by our other root ignored (changed=%v): trust B still federated", changed)
	}
	// The old root's key cannot outrank it by number alone: its record 6,
	// issued before the withdrawal, is older.
	if _, changed, err := tr.InstallFederation(signRecord(t, oldRoot, b, clinicians, 6, false)); err != nil || changed || tr.Federated() {
		t.Fatalf("old root's higher-numbered, earlier record replaced the later withdrawal (changed=%v err=%v)", changed, err)
	}
}

// TestFederationOrderConverges: whatever order a device receives the
// records of two roots of ours in, it settles on the same one.
func TestFederationOrderConverges(t *testing.T) {
	r1, r2, b := newRoot(t, "General Hospital"), newRoot(t, "General Hospital 2027"), newRoot(t, "County Hospital")
	sign := func(ca *CA, n uint64, withdrawn bool, at time.Time) []byte {
		raw, err := ca.SignFederation(b.Cert, clinicians, n, withdrawn, at)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	recs := [][]byte{
		sign(r1, 5, false, t0), sign(r1, 6, false, t0.Add(time.Minute)),
		sign(r2, 1, true, t0.Add(time.Hour)), sign(r2, 2, false, t0.Add(time.Hour)),
		sign(r1, 7, true, t0.Add(time.Hour)),
	}
	// Newest: issued t0+1h, number 7 (r1's withdrawal) beats r2's 2.
	orders := [][]int{{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 4, 0, 3, 1}, {3, 0, 4, 1, 2}}
	for _, o := range orders {
		tr := trustOf(t, r1, r2)
		for _, i := range o {
			if _, _, err := tr.InstallFederation(recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		fs := tr.Federations()
		if len(fs) != 1 || fs[0].Number != 7 || fs[0].Signer != KeyOf(r1.Cert) || tr.Federated() {
			t.Fatalf("order %v: settled on %+v", o, fs[0].FederationRecord)
		}
	}
}

// TestFederationSiteCASignerInTrustListRefused: a site CA placed straight
// in the trust list (not only via a chain file) still cannot sign.
func TestFederationSiteCASignerInTrustListRefused(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	north, err := a.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrust([]*x509.Certificate{a.Cert, north.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.InstallFederation(forgeRecord(t, north.Cert, north.key, b, 1)); !errors.Is(err, ErrKeyUsage) {
		t.Fatalf("record signed by a site CA in the trust list: %v", err)
	}
	if tr.Federated() {
		t.Fatal("federated by a site CA's key")
	}
	// The root still signs.
	if _, changed, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 1, false)); err != nil || !changed {
		t.Fatalf("root's record: %v %v", changed, err)
	}
}

// TestFederatedCRLNumberNeverOurs: a federated trust's issuing CA (learnt
// from a presented chain) does not set the number either, and our site
// CA's CRL does.
func TestFederatedCRLNumberNeverOurs(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	tr := trustOf(t, a)
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 1, false)); err != nil {
		t.Fatal(err)
	}
	bNorth, err := b.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.AddFederatedIssuers([]*x509.Certificate{bNorth.Cert}, t0.Add(time.Hour)) {
		t.Fatal("B's site CA not learnt")
	}
	aNorth, err := a.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	tr.AddIssuers([]*x509.Certificate{aNorth.Cert}, t0.Add(time.Hour))
	for _, c := range []struct {
		ca   *CA
		n    int64
		want int64
	}{{bNorth, 1 << 40, 0}, {aNorth, 4, 4}} {
		der, err := c.ca.CreateCRL(big.NewInt(c.n), nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseCRL(der)
		if err != nil {
			t.Fatal(err)
		}
		if changed, err := tr.UpdateCRL(l); err != nil || !changed {
			t.Fatalf("CRL %d: %v %v", c.n, changed, err)
		}
		if got := tr.NewestCRLNumber(); got != c.want {
			t.Fatalf("after CRL %d: NewestCRLNumber = %d, want %d", c.n, got, c.want)
		}
	}
}

// TestFederatedIssuersBounded: trust B's CA mints site CAs without end;
// a device keeps at most MaxFederatedIssuers of them, forgets the one seen
// least recently, never one of ours, and a CRL of a forgotten CA stays in
// force.
func TestFederatedIssuersBounded(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	tr := trustOf(t, a)
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 1, false)); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Hour)
	ours, err := a.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	tr.AddIssuers([]*x509.Certificate{ours.Cert}, now)
	first, err := b.NewSiteCA("Site 0", t0)
	if err != nil {
		t.Fatal(err)
	}
	stolen := enrolFed(t, first, bob, "clinician")
	if !tr.AddFederatedIssuers([]*x509.Certificate{first.Cert}, now) {
		t.Fatal("first B site CA not learnt")
	}
	der, err := first.CreateCRL(big.NewInt(1), []x509.RevocationListEntry{{SerialNumber: stolen.cred[0].SerialNumber, RevocationTime: t0}}, t0)
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
	var kept *CA
	for i := 1; i <= MaxFederatedIssuers+6; i++ {
		s, err := b.NewSiteCA("Site", t0)
		if err != nil {
			t.Fatal(err)
		}
		tr.AddFederatedIssuers([]*x509.Certificate{s.Cert}, now)
		if i == 1 {
			kept = s
		}
		tr.SeenIssuer(KeyOf(kept.Cert)) // in use: met in chains all along
	}
	evicted := tr.TakeEvicted()
	if len(evicted) != 7 || len(tr.TakeEvicted()) != 0 {
		t.Fatalf("evicted %d", len(evicted))
	}
	tr.mu.RLock()
	_, haveOurs := tr.cas[KeyOf(ours.Cert)]
	_, haveKept := tr.cas[KeyOf(kept.Cert)]
	_, haveFirst := tr.cas[KeyOf(first.Cert)]
	n := len(tr.fedIssuers[KeyOf(b.Cert)])
	tr.mu.RUnlock()
	if !haveOurs || !haveKept || haveFirst || n != MaxFederatedIssuers {
		t.Fatalf("ours %v, in use %v, oldest %v, %d of B's kept", haveOurs, haveKept, haveFirst, n)
	}
	if err := admitFed(tr, stolen, now); !errors.Is(err, ErrRevoked) {
		t.Fatalf("device revoked by a forgotten CA's CRL: %v", err)
	}
}
