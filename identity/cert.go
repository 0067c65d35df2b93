package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
)

// medmesh certificate extensions (see doc.go).
var (
	OIDRoles        = asn1.ObjectIdentifier{1, 3, 6, 1, 3, 7626, 1, 1}
	OIDKEMKey       = asn1.ObjectIdentifier{1, 3, 6, 1, 3, 7626, 1, 2}
	OIDRegistration = asn1.ObjectIdentifier{1, 3, 6, 1, 3, 7626, 1, 3}
)

// Field limits, so that a certificate or CSR can't smuggle megabytes.
const (
	maxField  = 128
	maxRoles  = 16
	maxPEM    = 64 * 1024
	maxKEMKey = 2048
)

// Details are the staff details a device asks to be certified for.
type Details struct {
	Name         string
	StaffID      string
	Department   string
	Site         string
	Registration string
}

func (d Details) check() error {
	if strings.TrimSpace(d.Name) == "" || strings.TrimSpace(d.StaffID) == "" {
		return fmt.Errorf("%w: name and staff ID are required", ErrNotStaff)
	}
	for _, f := range []string{d.Name, d.StaffID, d.Department, d.Site, d.Registration} {
		if err := checkField(f); err != nil {
			return err
		}
	}
	return nil
}

func checkField(s string) error {
	if len(s) > maxField || !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\n\r") {
		return fmt.Errorf("%w: field longer than %d bytes or not plain text", ErrMalformed, maxField)
	}
	return nil
}

// Staff is a verified staff identity: what a device certificate says.
type Staff struct {
	PeerID       peer.ID
	Name         string
	StaffID      string
	Department   string
	Site         string
	Registration string
	Trust        string
	Roles        []string
	KEMID        uint16
	KEMKey       []byte
	Serial       *big.Int
	Issuer       string
	NotBefore    time.Time
	NotAfter     time.Time
}

// KEMFingerprint is a short hex fingerprint of the KEM public key.
func (s *Staff) KEMFingerprint() string {
	sum := sha256.Sum256(s.KEMKey)
	return hex.EncodeToString(sum[:16])
}

// HasRole reports whether the certificate grants role.
func (s *Staff) HasRole(role string) bool {
	for _, r := range s.Roles {
		if r == role {
			return true
		}
	}
	return false
}

type kemKeyExt struct {
	KEM int
	Key []byte
}

// StaffFromCert reads the staff identity a device certificate carries. It does
// not verify the certificate; Trust.Admit does.
func StaffFromCert(c *x509.Certificate) (*Staff, error) {
	if IsCredential(c) {
		return nil, fmt.Errorf("%w: an admission credential, not a staff certificate", ErrNotStaff)
	}
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: device key is not Ed25519", ErrKeyUsage)
	}
	id, err := PeerIDFromKey(pub)
	if err != nil {
		return nil, err
	}
	s := &Staff{
		PeerID:    id,
		Name:      c.Subject.CommonName,
		StaffID:   c.Subject.SerialNumber,
		Serial:    c.SerialNumber,
		Issuer:    c.Issuer.CommonName,
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
	}
	s.Department = first(c.Subject.OrganizationalUnit)
	s.Site = first(c.Subject.Locality)
	s.Trust = first(c.Subject.Organization)
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(OIDRoles):
			if rest, err := asn1.UnmarshalWithParams(e.Value, &s.Roles, ""); err != nil || len(rest) > 0 || len(s.Roles) > maxRoles {
				return nil, fmt.Errorf("%w: roles extension", ErrMalformed)
			}
		case e.Id.Equal(OIDKEMKey):
			// The CA parsed the key in full when it signed the CSR; here a
			// length check suffices and keeps admission cheap.
			if s.KEMID, s.KEMKey, err = parseKEMExt(e.Value, false); err != nil {
				return nil, err
			}
		case e.Id.Equal(OIDRegistration):
			if s.Registration, err = registrationValue(e.Value); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range s.Roles {
		if checkField(r) != nil {
			return nil, fmt.Errorf("%w: role", ErrMalformed)
		}
	}
	if s.Name == "" || s.StaffID == "" || s.KEMKey == nil {
		return nil, fmt.Errorf("%w: missing name, staff ID or KEM key", ErrNotStaff)
	}
	return s, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func kemExt(id uint16, key []byte) (pkix.Extension, error) {
	v, err := asn1.Marshal(kemKeyExt{KEM: int(id), Key: key})
	return pkix.Extension{Id: OIDKEMKey, Value: v}, err
}

// kemKeySize is the serialised MLKEM768-X25519 public key: 1184 + 32 bytes.
const kemKeySize = 1216

func parseKEMExt(der []byte, full bool) (uint16, []byte, error) {
	var k kemKeyExt
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 {
		return 0, nil, fmt.Errorf("%w: KEM key extension", ErrMalformed)
	}
	if k.KEM != int(KEMID) || len(k.Key) > maxKEMKey {
		return 0, nil, fmt.Errorf("%w: unsupported KEM %#x", ErrMalformed, k.KEM)
	}
	if len(k.Key) != kemKeySize {
		return 0, nil, fmt.Errorf("%w: KEM public key of %d bytes", ErrMalformed, len(k.Key))
	}
	if !full {
		return KEMID, k.Key, nil
	}
	if _, err := hpke.MLKEM768X25519().NewPublicKey(k.Key); err != nil {
		return 0, nil, fmt.Errorf("%w: KEM public key: %v", ErrMalformed, err)
	}
	return KEMID, k.Key, nil
}

func rolesExt(roles []string) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(roles, "")
	return pkix.Extension{Id: OIDRoles, Value: v}, err
}

func registrationValue(der []byte) (string, error) {
	var reg string
	if rest, err := asn1.UnmarshalWithParams(der, &reg, "utf8"); err != nil || len(rest) > 0 || checkField(reg) != nil {
		return "", fmt.Errorf("%w: registration extension", ErrMalformed)
	}
	return reg, nil
}

func registrationExt(reg string) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(reg, "utf8")
	return pkix.Extension{Id: OIDRegistration, Value: v}, err
}

// ParseCertificates decodes every CERTIFICATE block of a PEM file, in order.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("%w: PEM larger than %d bytes", ErrMalformed, maxPEM)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE", ErrMalformed, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no PEM certificate found", ErrMalformed)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, fmt.Errorf("%w: trailing data after certificates", ErrMalformed)
	}
	return certs, nil
}

// EncodeCertificates writes certificates as a PEM chain.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParseCRL decodes a PEM (or DER) CRL. It does not check the signature;
// Trust.UpdateCRL does.
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if len(data) > 16<<20 {
		return nil, fmt.Errorf("%w: CRL larger than 16 MiB", ErrMalformed)
	}
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("%w: PEM block %q, want X509 CRL", ErrMalformed, b.Type)
		}
		der = b.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: CRL: %v", ErrMalformed, err)
	}
	if crl.Number == nil || crl.Number.Sign() <= 0 || len(crl.AuthorityKeyId) == 0 {
		return nil, fmt.Errorf("%w: CRL lacks a CRL number or authority key ID", ErrMalformed)
	}
	return crl, nil
}

// EncodeCRL writes a CRL as PEM.
func EncodeCRL(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
