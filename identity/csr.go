package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Request is a verified enrolment request: the CSR's signature checked, its
// staff details and KEM key read out.
type Request struct {
	Details
	PeerID    peer.ID
	PublicKey ed25519.PublicKey
	KEMKey    []byte
}

// CreateCSR makes a PKCS#10 request (PEM) signed by the device identity key,
// carrying the staff details and the KEM public key.
func CreateCSR(k *DeviceKey, d Details) ([]byte, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	kem, err := kemExt(KEMID, k.KEMPublic())
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{kem}
	if d.Registration != "" {
		reg, err := registrationExt(d.Registration)
		if err != nil {
			return nil, err
		}
		exts = append(exts, reg)
	}
	tmpl := &x509.CertificateRequest{
		Subject:         subject(d, ""),
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k.Identity)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func subject(d Details, trust string) pkix.Name {
	n := pkix.Name{CommonName: d.Name, SerialNumber: d.StaffID}
	if d.Department != "" {
		n.OrganizationalUnit = []string{d.Department}
	}
	if d.Site != "" {
		n.Locality = []string{d.Site}
	}
	if trust != "" {
		n.Organization = []string{trust}
	}
	return n
}

// ParseCSR decodes a PEM CSR and checks its signature and contents.
func ParseCSR(data []byte) (*Request, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("%w: CSR larger than %d bytes", ErrMalformed, maxPEM)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM certificate request", ErrMalformed)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CSR: %v", ErrMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR: %w: %v", ErrBadSignature, err)
	}
	pub, ok := csr.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("CSR: %w: key is not Ed25519", ErrKeyUsage)
	}
	r := &Request{PublicKey: pub, Details: Details{
		Name:       csr.Subject.CommonName,
		StaffID:    csr.Subject.SerialNumber,
		Department: first(csr.Subject.OrganizationalUnit),
		Site:       first(csr.Subject.Locality),
	}}
	if r.PeerID, err = PeerIDFromKey(pub); err != nil {
		return nil, err
	}
	for _, e := range csr.Extensions {
		switch {
		case e.Id.Equal(OIDKEMKey):
			if _, r.KEMKey, err = parseKEMExt(e.Value, true); err != nil {
				return nil, fmt.Errorf("CSR: %w", err)
			}
		case e.Id.Equal(OIDRegistration):
			reg, err := registrationValue(e.Value)
			if err != nil {
				return nil, fmt.Errorf("CSR: %w", err)
			}
			r.Registration = reg
		}
	}
	if r.KEMKey == nil {
		return nil, fmt.Errorf("CSR: %w: no KEM key", ErrNotStaff)
	}
	if err := r.Details.check(); err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	return r, nil
}
