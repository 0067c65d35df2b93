package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"path/filepath"
	"slices"
	"time"

	"github.com/hdevalence/ed25519consensus"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Federation: a trust's root CA decides, by a signed record, that devices of
// another trust (a chain to that trust's root) may be admitted — as
// federated peers, a class apart from the trust's own staff — while their
// certificate matches the record's policy. The newest record per other
// root wins (see newerThan: the same signer's higher Number; across our
// roots, the later issue time); withdrawing is a newer record with Withdrawn
// set. Only a root key of this trust signs records: never an issuing CA,
// another trust's CA or a device key.

// ScopeInvited admits federated peers only into conversations one of our
// members creates or invites them to. It is the only scope.
const ScopeInvited = "invited"

// Federation limits.
const (
	// MaxFederationBytes bounds an encoded signed federation record.
	MaxFederationBytes = 16 << 10
	maxPolicyEntries   = 64
	maxPolicyFile      = 64 << 10
	federationVersion  = 1
	// FederationPEM is the PEM block type of a record file.
	FederationPEM = "MEDMESH FEDERATION"
)

// fedDomain separates a record signature from every other Ed25519
// signature made with a root key (certificates and CRLs sign DER).
const fedDomain = "medmesh federation record v1\x00"

// Federation errors.
var (
	ErrNotFederated = errors.New("trust not federated")
	ErrPolicy       = errors.New("outside the federation policy")
)

// Policy says which devices of the other trust may be admitted, and to
// what. An empty list places no limit on that attribute; a non-empty one
// admits a certificate only if it holds one of the listed roles
// (Roles), or names a listed department (OU) or site (L).
type Policy struct {
	Roles       []string `json:"roles" cbor:"1,keyasint,omitempty"`
	Departments []string `json:"departments" cbor:"2,keyasint,omitempty"`
	Sites       []string `json:"sites" cbor:"3,keyasint,omitempty"`
	Scope       string   `json:"scope" cbor:"4,keyasint"`
	// Invites: the other trust's devices (those the policy admits) may
	// invite ours into conversations they create. Without it our devices
	// join only conversations our own staff create.
	Invites bool `json:"invites" cbor:"5,keyasint,omitempty"`
}

// ParsePolicy reads a policy file (JSON). Unknown fields, trailing data and
// any scope but "invited" are errors.
func ParsePolicy(data []byte) (Policy, error) {
	var p Policy
	if len(data) > maxPolicyFile {
		return p, fmt.Errorf("policy: %w: larger than %d bytes", ErrMalformed, maxPolicyFile)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return p, fmt.Errorf("policy: %w: %v", ErrMalformed, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return p, fmt.Errorf("policy: %w: data after the object", ErrMalformed)
	}
	return p, p.check()
}

func (p Policy) check() error {
	if p.Scope != ScopeInvited {
		return fmt.Errorf("policy: %w: scope %q (only %q)", ErrMalformed, p.Scope, ScopeInvited)
	}
	for _, l := range [][]string{p.Roles, p.Departments, p.Sites} {
		if len(l) > maxPolicyEntries {
			return fmt.Errorf("policy: %w: more than %d entries", ErrMalformed, maxPolicyEntries)
		}
		for _, s := range l {
			if s == "" || checkField(s) != nil {
				return fmt.Errorf("policy: %w: empty or not plain text entry", ErrMalformed)
			}
		}
	}
	return nil
}

// allowsRoles: roles hold one of the policy's roles (or it lists none).
func (p Policy) allowsRoles(roles []string) bool {
	return len(p.Roles) == 0 || slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(p.Roles, r) })
}

// allowsStaff: the staff certificate's roles, department and site match.
func (p Policy) allowsStaff(s *Staff) bool {
	return p.allowsRoles(s.Roles) &&
		(len(p.Departments) == 0 || slices.Contains(p.Departments, s.Department)) &&
		(len(p.Sites) == 0 || slices.Contains(p.Sites, s.Site))
}

// FederationRecord is the signed body of a federation record.
type FederationRecord struct {
	Version   uint8  `cbor:"1,keyasint"`
	Signer    CAKey  `cbor:"2,keyasint"` // our root that signs it
	Root      []byte `cbor:"3,keyasint"` // the other trust's root certificate, DER
	Policy    Policy `cbor:"4,keyasint"`
	Number    uint64 `cbor:"5,keyasint"`
	Issued    int64  `cbor:"6,keyasint"` // Unix seconds
	Withdrawn bool   `cbor:"7,keyasint,omitempty"`
}

type signedFederation struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

// Federation is a verified federation record.
type Federation struct {
	FederationRecord
	RootCert *x509.Certificate // the other trust's root
	Other    CAKey             // KeyOf(RootCert)
	Raw      []byte            // the signed record, as it travels
}

// Active reports whether the record admits anyone.
func (f *Federation) Active() bool { return !f.Withdrawn }

// IssuedAt is the record's issue time.
func (f *Federation) IssuedAt() time.Time { return time.Unix(f.Issued, 0).UTC() }

// SignFederation signs a federation record with this root CA's key: the
// other trust's root certificate (a self-signed CA), the policy, the
// record number (higher than every earlier record of this CA) and whether
// the record withdraws the federation. Issuing CAs may not sign records.
func (ca *CA) SignFederation(other *x509.Certificate, p Policy, number uint64, withdrawn bool, now time.Time) ([]byte, error) {
	if len(ca.Parents) > 0 || !bytes.Equal(ca.Cert.RawIssuer, ca.Cert.RawSubject) {
		return nil, fmt.Errorf("federation record: %w: only a root CA signs records", ErrKeyUsage)
	}
	if err := checkOtherRoot(other); err != nil {
		return nil, err
	}
	if KeyOf(other) == KeyOf(ca.Cert) {
		return nil, fmt.Errorf("federation record: %w: a trust does not federate with itself", ErrMalformed)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	if number == 0 {
		return nil, fmt.Errorf("federation record: %w: number 0", ErrMalformed)
	}
	body, err := detcbor.Marshal(FederationRecord{
		Version: federationVersion, Signer: KeyOf(ca.Cert), Root: other.Raw, Policy: p,
		Number: number, Issued: now.Unix(), Withdrawn: withdrawn,
	})
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(ca.key, append([]byte(fedDomain), body...))
	return detcbor.Marshal(signedFederation{Body: body, Sig: sig})
}

// checkOtherRoot: a self-signed CA certificate with an Ed25519 key.
func checkOtherRoot(c *x509.Certificate) error {
	if !c.IsCA || len(c.SubjectKeyId) == 0 || !bytes.Equal(c.RawIssuer, c.RawSubject) {
		return fmt.Errorf("federation record: %w: other trust's certificate is not a root CA", ErrKeyUsage)
	}
	if c.CheckSignatureFrom(c) != nil {
		return fmt.Errorf("federation record: other root: %w", ErrBadSignature)
	}
	return nil
}

// ParseFederation decodes a signed federation record (CBOR, or the PEM of
// a record file) without verifying its signature: Trust.VerifyFederation
// does. Input is bounded by MaxFederationBytes and must be canonical.
func ParseFederation(data []byte) (*Federation, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != FederationPEM {
			return nil, fmt.Errorf("federation record: %w: PEM block %q", ErrMalformed, b.Type)
		}
		data = b.Bytes
	}
	var s signedFederation
	if err := detcbor.Unmarshal(data, &s, MaxFederationBytes); err != nil {
		return nil, fmt.Errorf("federation record: %w: %v", ErrMalformed, err)
	}
	var r FederationRecord
	if err := detcbor.Unmarshal(s.Body, &r, MaxFederationBytes); err != nil {
		return nil, fmt.Errorf("federation record: %w: %v", ErrMalformed, err)
	}
	if r.Version != federationVersion || r.Number == 0 || len(s.Sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("federation record: %w: version, number or signature", ErrMalformed)
	}
	if err := r.Policy.check(); err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(r.Root)
	if err != nil {
		return nil, fmt.Errorf("federation record: %w: other root: %v", ErrMalformed, err)
	}
	if err := checkOtherRoot(root); err != nil {
		return nil, err
	}
	return &Federation{FederationRecord: r, RootCert: root, Other: KeyOf(root), Raw: bytes.Clone(data)}, nil
}

// EncodeFederation is the PEM of a record file.
func EncodeFederation(raw []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: FederationPEM, Bytes: raw})
}

// verifyFederation checks f's signature against the root of ours it names.
// A record naming one of our own roots as the other trust is refused.
func verifyFederation(f *Federation, own []*x509.Certificate, raw []byte) error {
	var s signedFederation
	if err := detcbor.Unmarshal(raw, &s, MaxFederationBytes); err != nil {
		return fmt.Errorf("federation record: %w: %v", ErrMalformed, err)
	}
	for _, r := range own {
		if KeyOf(r) == f.Other {
			return fmt.Errorf("federation record: %w: names one of our own roots", ErrMalformed)
		}
	}
	for _, r := range own {
		if KeyOf(r) != f.Signer {
			continue
		}
		// Only a root signs records: a trust list may hold an issuing
		// (site) CA too — a site's ca.crt is its chain — whose key
		// must never federate the trust.
		if !bytes.Equal(r.RawIssuer, r.RawSubject) || r.CheckSignatureFrom(r) != nil {
			return fmt.Errorf("federation record: %w: signer is not a root CA", ErrKeyUsage)
		}
		pub, ok := r.PublicKey.(ed25519.PublicKey)
		if ok && ed25519consensus.Verify(pub, append([]byte(fedDomain), s.Body...), s.Sig) {
			return nil
		}
		return fmt.Errorf("federation record: %w", ErrBadSignature)
	}
	return fmt.Errorf("federation record: signer %w", ErrUnknownCA)
}

// InstallFederation verifies a signed federation record (CBOR) against
// this trust's own roots and, when it is newer than the record held for
// the same other root, installs it. It reports the record and whether it
// replaced the old one; an older or equal record is ignored without error.
// The other root becomes a known CA (its CRLs are accepted) from its first
// record on, withdrawn or not; only an active record admits its devices.
func (t *Trust) InstallFederation(raw []byte) (*Federation, bool, error) {
	f, err := ParseFederation(raw)
	if err != nil {
		return nil, false, err
	}
	if err := verifyFederation(f, t.list, f.Raw); err != nil {
		return nil, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.fed[f.Other]; cur != nil && !f.newerThan(cur) {
		return f, false, nil
	}
	t.fed[f.Other] = f
	if _, ok := t.cas[f.Other]; !ok {
		t.cas[f.Other] = f.RootCert
	}
	t.fedRoots = x509.NewCertPool()
	for _, r := range t.fed {
		if r.Active() {
			t.fedRoots.AddCert(r.RootCert)
		}
	}
	return f, true, nil
}

// newerThan orders records for the same other root. Records of the same
// signer (one CA directory's counter) are ordered by Number. Records of
// different roots of ours — each directory counts its own numbers — are
// ordered by issue time, then Number, then signer key, so every device
// settles on the same record whatever order they arrive in, and a second
// root (a rollover) can withdraw what the first signed by signing later.
func (f *Federation) newerThan(cur *Federation) bool {
	if f.Signer == cur.Signer {
		return f.Number > cur.Number
	}
	if f.Issued != cur.Issued {
		return f.Issued > cur.Issued
	}
	if f.Number != cur.Number {
		return f.Number > cur.Number
	}
	return bytes.Compare(f.Signer[:], cur.Signer[:]) > 0
}

// Federations lists the newest record held per other root, by other root.
func (t *Trust) Federations() []*Federation {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*Federation, 0, len(t.fed))
	for _, f := range t.fed {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *Federation) int { return bytes.Compare(a.Other[:], b.Other[:]) })
	return out
}

// Federated reports whether any active federation record is held.
func (t *Trust) Federated() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, f := range t.fed {
		if f.Active() {
			return true
		}
	}
	return false
}

// federatedPath verifies chain under the roots of the active records and
// returns the record of the root it reaches — with ErrRevoked too, so the
// caller knows whose CRLs refused it.
func (t *Trust) federatedPath(chain []*x509.Certificate, key, id peer.ID, now time.Time, linked ...*big.Int) (*Federation, error) {
	t.mu.RLock()
	pool := t.fedRoots
	t.mu.RUnlock()
	root, err := t.verify(pool, chain, key, id, now, linked...)
	if root == nil {
		return nil, err
	}
	t.mu.RLock()
	f := t.fed[KeyOf(root)]
	t.mu.RUnlock()
	if f == nil || !f.Active() {
		return nil, fmt.Errorf("%w: root %s", ErrNotFederated, KeyOf(root))
	}
	return f, err
}

// AdmitFederatedCredential is AdmitCredential for a device of a federated
// trust: its chain must reach the root of an active federation record, not
// be revoked by that trust's CRLs, and its roles match the record's policy.
// When the chain reached such a root but is refused (revoked, outside the
// policy), the record is returned with the error.
// It never admits our own staff (they verify under our roots; call
// AdmitCredential first), and what it admits is a federated peer, never
// our own staff, whatever names the certificate carries.
func (t *Trust) AdmitFederatedCredential(chain []*x509.Certificate, id peer.ID, now time.Time) (*Credential, *Federation, error) {
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("%w: empty certificate chain", ErrMalformed)
	}
	if err := leafUsage(chain[0]); err != nil {
		return nil, nil, err
	}
	cred, err := CredentialFromCert(chain[0])
	if err != nil {
		return nil, nil, err
	}
	f, err := t.federatedPath(chain, cred.PeerID, id, now, cred.StaffSerial)
	if err != nil {
		return nil, f, err
	}
	if !f.Policy.allowsRoles(cred.Roles) {
		return nil, f, fmt.Errorf("credential roles: %w", ErrPolicy)
	}
	return cred, f, nil
}

// AdmitFederated is Admit for the staff certificate of a device of a
// federated trust: roles, department and site must match the policy.
func (t *Trust) AdmitFederated(chain []*x509.Certificate, id peer.ID, now time.Time) (*Staff, *Federation, error) {
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("%w: empty certificate chain", ErrMalformed)
	}
	if err := leafUsage(chain[0]); err != nil {
		return nil, nil, err
	}
	staff, err := StaffFromCert(chain[0])
	if err != nil {
		return nil, nil, err
	}
	f, err := t.federatedPath(chain, staff.PeerID, id, now)
	if err != nil {
		return nil, f, err
	}
	if !f.Policy.allowsStaff(staff) {
		return nil, f, fmt.Errorf("staff certificate: %w", ErrPolicy)
	}
	return staff, f, nil
}

// MaxFederatedIssuers bounds the issuing CAs of one federated trust a
// device keeps: that trust's CA may mint any number, each learnt from a
// presented chain before its presenter is judged. Past it, the one seen
// least recently is forgotten (its CRL, if held, stays in force; a newer
// one waits until the CA is met again). Our own CAs are never counted.
const MaxFederatedIssuers = 64

// AddFederatedIssuers is AddIssuers for the issuing CAs of federated
// trusts: those of chain that verify under the root of an active record
// are learnt (their CRLs are accepted from then on), at most
// MaxFederatedIssuers per other root. It reports whether any of them is
// known now.
func (t *Trust) AddFederatedIssuers(chain []*x509.Certificate, now time.Time) bool {
	t.mu.RLock()
	pool := t.fedRoots
	t.mu.RUnlock()
	learnt := false
	for _, c := range chain {
		if !c.IsCA || len(c.SubjectKeyId) == 0 || bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue
		}
		k := KeyOf(c)
		t.mu.Lock()
		_, known := t.cas[k]
		if root, ok := t.fedOf[k]; ok {
			t.tick++
			t.fedIssuers[root][k] = t.tick // seen: the last to be forgotten
		}
		t.mu.Unlock()
		if known {
			learnt = true
			continue
		}
		paths, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			continue
		}
		root := KeyOf(paths[0][len(paths[0])-1])
		t.mu.Lock()
		if _, known := t.cas[k]; !known {
			t.cas[k] = c
			under := t.fedIssuers[root]
			if under == nil {
				under = map[CAKey]uint64{}
				t.fedIssuers[root] = under
			}
			t.tick++
			under[k], t.fedOf[k] = t.tick, root
			for len(under) > MaxFederatedIssuers {
				var old CAKey
				oldest := uint64(0)
				for ik, seen := range under {
					if oldest == 0 || seen < oldest {
						old, oldest = ik, seen
					}
				}
				delete(under, old)
				delete(t.fedOf, old)
				delete(t.cas, old)
				t.evicted = append(t.evicted, old)
			}
			if len(t.evicted) > 4*MaxFederatedIssuers { // nobody takes them
				t.evicted = slices.Clone(t.evicted[len(t.evicted)-4*MaxFederatedIssuers:])
			}
		}
		t.mu.Unlock()
		learnt = true
	}
	return learnt
}

// SeenIssuer marks the federated issuing CA k (if it is one) as seen in a
// chain now, so it is the last to be forgotten.
func (t *Trust) SeenIssuer(k CAKey) {
	t.mu.RLock()
	_, fed := t.fedOf[k]
	t.mu.RUnlock()
	if !fed {
		return // our own CAs (the common case) take no write lock
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if root, ok := t.fedOf[k]; ok {
		t.tick++
		t.fedIssuers[root][k] = t.tick
	}
}

// TakeEvicted returns, once, the federated issuing CAs forgotten since the
// last call (MaxFederatedIssuers), for the caller to forget too.
func (t *Trust) TakeEvicted() []CAKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.evicted
	t.evicted = nil
	return out
}

// FederationFile is the file in a CA directory holding the newest record
// for the other root k.
func FederationFile(k CAKey) string { return "federation-" + k.String()[:16] + ".pem" }

// Federate signs a federation record with the next record number, writes
// it to the CA directory (FederationFile) and returns its path and the
// record. Only a root CA directory federates.
func (d *CADir) Federate(other *x509.Certificate, p Policy, withdraw bool, now time.Time) (string, *Federation, error) {
	n := d.log.FederationNumber + 1
	raw, err := d.CA.SignFederation(other, p, n, withdraw, now)
	if err != nil {
		return "", nil, err
	}
	f, err := ParseFederation(raw)
	if err != nil {
		return "", nil, err
	}
	d.log.FederationNumber = n
	// Number first: a number used and never handed out is harmless; a
	// record out in the world whose number could be signed again is not.
	if err := d.save(); err != nil {
		return "", nil, err
	}
	path := filepath.Join(d.Dir, FederationFile(f.Other))
	if err := atomicfile.WriteFile(path, EncodeFederation(raw), 0o644); err != nil {
		return "", nil, err
	}
	return path, f, nil
}

// CRLIssuedUnder reports whether l is signed by one of our own CAs, or by
// root (an other root of a record) or a known issuing CA under it: the
// CRLs a device of that trust may hand us (ours, which it passes on, and
// its own trust's) — never those of a third trust.
func (t *Trust) CRLIssuedUnder(l *x509.RevocationList, root CAKey) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for k, c := range t.cas {
		if !bytes.Equal(c.SubjectKeyId, l.AuthorityKeyId) || l.CheckSignatureFrom(c) != nil {
			continue
		}
		if _, own := t.own[k]; own || k == root || t.fedOf[k] == root {
			return true
		}
	}
	return false
}

// CRLsUnder returns, as DER, the newest CRLs of root (an other root of a
// record) and of the issuing CAs under it: what a device of that trust may
// be handed, and nothing of ours.
func (t *Trust) CRLsUnder(root CAKey) [][]byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.cas[root]
	if r == nil {
		return nil
	}
	var out [][]byte
	for k, c := range t.crls {
		ca := t.cas[k]
		if k == root || (ca != nil && bytes.Equal(ca.RawIssuer, r.RawSubject) && ca.CheckSignatureFrom(r) == nil) {
			out = append(out, c.list.Raw)
		}
	}
	return out
}
