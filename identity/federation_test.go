package identity

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/medmesh/medmesh/internal/detcbor"
)

var clinicians = Policy{Roles: []string{"clinician"}, Departments: []string{"Emergency"}, Scope: ScopeInvited}

var bob = Details{Name: "Dr Bob Brown", StaffID: "B2002", Department: "Emergency", Site: "East", Registration: "GMC 1234567"}

// fedDevice is a device of another trust: its staff chain and credential.
type fedDevice struct {
	device
	cred []*x509.Certificate
}

func enrolFed(t *testing.T, ca *CA, d Details, roles ...string) fedDevice {
	t.Helper()
	dev := enrol(t, ca, d, SignOptions{Roles: roles}, t0)
	c, err := ca.SignCredential(dev.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return fedDevice{dev, append([]*x509.Certificate{c}, dev.chain[1:]...)}
}

func signRecord(t *testing.T, ca *CA, other *CA, p Policy, n uint64, withdrawn bool) []byte {
	t.Helper()
	raw, err := ca.SignFederation(other.Cert, p, n, withdrawn, t0)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// forgeRecord signs a record claiming signer with key (not signer's).
func forgeRecord(t *testing.T, signer *x509.Certificate, key ed25519.PrivateKey, other *CA, n uint64) []byte {
	t.Helper()
	body, err := detcbor.Marshal(FederationRecord{Version: 1, Signer: KeyOf(signer), Root: other.Cert.Raw, Policy: clinicians, Number: n, Issued: t0.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := detcbor.Marshal(signedFederation{Body: body, Sig: ed25519.Sign(key, append([]byte(fedDomain), body...))})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func admitFed(tr *Trust, d fedDevice, now time.Time) error {
	if _, _, err := tr.AdmitFederatedCredential(d.cred, d.key.PeerID(), now); err != nil {
		return err
	}
	_, _, err := tr.AdmitFederated(d.chain, d.key.PeerID(), now)
	return err
}

func TestFederationAdmitsByPolicy(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	tr := trustOf(t, a)
	ok := enrolFed(t, b, bob, "clinician")
	now := t0.Add(time.Hour)
	if err := admitFed(tr, ok, now); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("no record: err = %v, want ErrUnknownCA", err)
	}
	if _, changed, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 1, false)); err != nil || !changed {
		t.Fatalf("InstallFederation = %v, %v", changed, err)
	}
	cred, f, err := tr.AdmitFederatedCredential(ok.cred, ok.key.PeerID(), now)
	if err != nil || f.Other != KeyOf(b.Cert) || cred.PeerID != ok.key.PeerID() {
		t.Fatalf("federated credential: %v", err)
	}
	if err := admitFed(tr, ok, now); err != nil {
		t.Fatal(err)
	}
	// Federated is never our own staff.
	if _, err := tr.AdmitCredential(ok.cred, ok.key.PeerID(), now); err == nil {
		t.Fatal("a federated device was admitted as our own staff")
	}
	if _, err := tr.Admit(ok.chain, ok.key.PeerID(), now); err == nil {
		t.Fatal("a federated staff chain was admitted as our own staff")
	}
	// Role, department outside the policy.
	nurse := enrolFed(t, b, bob, "nurse")
	if err := admitFed(tr, nurse, now); !errors.Is(err, ErrPolicy) {
		t.Fatalf("role outside policy: err = %v", err)
	}
	radiology := bob
	radiology.Department = "Radiology"
	if err := admitFed(tr, enrolFed(t, b, radiology, "clinician"), now); !errors.Is(err, ErrPolicy) {
		t.Fatalf("department outside policy: err = %v", err)
	}
	// A device of a third trust, with no record.
	c := newRoot(t, "Third Trust")
	if err := admitFed(tr, enrolFed(t, c, bob, "clinician"), now); err == nil {
		t.Fatal("a device of a trust with no record was admitted")
	}
	// A device of our own trust is not "federated".
	own := enrolFed(t, a, alice, "clinician")
	if _, _, err := tr.AdmitFederatedCredential(own.cred, own.key.PeerID(), now); err == nil {
		t.Fatal("our own device admitted as federated")
	}
}

func TestFederationNewestWinsAndWithdraw(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	tr := trustOf(t, a)
	d := enrolFed(t, b, bob, "clinician")
	now := t0.Add(time.Hour)
	rec1 := signRecord(t, a, b, clinicians, 1, false)
	withdraw := signRecord(t, a, b, clinicians, 2, true)
	if _, _, err := tr.InstallFederation(rec1); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := tr.InstallFederation(withdraw); err != nil || !changed {
		t.Fatalf("withdraw = %v, %v", changed, err)
	}
	if err := admitFed(tr, d, now); err == nil {
		t.Fatal("admitted after withdrawal")
	}
	// The older record again is ignored: still withdrawn.
	if _, changed, err := tr.InstallFederation(rec1); err != nil || changed {
		t.Fatalf("older record: changed %v, err %v", changed, err)
	}
	if err := admitFed(tr, d, now); err == nil {
		t.Fatal("an older record undid the withdrawal")
	}
	fs := tr.Federations()
	if len(fs) != 1 || !fs[0].Withdrawn || fs[0].Number != 2 {
		t.Fatalf("Federations = %+v", fs)
	}
	// Renewed by a newer record: admitted again.
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, clinicians, 3, false)); err != nil {
		t.Fatal(err)
	}
	if err := admitFed(tr, d, now); err != nil {
		t.Fatal(err)
	}
}

func TestFederationRecordForgeries(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	site, err := a.NewSiteCA("North", t0)
	if err != nil {
		t.Fatal(err)
	}
	c := newRoot(t, "Third Trust")
	ourDevice := enrol(t, a, alice, SignOptions{Roles: []string{"admin"}}, t0)
	tr := trustOf(t, a)
	for name, tc := range map[string]struct {
		raw  []byte
		want error
	}{
		"signed by B's CA about itself":   {signRecord(t, b, c, clinicians, 9, false), ErrUnknownCA},
		"B's key claiming our root":       {forgeRecord(t, a.Cert, b.key, c, 9), ErrBadSignature},
		"our device's key claiming root":  {forgeRecord(t, a.Cert, ourDevice.key.Identity, b, 9), ErrBadSignature},
		"our site CA's key claiming root": {forgeRecord(t, a.Cert, site.key, b, 9), ErrBadSignature},
		"our site CA as signer":           {forgeRecord(t, site.Cert, site.key, b, 9), ErrUnknownCA},
		"naming our own root":             {forgeRecord(t, a.Cert, a.key, a, 9), ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := tr.InstallFederation(tc.raw); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tr.Federated() || len(tr.Federations()) != 0 {
				t.Fatal("a forged record was installed")
			}
		})
	}
	if _, err := site.SignFederation(b.Cert, clinicians, 1, false, t0); !errors.Is(err, ErrKeyUsage) {
		t.Fatalf("site CA signing a record: err = %v", err)
	}
	// A record with its signature flipped.
	raw := signRecord(t, a, b, clinicians, 1, false)
	raw[len(raw)-1] ^= 1
	if _, _, err := tr.InstallFederation(raw); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("flipped signature: err = %v", err)
	}
}

func TestFederatedCRLRevokes(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "County Hospital")
	bSite, err := b.NewSiteCA("East", t0)
	if err != nil {
		t.Fatal(err)
	}
	tr := trustOf(t, a)
	now := t0.Add(time.Hour)
	d := enrolFed(t, bSite, bob, "clinician")
	other := enrolFed(t, bSite, bob, "clinician")
	// B's CRL is refused before any record names B.
	der, _ := b.CreateCRL(big.NewInt(1), nil, t0)
	l, _ := ParseCRL(EncodeCRL(der))
	if _, err := tr.UpdateCRL(l); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("CRL of an unfederated trust: err = %v", err)
	}
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, Policy{Scope: ScopeInvited}, 1, false)); err != nil {
		t.Fatal(err)
	}
	if !tr.AddFederatedIssuers(d.chain, now) {
		t.Fatal("B's site CA not learnt")
	}
	if err := admitFed(tr, d, now); err != nil {
		t.Fatal(err)
	}
	revoke(t, tr, bSite, 1, d.chain[0].SerialNumber)
	if err := admitFed(tr, d, now); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked by B's CRL: err = %v", err)
	}
	if err := admitFed(tr, other, now); err != nil {
		t.Fatalf("another device of B: %v", err)
	}
}

// B's CA names itself as we do and issues a certificate with our trust's
// name and a colleague's staff ID: it is still a federated peer of B.
func TestFederationNameSpoofing(t *testing.T) {
	a, b := newRoot(t, "General Hospital"), newRoot(t, "General Hospital")
	tr := trustOf(t, a)
	if _, _, err := tr.InstallFederation(signRecord(t, a, b, Policy{Scope: ScopeInvited}, 1, false)); err != nil {
		t.Fatal(err)
	}
	spoof := enrolFed(t, b, alice, "admin")
	now := t0.Add(time.Hour)
	if _, err := tr.AdmitCredential(spoof.cred, spoof.key.PeerID(), now); err == nil {
		t.Fatal("B's look-alike credential admitted as our staff")
	}
	if _, err := tr.Admit(spoof.chain, spoof.key.PeerID(), now); err == nil {
		t.Fatal("B's look-alike certificate admitted as our staff")
	}
	s, f, err := tr.AdmitFederated(spoof.chain, spoof.key.PeerID(), now)
	if err != nil || f.Other != KeyOf(b.Cert) || s.Trust != "General Hospital" {
		t.Fatalf("federated = %v (it must be admitted only as B's)", err)
	}
}

func TestParsePolicy(t *testing.T) {
	good := `{"roles": ["clinician"], "departments": ["Emergency"], "sites": [], "scope": "invited"}`
	p, err := ParsePolicy([]byte(good))
	if err != nil || p.Scope != ScopeInvited || p.Roles[0] != "clinician" {
		t.Fatalf("ParsePolicy = %+v, %v", p, err)
	}
	for name, bad := range map[string]string{
		"unknown field":  `{"roles": [], "scope": "invited", "admin": true}`,
		"no scope":       `{"roles": ["clinician"]}`,
		"other scope":    `{"scope": "all"}`,
		"trailing":       `{"scope": "invited"} {}`,
		"empty role":     `{"roles": [""], "scope": "invited"}`,
		"not an object":  `["clinician"]`,
		"control in dep": "{\"departments\": [\"E\\u0000\"], \"scope\": \"invited\"}",
	} {
		if _, err := ParsePolicy([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := ParsePolicy([]byte(`{"scope":"invited","roles":["` + strings.Repeat("r,", 1) + `"]}`)); err != nil {
		t.Errorf("plain role refused: %v", err)
	}
}

func TestCADirFederate(t *testing.T) {
	dir := t.TempDir()
	d, err := InitRootCA(dir, "General Hospital", []byte("pw"), fastKDF, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	b := newRoot(t, "County Hospital")
	p1, f1, err := d.Federate(b.Cert, clinicians, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	d, err = OpenCADir(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	p2, f2, err := d.Federate(b.Cert, clinicians, true, t0)
	if err != nil || p1 != p2 || f2.Number <= f1.Number || !f2.Withdrawn {
		t.Fatalf("second record: %s %s %+v %v", p1, p2, f2, err)
	}
	if _, _, err := d.Federate(d.CA.Cert, clinicians, false, t0); err == nil {
		t.Fatal("federated with itself")
	}
}

func FuzzParseFederation(f *testing.F) {
	a, _ := NewRootCA("A", t0)
	b, _ := NewRootCA("B", t0)
	raw, _ := a.SignFederation(b.Cert, clinicians, 1, false, t0)
	f.Add(raw)
	f.Add(EncodeFederation(raw))
	w, _ := a.SignFederation(b.Cert, Policy{Scope: ScopeInvited}, 7, true, t0)
	f.Add(w)
	tr, _ := NewTrust([]*x509.Certificate{a.Cert})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseFederation(data)
		if err != nil {
			return
		}
		if r.Policy.Scope != ScopeInvited || r.Number == 0 {
			t.Fatal("accepted a record with no scope or number 0")
		}
		if got, _, err := tr.InstallFederation(data); err == nil && got.Signer != KeyOf(a.Cert) {
			t.Fatal("installed a record not signed by our root")
		}
	})
}
