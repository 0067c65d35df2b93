package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/discovery"
	"github.com/medmesh/medmesh/identity"
)

// admission is the node's admission and trust part: the trust (roots,
// issuing CAs learnt, newest CRLs) with its persisted state, the peer table
// holding each connected peer's admission decision, the block list the
// connection gater enforces, and the KnownStaff cache. It does no network
// I/O: the node runs the protocols and acts on its answers.
//
// Invariants:
//   - mu guards peers, blocked, known, cas and the hooks. A peerState's
//     decided channel is closed once, under mu; its staff, chain and err
//     change under mu only (a revocation withdraws an admission). Its
//     verified channel closes once its credential is judged; a peer whose
//     credential Trust.AdmitCredential accepted may be shown our details.
//     A peer is admitted iff it is decided with cred and staff set and no
//     err: its staff chain is then one Trust.Admit accepted for the
//     certificate the credential links to.
//   - crlMu serialises CRL installs, from UpdateCRL to the store write, so
//     the store holds the CRL the trust holds; it guards revoked:
//     revoked[issuer] digests the revoked serials of the CRL the trust holds
//     from issuer, so a newer CRL can tell whether it changes what is
//     revoked.
//   - gen is bumped after a newer CRL is in the trust, never before: a
//     judgement made after reading gen reflects every CRL up to it, so it
//     may be cached under gen.
//   - Every issuing CA in cas verified against the roots when learnt and
//     is in the store (caPrefix), so its CRLs are accepted again after a
//     restart.
//   - mu is never held across store or network I/O, nor while calling
//     the node or a hook; mu and crlMu are never held together.
type admission struct {
	trust   *identity.Trust
	roots   *x509.CertPool
	store   ds.Batching
	ctx     context.Context // the node's: ends waits and store calls at Close
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration // Config.AdmitTimeout

	gen     atomic.Int64 // bumped with every newer CRL
	offline atomic.Bool  // SetOffline: the gater refuses every connection

	// dial is the policy every outgoing dial is held to (gater.go);
	// configuredPeers, the bootstrap and site peers with the addresses the
	// operator gave for them (dialAllowedTo).
	dial            discovery.Policy
	configuredPeers map[peer.ID][]ma.Multiaddr

	mu           sync.Mutex
	peers        map[peer.ID]*peerState
	blocked      map[peer.ID]time.Time
	known        map[peer.ID]knownStaff
	cas          map[identity.CAKey]struct{} // issuing CAs persisted
	onAdmitted   []func(peer.ID)
	onRevocation []chan struct{}

	crlMu   sync.Mutex
	revoked map[identity.CAKey]revokedSum // CRL issuer → its revoked serials

	// fedMu serialises federation record installs, from the trust to the
	// store write (federation.go); onFederated is guarded by mu.
	fedMu       sync.Mutex
	onFederated []func(peer.ID)
	onFedRecord []func() // federation.go: a newer record installed

	// pending holds CRLs of CAs not learnt yet (pendingcrl.go); onLearnt
	// (the node's retryPendingCRLs) runs, synchronously, whenever
	// learnIssuers learns a CA. It is set before the node starts.
	pending  pendingCRLs
	onLearnt func()
}

func newAdmission(ctx context.Context, cfg Config, log *slog.Logger) *admission {
	a := &admission{
		trust: cfg.Trust, roots: x509.NewCertPool(), store: cfg.Store, ctx: ctx, log: log, now: cfg.Now,
		timeout: cfg.AdmitTimeout,
		peers:   map[peer.ID]*peerState{}, blocked: map[peer.ID]time.Time{}, known: map[peer.ID]knownStaff{},
		cas: map[identity.CAKey]struct{}{}, revoked: map[identity.CAKey]revokedSum{},
	}
	for _, r := range cfg.Trust.Roots() {
		a.roots.AddCert(r)
	}
	a.dial, a.configuredPeers = dialPolicy(cfg)
	a.dial.Relay = func(r peer.ID) bool { return slices.Contains(a.roles(r), RoleAnchor) }
	return a
}

// generation changes with every newer CRL.
func (a *admission) generation() int64 { return a.gen.Load() }

// peerState is what we know of a connected peer. It lives while the peer
// has at least one connection.
type peerState struct {
	verified  chan struct{} // closed once its credential is accepted or the peer refused
	decided   chan struct{} // closed once admitted (credential and details) or refused
	cred      *identity.Credential
	credChain []*x509.Certificate
	staff     *identity.Staff // the staff details, once the admitted peer showed them
	chain     []*x509.Certificate
	err       error
	// fed is the federation record whose root the peer's chain reached: a
	// federated peer (federation.go), never admitted as our own staff.
	// Set with the credential's judgement, never changed after.
	fed     *identity.Federation
	reading int // presentations being read (one at a time until admitted)
}

// admitted reports the decision: admitted as our own staff. Callers hold
// a.mu (revocation rewrites err and cred). A federated peer is never
// admitted (fedAdmitted).
func (p *peerState) admitted() bool {
	return isClosed(p.decided) && p.err == nil && p.cred != nil && p.staff != nil && p.fed == nil
}

// credentialOK reports whether the peer's credential was accepted (it may
// be shown our details). Callers hold a.mu.
func (p *peerState) credentialOK() bool {
	return isClosed(p.verified) && p.err == nil && p.cred != nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// stateLocked returns the peer's state, creating it. Callers hold a.mu.
func (a *admission) stateLocked(id peer.ID) *peerState {
	st := a.peers[id]
	if st == nil {
		st = &peerState{verified: make(chan struct{}), decided: make(chan struct{})}
		a.peers[id] = st
	}
	return st
}

// state returns the peer's state, creating it.
func (a *admission) state(id peer.ID) *peerState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stateLocked(id)
}

// isAdmitted reports whether id is admitted now.
func (a *admission) isAdmitted(id peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.peers[id]
	return st != nil && st.admitted()
}

// awaitAdmitted waits until id is admitted or refused, or the admission
// window has passed.
func (a *admission) awaitAdmitted(ctx context.Context, id peer.ID) bool {
	st := a.state(id)
	t := time.NewTimer(a.timeout + time.Second)
	defer t.Stop()
	select {
	case <-st.decided:
		a.mu.Lock() // a revocation may withdraw the admission meanwhile
		defer a.mu.Unlock()
		return st.admitted()
	case <-ctx.Done():
	case <-a.ctx.Done():
	case <-t.C:
	}
	return false
}

// beginReading reserves the reading of one presentation from id: a peer
// not admitted yet gets one at a time (more are reset unread). release
// ends it.
func (a *admission) beginReading(id peer.ID) (release func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.stateLocked(id)
	if st.reading > 0 && !st.credentialOK() {
		return nil, false
	}
	st.reading++
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		st.reading--
	}, true
}

// decide records the outcome of id's credential: the credential and chain
// Trust.AdmitCredential accepted, or why it was refused (then id is
// blocked, as by refuse). fresh is false when an earlier presentation, on
// an older connection not closed yet, was judged already; ok then reports
// that judgement, unless this presentation failed. The peer is admitted
// once it has shown its details too (showDetails).
func (a *admission) decide(id peer.ID, cred *identity.Credential, chain []*x509.Certificate, fed *identity.Federation, why error) (fresh, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.stateLocked(id)
	if isClosed(st.verified) {
		return false, why == nil && st.credentialOK() && (st.fed == nil) == (fed == nil)
	}
	st.fed = fed
	if why != nil {
		a.refuseLocked(id, st, why)
		return true, false
	}
	st.cred, st.credChain = cred, chain
	close(st.verified)
	return true, true
}

// showDetails records the staff chain an admitted peer showed, which
// Trust.Admit accepted. It reports whether the peer is still admitted (a
// quick reconnect may have replaced its state meanwhile: then nothing is
// recorded), and whether the certificate is the one its credential was
// issued with.
func (a *admission) showDetails(id peer.ID, staff *identity.Staff, chain []*x509.Certificate) (admitted, matches bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.peers[id]
	if st == nil || !st.credentialOK() {
		return false, true
	}
	if st.cred.StaffSerial.Cmp(staff.Serial) != 0 {
		return true, false
	}
	st.staff, st.chain = staff, chain
	delete(a.known, id)
	if !isClosed(st.decided) {
		close(st.decided)
	}
	return true, true
}

// roles are the roles id's credential grants, if id is admitted now.
func (a *admission) roles(id peer.ID) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.peers[id]; st != nil && st.admitted() {
		return st.cred.Roles
	}
	return nil
}

// refuse records a negative decision on st (unless it is decided already)
// and keeps id out for a while, so a flood of attempts costs us little.
func (a *admission) refuse(id peer.ID, st *peerState, why error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refuseLocked(id, st, why)
}

func (a *admission) refuseLocked(id peer.ID, st *peerState, why error) {
	if !isClosed(st.decided) {
		st.err = why
		close(st.decided)
	}
	if !isClosed(st.verified) {
		close(st.verified)
	}
	a.blockLocked(id, a.now().Add(intruderBlock))
}

// withdraw withdraws id's admission, if any, and blocks it.
func (a *admission) withdraw(id peer.ID, why error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.stateLocked(id)
	st.err, st.cred, st.staff = why, nil, nil
	for _, c := range []chan struct{}{st.verified, st.decided} {
		if !isClosed(c) {
			close(c)
		}
	}
	a.blockLocked(id, a.now().Add(intruderBlock))
}

// awaitCredential waits until id's credential is judged, or the admission
// window has passed, and reports whether it was accepted, or refused as
// revoked.
func (a *admission) awaitCredential(ctx context.Context, id peer.ID) (ok, revoked bool) {
	st := a.state(id)
	t := time.NewTimer(a.timeout + time.Second)
	defer t.Stop()
	select {
	case <-st.verified:
	case <-ctx.Done():
	case <-a.ctx.Done():
	case <-t.C:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return st.credentialOK(), errors.Is(st.err, identity.ErrRevoked)
}

// idle lists the peers with a state but no presentation being read.
func (a *admission) idle() []peer.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []peer.ID
	for id, st := range a.peers {
		if st.reading == 0 {
			out = append(out, id)
		}
	}
	return out
}

// forget drops the state of a peer that has no connection left.
func (a *admission) forget(id peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.peers[id]; st != nil {
		delete(a.peers, id)
		if !isClosed(st.decided) {
			st.err = errors.New("disconnected")
			close(st.decided)
		}
		if !isClosed(st.verified) {
			close(st.verified)
		}
	}
}

// maxBlocked bounds the block list: fresh identities cost an attacker
// nothing, so entries past their time are swept as new ones come, and at
// the bound the entry that ends soonest makes room (a peer let in early is
// judged again at admission).
const maxBlocked = 4096

// blockLocked keeps id out until until. Callers hold a.mu.
func (a *admission) blockLocked(id peer.ID, until time.Time) {
	if len(a.blocked) >= 64 {
		now := a.now()
		for p, u := range a.blocked {
			if now.After(u) {
				delete(a.blocked, p)
			}
		}
	}
	if _, held := a.blocked[id]; !held && len(a.blocked) >= maxBlocked {
		var first peer.ID
		var soonest time.Time
		for p, u := range a.blocked {
			if first == "" || u.Before(soonest) {
				first, soonest = p, u
			}
		}
		delete(a.blocked, first)
	}
	a.blocked[id] = until
}

func (a *admission) isBlocked(id peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.blocked[id]
	if !ok {
		return false
	}
	if a.now().After(until) {
		delete(a.blocked, id)
		return false
	}
	return true
}

// renewed records that id holds a new valid, unrevoked certificate: it
// lifts the block on id and forgets what KnownStaff judged of the old one.
func (a *admission) renewed(id peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.blocked, id)
	delete(a.known, id)
}

// admittedPeers lists the peers admitted now, but except.
func (a *admission) admittedPeers(except peer.ID) []peer.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []peer.ID
	for id, st := range a.peers {
		if id != except && st.admitted() {
			out = append(out, id)
		}
	}
	return out
}

// peerView is one entry of the peer table, for Status.
type peerView struct {
	id       peer.ID
	admitted bool
	staff    *identity.Staff // nil unless admitted and its details shown
}

func (a *admission) peerViews() []peerView {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]peerView, 0, len(a.peers))
	for id, st := range a.peers {
		v := peerView{id: id, admitted: st.admitted()}
		if v.admitted {
			v.staff = st.staff
		}
		out = append(out, v)
	}
	return out
}

func (a *admission) addOnAdmitted(f func(peer.ID)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onAdmitted = append(a.onAdmitted, f)
}

func (a *admission) admittedHooks() []func(peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.onAdmitted)
}

// addOnRevocation registers a doorbell rung after every CRL that changes
// what is revoked.
func (a *admission) addOnRevocation(bell chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onRevocation = append(a.onRevocation, bell)
}

// ringRevocation rings every revocation doorbell; a bell already rung and
// not yet answered stays rung once.
func (a *admission) ringRevocation() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, bell := range a.onRevocation {
		select {
		case bell <- struct{}{}:
		default:
		}
	}
}

// dropped is a peer rejudge withdrew the admission of.
type dropped struct {
	id    peer.ID
	block bool // revoked: blocked, and to be handed the CRL
}

// rejudge judges every admitted peer (and every peer whose credential was
// accepted, its details not in yet) again at now (a newer CRL, or time
// passing) and withdraws the admission of those no longer admissible;
// revoked ones are blocked. The caller drops their connections.
func (a *admission) rejudge(now time.Time) []dropped {
	var out []dropped
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, st := range a.peers {
		if !st.admitted() && !st.credentialOK() {
			continue // refused, or not judged yet
		}
		err := a.judgeAgain(st, id, now)
		if err != nil {
			st.err, st.cred, st.staff = err, nil, nil
			if !isClosed(st.decided) { // judged between its credential and its details
				close(st.decided)
			}
			revoked := errors.Is(err, identity.ErrRevoked)
			if revoked {
				a.blockLocked(id, now.Add(revokedBlock))
			}
			a.log.Warn("peer no longer admissible", "remote", id.String(), "reason", err.Error())
			out = append(out, dropped{id, revoked})
		}
	}
	return out
}

// chainSource gives a colleague's stored certificate chain (the directory).
type chainSource interface {
	storedChain(id peer.ID) ([]*x509.Certificate, error)
}

// knownStaff caches KnownStaff: one chain verification per sender per
// CRL and certificate, not one per envelope or dial. A judgement holds
// until a newer CRL (gen), a new certificate or admission of the peer
// (renewed and showDetails forget it), the certificate's expiry or
// knownFor, whichever is first; "unknown" holds for a minute only.
type knownStaff struct {
	known, revoked bool
	gen            int64
	until          time.Time
}

// knownFor bounds how long KnownStaff keeps a judgement of a known peer.
const knownFor = 10 * time.Minute

// knownStaff implements KnownStaff: id's chain as admitted, else as stored
// in the directory, judged now.
func (a *admission) knownStaff(id peer.ID, stored chainSource) (known, revoked bool) {
	now := a.now()
	gen := a.gen.Load()
	a.mu.Lock()
	if k, ok := a.known[id]; ok && k.gen == gen && now.Before(k.until) {
		a.mu.Unlock()
		return k.known, k.revoked
	}
	var chain, cred []*x509.Certificate
	if st := a.peers[id]; st != nil {
		chain, cred = st.chain, st.credChain
	}
	a.mu.Unlock()
	if chain == nil {
		chain, _ = stored.storedChain(id)
	}
	// The staff chain when known, else the credential of a peer admitted
	// before it showed its details.
	var judge func(time.Time) (time.Time, error)
	switch {
	case chain != nil:
		judge = func(at time.Time) (time.Time, error) {
			s, err := a.trust.Admit(chain, id, at)
			if err != nil {
				return time.Time{}, err
			}
			return s.NotAfter, nil
		}
	case cred != nil:
		chain = cred
		judge = func(at time.Time) (time.Time, error) {
			c, err := a.trust.AdmitCredential(cred, id, at)
			if err != nil {
				return time.Time{}, err
			}
			return c.NotAfter, nil
		}
	default:
		return false, false
	}
	notAfter, err := judge(now)
	k := knownStaff{gen: gen, until: now.Add(time.Minute)}
	switch {
	case err == nil:
		k.known, k.until = true, now.Add(knownFor)
		if notAfter.Before(k.until) {
			k.until = notAfter
		}
	case errors.Is(err, identity.ErrRevoked):
		k.known, k.revoked, k.until = true, true, now.Add(knownFor)
	case revokedEver(judge, chain, err):
		// Revoked, and expired since (or not valid yet): still revoked —
		// the revoked-sender rule must not lapse when a stolen phone's
		// certificate runs out.
		k.known, k.revoked = true, true
	}
	a.mu.Lock()
	a.known[id] = k
	a.mu.Unlock()
	return k.known, k.revoked
}

// revokedEver reports whether a CRL held revokes chain (its device
// certificate or issuing CA), whatever the time: a revoked certificate
// that has since expired is still revoked. err is judge's answer now.
func revokedEver(judge func(time.Time) (time.Time, error), chain []*x509.Certificate, err error) bool {
	if errors.Is(err, identity.ErrExpired) || errors.Is(err, identity.ErrNotYetValid) {
		if at, ok := validTogether(chain); ok {
			_, err = judge(at)
		}
	}
	return errors.Is(err, identity.ErrRevoked)
}

// validTogether is a time at which every certificate of chain is valid.
func validTogether(chain []*x509.Certificate) (time.Time, bool) {
	from, until := chain[0].NotBefore, chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return from, !from.After(until)
}

// judgeEntry checks a directory entry: a chain as the device would present
// it, judged at the peer ID its certificate names.
func (a *admission) judgeEntry(chain []*x509.Certificate) (*identity.Staff, error) {
	s, err := identity.StaffFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	now := a.now()
	a.learnIssuers(chain, now)
	return a.trust.Admit(chain, s.PeerID, now)
}

// learnIssuers teaches the trust the issuing CAs of chain that verify
// against the roots, and persists those not persisted yet: a site CA's
// CRLs are accepted only while the trust knows the CA, and after a restart
// the CRLs are loaded before any peer presents a chain again.
func (a *admission) learnIssuers(chain []*x509.Certificate, now time.Time) {
	learnt := false
	for _, c := range chain {
		if !c.IsCA || len(c.SubjectKeyId) == 0 || bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue // not an issuing CA; a presented root is never learnt
		}
		k := identity.KeyOf(c)
		a.mu.Lock()
		_, held := a.cas[k]
		a.mu.Unlock()
		if held {
			a.trust.SeenIssuer(k)
			continue
		}
		if !a.learnIssuer(c, now) {
			continue
		}
		a.forgetEvicted()
		if err := a.store.Put(a.ctx, caKey(k), c.Raw); err != nil {
			a.log.Error("persist issuing CA", "err", err)
			continue
		}
		a.mu.Lock()
		a.cas[k] = struct{}{}
		a.mu.Unlock()
		learnt = true
	}
	if learnt && a.onLearnt != nil {
		a.onLearnt() // CRLs held for a CA met just now
	}
}

// forgetEvicted forgets, in memory and in the store, the federated
// issuing CAs the trust dropped (identity.MaxFederatedIssuers).
func (a *admission) forgetEvicted() {
	for _, k := range a.trust.TakeEvicted() {
		a.mu.Lock()
		delete(a.cas, k)
		a.mu.Unlock()
		if err := a.store.Delete(a.ctx, caKey(k)); err != nil {
			a.log.Error("forget issuing CA", "err", err)
		}
	}
}

// learnIssuer teaches the trust c if it verifies against the roots at now.
// It verifies c before the trust sees it, so a certificate that does not
// verify costs one verification, as it did before the node persisted CAs.
func (a *admission) learnIssuer(c *x509.Certificate, now time.Time) bool {
	if _, err := c.Verify(x509.VerifyOptions{Roots: a.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		// An issuing CA of a federated trust (federation.go).
		return a.trust.AddFederatedIssuers([]*x509.Certificate{c}, now)
	}
	a.trust.AddIssuers([]*x509.Certificate{c}, now)
	return true
}

// caKey is where an issuing CA is stored: under its key, never the
// SubjectKeyId it picks.
func caKey(k identity.CAKey) ds.Key { return caPrefix.ChildString(k.String()) }

// loadCAs teaches the trust the issuing CAs persisted by learnIssuers that
// still verify against the roots. It runs before loadCRLs.
func (a *admission) loadCAs(ctx context.Context) error {
	res, err := a.store.Query(ctx, query.Query{Prefix: caPrefix.String()})
	if err != nil {
		return fmt.Errorf("load issuing CAs: %w", err)
	}
	now := a.now()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load issuing CAs: %w", r.Error)
		}
		c, err := x509.ParseCertificate(r.Value)
		if err != nil || !c.IsCA || len(c.SubjectKeyId) == 0 || !a.learnIssuer(c, now) {
			continue // an expired CA: its renewal is learnt when met
		}
		a.mu.Lock()
		a.cas[identity.KeyOf(c)] = struct{}{}
		a.mu.Unlock()
	}
	a.forgetEvicted() // after the query: the store is not written while it is read
	return nil
}

// loadCRLs installs the persisted CRLs.
func (a *admission) loadCRLs(ctx context.Context) error {
	res, err := a.store.Query(ctx, query.Query{Prefix: crlPrefix.String()})
	if err != nil {
		return fmt.Errorf("load CRLs: %w", err)
	}
	a.crlMu.Lock()
	defer a.crlMu.Unlock()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load CRLs: %w", r.Error)
		}
		l, err := identity.ParseCRL(r.Value)
		if err != nil {
			continue
		}
		if key, changed, err := a.trust.InstallCRL(l); err != nil {
			a.log.Warn("stored CRL refused", "issuer_key", hex.EncodeToString(l.AuthorityKeyId), "err", err)
		} else if changed {
			a.revoked[key] = sumRevoked(l)
			a.gen.Add(1)
		}
	}
	return nil
}

// crlChange is what installing a newer CRL changed.
type crlChange struct {
	raw     []byte // the CRL, DER
	revokes bool   // what is revoked changed, not only the CRL's number
}

// installCRL verifies a DER CRL and, when it is newer than the one held
// from its issuer, installs and persists it. It returns nil when the CRL is
// not newer.
func (a *admission) installCRL(der []byte) (*crlChange, error) {
	if len(der) > maxCRLBytes {
		return nil, fmt.Errorf("%w: CRL of %d bytes", identity.ErrMalformed, len(der))
	}
	l, err := identity.ParseCRL(der)
	if err != nil {
		return nil, err
	}
	a.crlMu.Lock()
	defer a.crlMu.Unlock()
	issuer, changed, err := a.trust.InstallCRL(l)
	if err != nil || !changed {
		return nil, err
	}
	a.gen.Add(1)
	sum := sumRevoked(l)
	old, ok := a.revoked[issuer]
	if !ok {
		old = sumRevoked(&x509.RevocationList{})
	}
	a.revoked[issuer] = sum
	a.log.Info("newer CRL installed", "issuer_key", hex.EncodeToString(l.AuthorityKeyId), "number", l.Number.String())
	if err := a.store.Put(a.ctx, crlPrefix.ChildString(issuer.String()), l.Raw); err != nil {
		a.log.Error("persist CRL", "err", err)
	}
	return &crlChange{raw: l.Raw, revokes: sum != old}, nil
}

// revokedSum digests the set of serials a CRL revokes.
type revokedSum [sha256.Size]byte

func sumRevoked(l *x509.RevocationList) revokedSum {
	serials := make([]string, 0, len(l.RevokedCertificateEntries))
	for _, e := range l.RevokedCertificateEntries {
		serials = append(serials, string(e.SerialNumber.Bytes()))
	}
	slices.Sort(serials)
	serials = slices.Compact(serials)
	h := sha256.New()
	var n [8]byte
	for _, s := range serials {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var sum revokedSum
	copy(sum[:], h.Sum(nil))
	return sum
}

// isRevoked reports whether a CRL held revokes a staff chain, whatever
// the time (revokedEver).
func (a *admission) isRevoked(chain []*x509.Certificate, id peer.ID, now time.Time) bool {
	judge := func(at time.Time) (time.Time, error) {
		s, err := a.trust.Admit(chain, id, at)
		if err != nil {
			return time.Time{}, err
		}
		return s.NotAfter, nil
	}
	_, err := judge(now)
	return revokedEver(judge, chain, err)
}
