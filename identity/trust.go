package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// CAKey names a CA by the SHA-256 of its public key (SubjectPublicKeyInfo).
// A CA chooses its own SubjectKeyId, so two CAs — a colliding root of
// another trust — can claim the same one; only the key itself names a CA.
type CAKey [sha256.Size]byte

// KeyOf is the CAKey of c.
func KeyOf(c *x509.Certificate) CAKey { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

// String is the key in hex.
func (k CAKey) String() string { return hex.EncodeToString(k[:]) }

// Trust is what a device trusts: its roots (several for federated trusts),
// the issuing CAs it has verified under them, and the newest CRL of each CA.
// CAs and their CRLs are indexed by CAKey, never by the SubjectKeyId a CA
// picks. It is safe for concurrent use; one mutex guards the CRL and CA maps.
type Trust struct {
	roots *x509.CertPool
	list  []*x509.Certificate

	mu   sync.RWMutex
	cas  map[CAKey]*x509.Certificate // verified CA certificates, roots included
	own  map[CAKey]struct{}          // those of cas that are our roots or verify under them
	crls map[CAKey]*crl              // newest CRL of each CA
	fed  map[CAKey]*Federation       // newest federation record per other root (federation.go)
	// fedRoots holds the other roots of the active records: a chain
	// verified under it is a federated peer, never our own staff.
	fedRoots *x509.CertPool
	// fedIssuers: the issuing CAs learnt under each other root, with the
	// tick they were last seen at; at most MaxFederatedIssuers per root
	// (federation.go). evicted are those dropped, for the caller to forget.
	fedIssuers map[CAKey]map[CAKey]uint64
	fedOf      map[CAKey]CAKey // issuing CA → its other root
	tick       uint64
	evicted    []CAKey
}

type crl struct {
	list    *x509.RevocationList
	revoked map[string]struct{} // serial bytes
}

// NewTrust trusts the given root certificates.
func NewTrust(roots []*x509.Certificate) (*Trust, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: no trust roots", ErrUnknownCA)
	}
	t := &Trust{
		roots: x509.NewCertPool(), cas: map[CAKey]*x509.Certificate{}, own: map[CAKey]struct{}{}, crls: map[CAKey]*crl{},
		fed: map[CAKey]*Federation{}, fedRoots: x509.NewCertPool(),
		fedIssuers: map[CAKey]map[CAKey]uint64{}, fedOf: map[CAKey]CAKey{},
	}
	for _, r := range roots {
		if !r.IsCA || len(r.SubjectKeyId) == 0 {
			return nil, fmt.Errorf("trust root %q: %w: not a CA with a subject key ID", r.Subject.CommonName, ErrKeyUsage)
		}
		t.roots.AddCert(r)
		t.list = append(t.list, r)
		t.cas[KeyOf(r)] = r
		t.own[KeyOf(r)] = struct{}{}
	}
	return t, nil
}

// Roots returns the trust roots.
func (t *Trust) Roots() []*x509.Certificate { return t.list }

// CRLNumber is the number of the newest CRL known from ca, or nil.
func (t *Trust) CRLNumber(ca *x509.Certificate) *big.Int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if c := t.crls[KeyOf(ca)]; c != nil {
		return c.list.Number
	}
	return nil
}

// NewestCRLNumber is the highest CRL number held from our own CAs — our
// roots and the issuing CAs verified under them (0 if none). A federated
// trust's CAs number their own CRLs and never set it.
func (t *Trust) NewestCRLNumber() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var n int64
	for k, c := range t.crls {
		if _, ok := t.own[k]; ok && c.list.Number.IsInt64() {
			n = max(n, c.list.Number.Int64())
		}
	}
	return n
}

// CRLs returns the newest CRL of every CA, as DER, for exchange with peers.
func (t *Trust) CRLs() [][]byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([][]byte, 0, len(t.crls))
	for _, c := range t.crls {
		out = append(out, c.list.Raw)
	}
	return out
}

// UpdateCRL installs l if it is signed by a CA this trust knows and its
// number is higher than the newest CRL held from that CA. It reports whether
// l replaced the old one; an older or equal CRL is ignored without error.
func (t *Trust) UpdateCRL(l *x509.RevocationList) (bool, error) {
	_, changed, err := t.InstallCRL(l)
	return changed, err
}

// InstallCRL is UpdateCRL that also names the CA whose key signed l.
func (t *Trust) InstallCRL(l *x509.RevocationList) (CAKey, bool, error) {
	if l.Number == nil || len(l.AuthorityKeyId) == 0 {
		return CAKey{}, false, fmt.Errorf("CRL: %w: no number or authority key ID", ErrMalformed)
	}
	// The authority key ID only narrows the search: the CA is the one
	// whose key verifies the signature.
	t.mu.RLock()
	var cands []*x509.Certificate
	for _, c := range t.cas {
		if bytes.Equal(c.SubjectKeyId, l.AuthorityKeyId) {
			cands = append(cands, c)
		}
	}
	t.mu.RUnlock()
	if len(cands) == 0 {
		return CAKey{}, false, fmt.Errorf("CRL from %q: %w", l.Issuer.CommonName, ErrUnknownCA)
	}
	var issuer *x509.Certificate
	for _, c := range cands {
		if l.CheckSignatureFrom(c) == nil {
			issuer = c
			break
		}
	}
	if issuer == nil {
		return CAKey{}, false, fmt.Errorf("CRL from %q: %w", l.Issuer.CommonName, ErrBadSignature)
	}
	key := KeyOf(issuer)
	c := &crl{list: l, revoked: make(map[string]struct{}, len(l.RevokedCertificateEntries))}
	for _, e := range l.RevokedCertificateEntries {
		c.revoked[string(e.SerialNumber.Bytes())] = struct{}{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.crls[key]; cur != nil && l.Number.Cmp(cur.list.Number) <= 0 {
		return key, false, nil
	}
	t.crls[key] = c
	return key, true, nil
}

// AddIssuers verifies the CA certificates of a presented chain against the
// roots and remembers those that verify, so their CRLs can be checked. It
// returns nothing: certificates that do not verify are simply not learnt.
func (t *Trust) AddIssuers(chain []*x509.Certificate, now time.Time) {
	for _, c := range chain {
		if !c.IsCA || len(c.SubjectKeyId) == 0 {
			continue
		}
		k := KeyOf(c)
		t.mu.RLock()
		_, known := t.cas[k]
		t.mu.RUnlock()
		if known {
			continue
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: t.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			continue
		}
		t.mu.Lock()
		t.cas[k] = c
		t.own[k] = struct{}{}
		t.mu.Unlock()
	}
}

// Admit is the check of a staff certificate chain: it verifies a chain
// (device first) against the roots and the newest CRLs at time now, checks
// that the device key is the peer ID the transport proved, and returns the
// verified staff identity. Errors wrap one of ErrMalformed, ErrUnknownCA,
// ErrBadSignature, ErrExpired, ErrNotYetValid, ErrRevoked, ErrPeerMismatch,
// ErrKeyUsage, ErrChainTooLong or ErrNotStaff.
func (t *Trust) Admit(chain []*x509.Certificate, id peer.ID, now time.Time) (*Staff, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: empty certificate chain", ErrMalformed)
	}
	if err := leafUsage(chain[0]); err != nil {
		return nil, err
	}
	staff, err := StaffFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	if _, err := t.verify(t.roots, chain, staff.PeerID, id, now); err != nil {
		return nil, err
	}
	return staff, nil
}

// AdmitCredential is the admission check: Admit for an admission
// credential chain (credential first). A CRL entry for the credential's
// serial or for the staff certificate it links to revokes it.
func (t *Trust) AdmitCredential(chain []*x509.Certificate, id peer.ID, now time.Time) (*Credential, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: empty certificate chain", ErrMalformed)
	}
	if err := leafUsage(chain[0]); err != nil {
		return nil, err
	}
	cred, err := CredentialFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	if _, err := t.verify(t.roots, chain, cred.PeerID, id, now, cred.StaffSerial); err != nil {
		return nil, err
	}
	return cred, nil
}

// leafUsage refuses a leaf that is a CA or may not sign.
func leafUsage(leaf *x509.Certificate) error {
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("device certificate: %w", ErrKeyUsage)
	}
	return nil
}

// verify checks chain (its leaf for key) against roots (our own, or the
// federated ones) and the CRLs at now, and that the leaf's key is the peer
// ID the transport proved. linked are further serials whose revocation by
// the leaf's issuer revokes the leaf. It returns the verified path's root,
// with ErrRevoked too.
func (t *Trust) verify(roots *x509.CertPool, chain []*x509.Certificate, key, id peer.ID, now time.Time, linked ...*big.Int) (*x509.Certificate, error) {
	if len(chain) > maxChainLength {
		return nil, fmt.Errorf("%w: %d certificates, at most %d", ErrChainTooLong, len(chain), maxChainLength)
	}
	leaf := chain[0]
	if key != id {
		return nil, fmt.Errorf("%w: certificate is for %s, transport proved %s", ErrPeerMismatch, key, id)
	}
	for _, c := range chain {
		if err := checkTime(c, now); err != nil {
			return nil, err
		}
	}
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			// A presented root is never an anchor, and offering it as an
			// intermediate would cost x509 one more signature check.
			if !bytes.Equal(c.RawIssuer, c.RawSubject) {
				opts.Intermediates.AddCert(c)
			}
		}
	}
	verified, err := leaf.Verify(opts)
	if err != nil {
		return nil, t.diagnose(chain, err)
	}
	path := verified[0]
	if len(path) > maxChainLength {
		return nil, fmt.Errorf("%w: path of %d certificates", ErrChainTooLong, len(path))
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i := 0; i+1 < len(path); i++ {
		c := t.crls[KeyOf(path[i+1])]
		if c == nil {
			continue
		}
		serials := []*big.Int{path[i].SerialNumber}
		if i == 0 {
			serials = append(serials, linked...)
		}
		for _, s := range serials {
			if _, ok := c.revoked[string(s.Bytes())]; ok {
				what := "device certificate"
				if i > 0 {
					what = "issuing CA " + path[i].Subject.CommonName
				}
				return path[len(path)-1], fmt.Errorf("%s serial %s: %w (CRL %s)", what, SerialHex(s), ErrRevoked, c.list.Number)
			}
		}
	}
	return path[len(path)-1], nil
}

func checkTime(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q: %w until %s", c.Subject.CommonName, ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q: %w on %s", c.Subject.CommonName, ErrExpired, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// diagnose turns a failed x509 verification into a named error. It runs
// only on failure, so the success path pays for one verification.
func (t *Trust) diagnose(chain []*x509.Certificate, err error) error {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) {
		switch inv.Reason {
		case x509.Expired:
			return fmt.Errorf("%w: %v", ErrExpired, err)
		case x509.TooManyIntermediates:
			return fmt.Errorf("%w: %v", ErrChainTooLong, err)
		case x509.IncompatibleUsage, x509.NotAuthorizedToSign, x509.CANotAuthorizedForThisName:
			return fmt.Errorf("%w: %v", ErrKeyUsage, err)
		}
	}
	// Find who claims to have issued each certificate; if we know the
	// claimed issuer but its signature does not check, the bytes were forged
	// or altered; otherwise the issuer is not one we trust.
	t.mu.RLock()
	known := make([]*x509.Certificate, 0, len(t.cas)+len(chain))
	for _, c := range t.cas {
		known = append(known, c)
	}
	t.mu.RUnlock()
	known = append(known, chain[1:]...)
	for _, c := range chain {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue // a presented root is never an anchor; only our roots are
		}
		for _, iss := range known {
			if !bytes.Equal(c.RawIssuer, iss.RawSubject) || (len(c.AuthorityKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, iss.SubjectKeyId)) {
				continue
			}
			if c.CheckSignatureFrom(iss) != nil {
				return fmt.Errorf("certificate %q: %w", c.Subject.CommonName, ErrBadSignature)
			}
		}
	}
	return fmt.Errorf("%w: %v", ErrUnknownCA, err)
}
