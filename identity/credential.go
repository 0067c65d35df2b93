package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// OIDStaffCert marks an admission credential and links it to the staff
// certificate it was issued with: its value is that certificate's serial
// (INTEGER). A CRL entry for the staff certificate's serial revokes the
// credential too, so every tool that revokes "the serial of device.crt"
// revokes both.
var OIDStaffCert = asn1.ObjectIdentifier{1, 3, 6, 1, 3, 7626, 1, 4}

// credentialCN is the subject of every admission credential: it names no one.
const credentialCN = "medmesh admission"

// Credential is what an admission credential says: enough to admit a
// device — its key (the peer ID), KEM key, roles and validity — and nothing
// about the person (no name, staff ID, registration or department).
type Credential struct {
	PeerID      peer.ID
	Roles       []string
	KEMID       uint16
	KEMKey      []byte
	Serial      *big.Int
	StaffSerial *big.Int // the staff certificate it was issued with
	NotBefore   time.Time
	NotAfter    time.Time
}

// HasRole reports whether the credential grants role.
func (c *Credential) HasRole(role string) bool {
	for _, r := range c.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// IsCredential reports whether c is an admission credential.
func IsCredential(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(OIDStaffCert) {
			return true
		}
	}
	return false
}

// CredentialFromCert reads an admission credential. It does not verify it;
// Trust.AdmitCredential does.
func CredentialFromCert(c *x509.Certificate) (*Credential, error) {
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: device key is not Ed25519", ErrKeyUsage)
	}
	id, err := PeerIDFromKey(pub)
	if err != nil {
		return nil, err
	}
	cr := &Credential{PeerID: id, Serial: c.SerialNumber, NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	for _, e := range c.Extensions {
		switch {
		case e.Id.Equal(OIDStaffCert):
			var s *big.Int
			if rest, err := asn1.Unmarshal(e.Value, &s); err != nil || len(rest) > 0 || s == nil || s.Sign() <= 0 || s.BitLen() > 8*20 {
				return nil, fmt.Errorf("%w: staff certificate link", ErrMalformed)
			}
			cr.StaffSerial = s
		case e.Id.Equal(OIDRoles):
			if rest, err := asn1.UnmarshalWithParams(e.Value, &cr.Roles, ""); err != nil || len(rest) > 0 || len(cr.Roles) > maxRoles {
				return nil, fmt.Errorf("%w: roles extension", ErrMalformed)
			}
		case e.Id.Equal(OIDKEMKey):
			if cr.KEMID, cr.KEMKey, err = parseKEMExt(e.Value, false); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range cr.Roles {
		if checkField(r) != nil {
			return nil, fmt.Errorf("%w: role", ErrMalformed)
		}
	}
	if cr.StaffSerial == nil || cr.KEMKey == nil {
		return nil, fmt.Errorf("%w: not an admission credential", ErrNotStaff)
	}
	return cr, nil
}

// SignCredential issues the admission credential that goes with a staff
// certificate this CA issued: same key, KEM key, roles and validity, a
// serial of its own, a subject that names no one, and the link to staff's
// serial.
func (ca *CA) SignCredential(staff *x509.Certificate) (*x509.Certificate, error) {
	s, err := StaffFromCert(staff)
	if err != nil {
		return nil, err
	}
	if err := staff.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("staff certificate not issued by this CA: %w", ErrBadSignature)
	}
	link, err := asn1.Marshal(staff.SerialNumber)
	if err != nil {
		return nil, err
	}
	roles, err := rolesExt(s.Roles)
	if err != nil {
		return nil, err
	}
	kem, err := kemExt(s.KEMID, s.KEMKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: credentialCN},
		NotBefore:             staff.NotBefore,
		NotAfter:              staff.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: OIDStaffCert, Value: link}, roles, kem},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, staff.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign admission credential: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Bundle is a device's PEM certificate file (device.crt): the staff
// certificate, ca and its parents up to the root, then the admission
// credential it issues for staff here.
func (ca *CA) Bundle(staff *x509.Certificate) ([]byte, error) {
	cred, err := ca.SignCredential(staff)
	if err != nil {
		return nil, err
	}
	certs := append([]*x509.Certificate{staff, ca.Cert}, ca.Parents...)
	return EncodeCertificates(append(certs, cred)...), nil
}

// SplitBundle splits the certificates of a device.crt into the staff chain
// (device first, then its issuing CAs) and the credential chain (the
// admission credential, then the same CAs). cred is nil when the file holds
// no credential (issued before credentials existed).
func SplitBundle(certs []*x509.Certificate) (chain, cred []*x509.Certificate) {
	var c *x509.Certificate
	for _, x := range certs {
		if c == nil && IsCredential(x) {
			c = x
			continue
		}
		chain = append(chain, x)
	}
	if c != nil && len(chain) > 0 {
		cred = append([]*x509.Certificate{c}, chain[1:]...)
	}
	return chain, cred
}
