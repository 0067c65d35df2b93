package identity

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medmesh/medmesh/keywrap"
)

func TestCADirLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	pass := []byte("ca pass")
	if _, err := InitRootCA(dir, "General Hospital", pass, fastKDF, false, t0); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if _, err := InitRootCA(dir, "Again", pass, fastKDF, false, t0); !errors.Is(err, ErrExists) {
		t.Fatalf("second init without force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, CACertFile)); string(before) != string(after) {
		t.Fatal("refused init changed ca.crt")
	}
	if st, _ := os.Stat(filepath.Join(dir, CAKeyFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key mode %v", st.Mode().Perm())
	}
	if _, err := OpenCADir(dir, []byte("wrong")); !errors.Is(err, keywrap.ErrWrongPassphrase) {
		t.Fatalf("wrong CA passphrase: %v", err)
	}

	devDir := filepath.Join(t.TempDir(), "dev")
	rootsPEM, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	k, err := InitDevice(devDir, alice, rootsPEM, []byte("dev pass"), fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitDevice(devDir, alice, rootsPEM, []byte("dev pass"), fastKDF); !errors.Is(err, ErrExists) {
		t.Fatalf("second device init: %v", err)
	}
	csr, _ := os.ReadFile(filepath.Join(devDir, DeviceCSRFile))
	ca, err := OpenCADir(dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	chain1, s1, err := ca.Sign(csr, SignOptions{Roles: []string{"doctor"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(devDir, DeviceCertFile), chain1, 0o644)
	if _, err := Renew(devDir, []byte("dev pass")); err != nil {
		t.Fatal(err)
	}
	csr2, _ := os.ReadFile(filepath.Join(devDir, DeviceCSRFile))
	chain2, s2, err := ca.Sign(csr2, SignOptions{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if s2.PeerID != k.PeerID() || s1.PeerID != s2.PeerID || s1.Serial.Cmp(s2.Serial) == 0 {
		t.Fatal("renewal must keep the peer ID and change the serial")
	}
	if !s2.HasRole("doctor") {
		t.Fatalf("renewal without --roles lost the roles: %v", s2.Roles)
	}

	tr, err := LoadTrust(filepath.Join(devDir, TrustFile))
	if err != nil {
		t.Fatal(err)
	}
	admit := func(chainPEM []byte) error {
		c, err := ParseCertificates(chainPEM)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tr.Admit(c, k.PeerID(), t0.Add(time.Minute))
		return err
	}
	// Revoke the first serial, named in decimal: the renewed one stays good.
	if _, n, err := ca.Revoke(s1.Serial.String(), "", "superseded", t0); err != nil || n != 1 {
		t.Fatalf("revoke: n=%d err=%v", n, err)
	}
	loadCRL(t, tr, dir)
	if err := admit(chain1); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked first cert: %v", err)
	}
	if err := admit(chain2); err != nil {
		t.Fatalf("renewed cert: %v", err)
	}
	// Revoke the device: every certificate issued to it.
	hit, n, err := ca.Revoke("", k.PeerID(), "lost phone", t0)
	if err != nil || n != 2 || len(hit) != 2 {
		t.Fatalf("revoke by peer: hit=%d n=%d err=%v", len(hit), n, err)
	}
	loadCRL(t, tr, dir)
	if err := admit(chain2); !errors.Is(err, ErrRevoked) {
		t.Fatalf("cert of a revoked device: %v", err)
	}
	// The record survives reopening.
	again, err := OpenCADir(dir, pass)
	if err != nil || len(again.Issued()) != 2 || again.log.CRLNumber != 2 {
		t.Fatalf("reopened record: %+v %v", again.log, err)
	}
	if _, _, err := again.Revoke("ABCDEF", "", "x", t0); !errors.Is(err, ErrUnknownSerial) {
		t.Fatalf("unknown serial: %v", err)
	}
	if _, _, err := again.Revoke("zz", "", "x", t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad serial: %v", err)
	}
}

func loadCRL(t *testing.T, tr *Trust, caDir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(caDir, CRLFile))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseCRL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tr.UpdateCRL(l); !ok || err != nil {
		t.Fatalf("UpdateCRL: %v %v", ok, err)
	}
}

func TestResolveSerialNotations(t *testing.T) {
	d := &CADir{log: issuedLog{Issued: []Issued{{Serial: SerialHex(big.NewInt(0x1A2B))}, {Serial: "10"}}}}
	for in, want := range map[string]string{"1A2B": "1A2B", "1a2b": "1A2B", "0x1a2b": "1A2B", "6699": "1A2B", "1a:2b": "1A2B"} {
		if got, err := d.ResolveSerial(in); err != nil || got != want {
			t.Errorf("ResolveSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// "16" is 0x16 in hex and 0x10 in decimal; only 0x10 was issued.
	if got, err := d.ResolveSerial("16"); err != nil || got != "10" {
		t.Errorf("ResolveSerial(16) = %q, %v", got, err)
	}
	d.log.Issued = append(d.log.Issued, Issued{Serial: "16"})
	if _, err := d.ResolveSerial("16"); !errors.Is(err, ErrAmbiguousSerial) {
		t.Errorf("ambiguous serial: %v", err)
	}
}

func TestSiteCADir(t *testing.T) {
	base := t.TempDir()
	pass := []byte("ca pass")
	root, err := InitRootCA(filepath.Join(base, "root"), "General Hospital", pass, fastKDF, false, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitSiteCA(filepath.Join(base, "north"), root, "North", pass, fastKDF, false, t0); err != nil {
		t.Fatal(err)
	}
	site, err := OpenCADir(filepath.Join(base, "north"), pass)
	if err != nil {
		t.Fatal(err)
	}
	if site.CA.Site() != "North" || len(site.CA.Parents) != 1 {
		t.Fatalf("site CA: site %q parents %d", site.CA.Site(), len(site.CA.Parents))
	}
	if _, err := site.CA.NewSiteCA("Deeper", t0); !errors.Is(err, ErrChainTooLong) {
		t.Fatalf("site under site: %v", err)
	}
	k, _ := GenerateDeviceKey()
	csr, _ := CreateCSR(k, Details{Name: "Bob", StaffID: "B1", Site: "South"})
	chain, staff, err := site.Sign(csr, SignOptions{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if staff.Site != "North" {
		t.Fatalf("site CA certified site %q", staff.Site)
	}
	all, _ := ParseCertificates(chain)
	certs, cred := SplitBundle(all)
	if len(all) != 4 || len(certs) != 3 || len(cred) != 3 {
		t.Fatalf("bundle of %d (chain %d, credential chain %d), want device → site → root, then the credential", len(all), len(certs), len(cred))
	}
	tr := trustOf(t, root.CA)
	if _, err := tr.Admit(certs, k.PeerID(), t0); err != nil {
		t.Fatal(err)
	}
	// Revocation by the site CA, learnt from the chain.
	if _, _, err := site.Revoke(staff.Serial.String(), "", "left", t0); err != nil {
		t.Fatal(err)
	}
	tr.AddIssuers(certs, t0)
	loadCRL(t, tr, filepath.Join(base, "north"))
	if _, err := tr.Admit(certs, k.PeerID(), t0); !errors.Is(err, ErrRevoked) {
		t.Fatalf("site-revoked device: %v", err)
	}
	if _, err := tr.AdmitCredential(cred, k.PeerID(), t0); !errors.Is(err, ErrRevoked) {
		t.Fatalf("credential of a site-revoked device: %v", err)
	}
}
