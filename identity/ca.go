package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"github.com/medmesh/medmesh/keywrap"
)

// Validity defaults.
const (
	RootValidity   = 10 * 365 * 24 * time.Hour
	SiteValidity   = 5 * 365 * 24 * time.Hour
	DefaultDays    = 30
	MaxDays        = 397
	crlValidity    = 30 * 24 * time.Hour
	backdate       = 5 * time.Minute // tolerate small clock skew between CA and devices
	serialBytes    = 16
	maxChainLength = 3 // device → site → root
)

// CA is a certificate authority: a root, or a site issuing CA under one.
type CA struct {
	Cert *x509.Certificate
	// Parents is the chain above Cert up to and including the root, nearest
	// first; empty for a root.
	Parents []*x509.Certificate
	key     ed25519.PrivateKey
}

// NewRootCA makes a self-signed Ed25519 root for a trust. It may sign one
// level of site issuing CAs.
func NewRootCA(name string, now time.Time) (*CA, error) {
	if err := checkField(name); err != nil || name == "" {
		return nil, fmt.Errorf("CA name: %w", ErrMalformed)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := caTemplate(pkix.Name{CommonName: name, Organization: []string{name}}, now, RootValidity, 1)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create root CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// NewSiteCA makes an issuing CA for one site, signed by ca (which must be a
// root). Its path length is 0: it signs devices only.
func (ca *CA) NewSiteCA(site string, now time.Time) (*CA, error) {
	if len(ca.Parents) != 0 {
		return nil, fmt.Errorf("site CA under a site CA: %w", ErrChainTooLong)
	}
	if err := checkField(site); err != nil || site == "" {
		return nil, fmt.Errorf("site name: %w", ErrMalformed)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	trust := first(ca.Cert.Subject.Organization)
	name := pkix.Name{CommonName: trust + " – " + site, Organization: []string{trust}, Locality: []string{site}}
	tmpl := caTemplate(name, now, SiteValidity, 0)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create site CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Parents: []*x509.Certificate{ca.Cert}, key: key}, nil
}

func caTemplate(name pkix.Name, now time.Time, validity time.Duration, pathLen int) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               name,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
}

// newSerial is a random positive 128-bit serial.
func newSerial() *big.Int {
	b := make([]byte, serialBytes)
	for {
		rand.Read(b)
		if s := new(big.Int).SetBytes(b); s.Sign() > 0 {
			return s
		}
	}
}

// Site is the site a site CA issues for, or "" for a root.
func (ca *CA) Site() string {
	if len(ca.Parents) == 0 {
		return ""
	}
	return first(ca.Cert.Subject.Locality)
}

// SignOptions are the CA's decisions when it issues a device certificate.
type SignOptions struct {
	Days  int      // validity in days; 0 means DefaultDays
	Roles []string // roles granted
}

// Sign issues a device certificate for a verified request and returns the
// certificate. The caller has checked the person; Sign checks the request.
func (ca *CA) Sign(r *Request, o SignOptions, now time.Time) (*x509.Certificate, error) {
	if o.Days == 0 {
		o.Days = DefaultDays
	}
	if o.Days < 0 || o.Days > MaxDays {
		return nil, fmt.Errorf("validity of %d days: %w (1..%d)", o.Days, ErrMalformed, MaxDays)
	}
	if len(o.Roles) > maxRoles {
		return nil, fmt.Errorf("%d roles: %w (at most %d)", len(o.Roles), ErrMalformed, maxRoles)
	}
	for _, role := range o.Roles {
		if err := checkField(role); err != nil || role == "" {
			return nil, fmt.Errorf("role %q: %w", role, ErrMalformed)
		}
	}
	d := r.Details
	if site := ca.Site(); site != "" {
		d.Site = site // a site CA vouches for its own site only
	}
	kem, err := kemExt(KEMID, r.KEMKey)
	if err != nil {
		return nil, err
	}
	roles, err := rolesExt(o.Roles)
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{roles, kem}
	if d.Registration != "" {
		reg, err := registrationExt(d.Registration)
		if err != nil {
			return nil, err
		}
		exts = append(exts, reg)
	}
	notAfter := now.Add(time.Duration(o.Days) * 24 * time.Hour)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               subject(d, first(ca.Cert.Subject.Organization)),
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		ExtraExtensions:       exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, r.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign device certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Chain is the device's PEM chain for a certificate ca issued: device first,
// then ca and its parents up to the root.
func (ca *CA) Chain(device *x509.Certificate) []byte {
	certs := append([]*x509.Certificate{device, ca.Cert}, ca.Parents...)
	return EncodeCertificates(certs...)
}

// CreateCRL signs a CRL with the given number and entries, as DER.
func (ca *CA) CreateCRL(number *big.Int, entries []x509.RevocationListEntry, now time.Time) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create CRL: %w", err)
	}
	return der, nil
}

// MarshalKey seals the CA key under passphrase (the PEM of CA/ca.key).
func (ca *CA) MarshalKey(passphrase []byte, p keywrap.Params) ([]byte, error) {
	return marshalCAKey(ca.key, passphrase, p)
}

// LoadCA rebuilds a CA from its certificate chain (CA first, then parents)
// and its sealed key, checking that key and certificate belong together.
func LoadCA(chainPEM, keyPEM, passphrase []byte) (*CA, error) {
	certs, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := parseCAKey(keyPEM, passphrase)
	if err != nil {
		return nil, err
	}
	pub, ok := certs[0].PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("CA key does not match CA certificate: %w", ErrMalformed)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("CA certificate is not a CA: %w", ErrKeyUsage)
	}
	return &CA{Cert: certs[0], Parents: certs[1:], key: key}, nil
}
