package identity

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/keywrap"
)

// File names in a CA directory (DESIGN.md, Files).
const (
	CACertFile   = "ca.crt"      // the CA certificate, then its parents up to the root
	CAKeyFile    = "ca.key"      // the CA key, sealed under the CA passphrase
	CRLFile      = "crl.pem"     // the newest CRL
	IssuedFile   = "issued.json" // record of issued serials and revocations
	maxIssuedLog = 64 << 20
)

// Issued records one certificate a CA signed.
type Issued struct {
	Serial    string    `json:"serial"` // hex, as openssl prints it
	PeerID    string    `json:"peer_id"`
	Name      string    `json:"name"`
	StaffID   string    `json:"staff_id"`
	Roles     []string  `json:"roles"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

type issuedLog struct {
	CRLNumber int64    `json:"crl_number"`
	Issued    []Issued `json:"issued"`
	// FederationNumber is the number of the last federation record
	// signed (federation.go); records are numbered across all other roots.
	FederationNumber uint64 `json:"federation_number,omitempty"`
}

// CADir is a CA kept in a directory: its certificate, sealed key, CRL and
// record of issued serials. Each operation writes its files atomically.
type CADir struct {
	Dir string
	CA  *CA
	log issuedLog
}

// InitRootCA creates a root CA in dir. It refuses to replace an existing CA
// unless force is set.
func InitRootCA(dir, name string, passphrase []byte, p keywrap.Params, force bool, now time.Time) (*CADir, error) {
	if err := prepareCADir(dir, force); err != nil {
		return nil, err
	}
	ca, err := NewRootCA(name, now)
	if err != nil {
		return nil, err
	}
	return writeCADir(dir, ca, passphrase, p)
}

// InitSiteCA creates a site issuing CA in dir, signed by the root CA in
// parent (opened with parentPass). The site key is sealed under passphrase.
func InitSiteCA(dir string, parent *CADir, site string, passphrase []byte, p keywrap.Params, force bool, now time.Time) (*CADir, error) {
	if err := prepareCADir(dir, force); err != nil {
		return nil, err
	}
	ca, err := parent.CA.NewSiteCA(site, now)
	if err != nil {
		return nil, err
	}
	return writeCADir(dir, ca, passphrase, p)
}

func prepareCADir(dir string, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil && !force {
		return fmt.Errorf("CA in %s: %w (use --force to replace it)", dir, ErrExists)
	}
	return nil
}

func writeCADir(dir string, ca *CA, passphrase []byte, p keywrap.Params) (*CADir, error) {
	key, err := ca.MarshalKey(passphrase, p)
	if err != nil {
		return nil, err
	}
	d := &CADir{Dir: dir, CA: ca}
	// Key first: a crash before the certificate is written leaves a key
	// that LoadCA rejects as not matching, never a certificate without key.
	if err := atomicfile.WriteFile(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		return nil, err
	}
	chain := EncodeCertificates(append([]*x509.Certificate{ca.Cert}, ca.Parents...)...)
	if err := atomicfile.WriteFile(filepath.Join(dir, CACertFile), chain, 0o644); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, CRLFile))
	if err := d.save(); err != nil {
		return nil, err
	}
	return d, nil
}

// OpenCADir loads the CA in dir, unsealing its key with passphrase.
func OpenCADir(dir string, passphrase []byte) (*CADir, error) {
	chain, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	ca, err := LoadCA(chain, key, passphrase)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	d := &CADir{Dir: dir, CA: ca}
	raw, err := os.ReadFile(filepath.Join(dir, IssuedFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", IssuedFile, err)
	case len(raw) > maxIssuedLog:
		return nil, fmt.Errorf("%s: %w: too large", IssuedFile, ErrMalformed)
	default:
		if err := json.Unmarshal(raw, &d.log); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", IssuedFile, ErrMalformed, err)
		}
	}
	return d, nil
}

func (d *CADir) save() error {
	raw, err := json.MarshalIndent(d.log, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(d.Dir, IssuedFile), append(raw, '\n'), 0o600)
}

// Issued returns the record of issued certificates.
func (d *CADir) Issued() []Issued { return slices.Clone(d.log.Issued) }

// Sign verifies a PEM CSR, issues a device certificate and its admission
// credential, and records the certificate's serial (a CRL entry for it
// revokes the credential too). It returns the PEM bundle for device.crt:
// the chain, device first, then the credential (CA.Bundle). With no roles given, a
// device this CA certified before keeps the roles it had (renewal).
func (d *CADir) Sign(csrPEM []byte, o SignOptions, now time.Time) ([]byte, *Staff, error) {
	r, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	if o.Roles == nil {
		for _, is := range slices.Backward(d.log.Issued) {
			if is.PeerID == r.PeerID.String() {
				o.Roles = is.Roles
				break
			}
		}
	}
	cert, err := d.CA.Sign(r, o, now)
	if err != nil {
		return nil, nil, err
	}
	staff, err := StaffFromCert(cert)
	if err != nil {
		return nil, nil, err
	}
	d.log.Issued = append(d.log.Issued, Issued{
		Serial: SerialHex(cert.SerialNumber), PeerID: staff.PeerID.String(), Name: staff.Name,
		StaffID: staff.StaffID, Roles: staff.Roles, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
	})
	// Record first: a serial that is recorded but never handed out is
	// harmless; a certificate out in the world without a record could not
	// be revoked by peer ID.
	if err := d.save(); err != nil {
		return nil, nil, err
	}
	bundle, err := d.CA.Bundle(cert)
	if err != nil {
		return nil, nil, err
	}
	return bundle, staff, nil
}

// SerialHex prints a serial as openssl does: upper-case hex, even length.
func SerialHex(s *big.Int) string {
	h := strings.ToUpper(hex.EncodeToString(s.Bytes()))
	if h == "" {
		h = "00"
	}
	return h
}

// ResolveSerial finds the issued serial the text names. It accepts hex as
// openssl prints it (with optional 0x and colons) or decimal; digits-only text
// that names two issued serials is refused as ambiguous.
func (d *CADir) ResolveSerial(text string) (string, error) {
	t := strings.ReplaceAll(strings.TrimSpace(text), ":", "")
	var cands []*big.Int
	if h, ok := strings.CutPrefix(strings.ToLower(t), "0x"); ok {
		if v, ok := new(big.Int).SetString(h, 16); ok {
			cands = append(cands, v)
		}
	} else {
		if v, ok := new(big.Int).SetString(t, 16); ok {
			cands = append(cands, v)
		}
		if v, ok := new(big.Int).SetString(t, 10); ok {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("serial %q: %w: neither hex nor decimal", text, ErrMalformed)
	}
	var found []string
	for _, c := range cands {
		h := SerialHex(c)
		if slices.ContainsFunc(d.log.Issued, func(is Issued) bool { return is.Serial == h }) && !slices.Contains(found, h) {
			found = append(found, h)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("serial %s: %w", text, ErrUnknownSerial)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("serial %s: %w", text, ErrAmbiguousSerial)
}

// Revoke marks certificates revoked — one serial, or (when peerID is set)
// every certificate issued to that device — and writes a new CRL with the
// next number. It returns the records it revoked and the new CRL number.
func (d *CADir) Revoke(serialText string, peerID peer.ID, reason string, now time.Time) ([]Issued, int64, error) {
	if strings.TrimSpace(reason) == "" {
		return nil, 0, fmt.Errorf("revocation needs a reason: %w", ErrMalformed)
	}
	var match func(Issued) bool
	switch {
	case peerID != "":
		match = func(is Issued) bool { return is.PeerID == peerID.String() }
	default:
		serial, err := d.ResolveSerial(serialText)
		if err != nil {
			return nil, 0, err
		}
		match = func(is Issued) bool { return is.Serial == serial }
	}
	var hit []Issued
	for i, is := range d.log.Issued {
		if match(is) {
			if is.RevokedAt.IsZero() {
				d.log.Issued[i].RevokedAt, d.log.Issued[i].Reason = now.UTC(), reason
			}
			hit = append(hit, d.log.Issued[i])
		}
	}
	if len(hit) == 0 {
		return nil, 0, fmt.Errorf("peer %s: %w", peerID, ErrUnknownSerial)
	}
	d.log.CRLNumber++
	der, err := d.CA.CreateCRL(big.NewInt(d.log.CRLNumber), d.crlEntries(now), now)
	if err != nil {
		return nil, 0, err
	}
	if err := d.save(); err != nil {
		return nil, 0, err
	}
	if err := atomicfile.WriteFile(filepath.Join(d.Dir, CRLFile), EncodeCRL(der), 0o644); err != nil {
		return nil, 0, err
	}
	return hit, d.log.CRLNumber, nil
}

// crlEntries lists the revoked certificates that have not yet expired;
// an expired certificate is refused on its dates alone.
func (d *CADir) crlEntries(now time.Time) []x509.RevocationListEntry {
	var out []x509.RevocationListEntry
	for _, is := range d.log.Issued {
		if is.RevokedAt.IsZero() || now.After(is.NotAfter) {
			continue
		}
		b, err := hex.DecodeString(is.Serial)
		if err != nil {
			continue
		}
		out = append(out, x509.RevocationListEntry{SerialNumber: new(big.Int).SetBytes(b), RevocationTime: is.RevokedAt})
	}
	return out
}
