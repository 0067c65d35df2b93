package node

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/streams"
)

// Federation between trusts (identity/federation.go): our root CA signs a
// record naming another trust's root and a policy; devices of that trust
// whose certificates match it are admitted as federated peers.
//
// A federated peer is a class apart. Its peerState carries the record
// (fed) and admitted() is false for it, so everything gated on our own
// staff's admission refuses it: the directory and peer exchange
// (/medmesh/directory/2), the trust topic and every pubsub RPC, the rota,
// anchors' sync and carriage, the relay (neither reservation nor circuit),
// the witness. It is not added to the directory, our CRLs are not handed
// to it (only those of its own trust), and its roles grant it nothing here.
// What it gets today: a verified, policy-checked admission (fedAdmitted),
// our staff details, and the OnFederated hooks, for the conversation
// layer to build invited conversations on.
//
// Records spread among our own devices like CRLs: persisted under
// fedPrefix, exchanged on /medmesh/federation/1 with every newly admitted
// colleague and pushed to every admitted colleague when a newer one is
// installed (a flood that stops where the record is not newer). A newer
// record judges every peer again: a withdrawal drops the trust's devices.

// ProtoFederation carries federation records between our own devices: the
// opener writes frames (varint length, a signed record of at most
// identity.MaxFederationBytes), at most maxFedRecords, then closes.
const ProtoFederation = "/medmesh/federation/1"

const maxFedRecords = 64

var fedPrefix = ds.NewKey("/trust/federation") // records, by the other root's CAKey

// judgeCredential judges a presented credential chain: as our own staff,
// else (when a federation record is held) as a device of a federated trust.
// fed is the record whose root the chain reached, also when it is refused
// there (revoked by its trust, outside the policy); the error is then
// that refusal rather than ours.
func (a *admission) judgeCredential(chain []*x509.Certificate, id peer.ID, now time.Time) (*identity.Credential, *identity.Federation, error) {
	cred, err := a.trust.AdmitCredential(chain, id, now)
	if err == nil || !a.trust.Federated() {
		return cred, nil, err
	}
	fc, fed, ferr := a.trust.AdmitFederatedCredential(chain, id, now)
	if fed == nil {
		return nil, nil, err
	}
	return fc, fed, ferr
}

// judgeStaff is judgeCredential for the staff chain of a peer whose
// credential was judged: as our own staff, or under fed's trust only.
func (a *admission) judgeStaff(chain []*x509.Certificate, id peer.ID, fed *identity.Federation, now time.Time) (*identity.Staff, error) {
	if fed == nil {
		return a.trust.Admit(chain, id, now)
	}
	s, f, err := a.trust.AdmitFederated(chain, id, now)
	if err == nil && f.Other != fed.Other {
		err = fmt.Errorf("%w: staff certificate of another trust than its credential", identity.ErrPeerMismatch)
	}
	return s, err
}

// judgeAgain judges an admitted (or credential-accepted) peer again at
// now, in its class. Callers hold a.mu.
func (a *admission) judgeAgain(st *peerState, id peer.ID, now time.Time) error {
	var err error
	if st.fed == nil {
		_, err = a.trust.AdmitCredential(st.credChain, id, now)
	} else {
		var f *identity.Federation
		if _, f, err = a.trust.AdmitFederatedCredential(st.credChain, id, now); err == nil && f.Other != st.fed.Other {
			err = identity.ErrNotFederated
		}
	}
	if err == nil && st.chain != nil {
		_, err = a.judgeStaff(st.chain, id, st.fed, now)
	}
	return err
}

// fedAdmitted reports whether p is admitted as a federated peer. Callers
// hold a.mu.
func (p *peerState) fedAdmitted() bool {
	return isClosed(p.decided) && p.err == nil && p.cred != nil && p.staff != nil && p.fed != nil
}

// federation is the record a peer's chain reached, if any.
func (a *admission) federation(id peer.ID) *identity.Federation {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.peers[id]; st != nil {
		return st.fed
	}
	return nil
}

// crlsFor are the CRLs we hand id: all of ours to our own staff (or a
// peer of unknown class refused as revoked), only those of its own trust
// to a peer of a federated trust.
func (a *admission) crlsFor(id peer.ID) [][]byte {
	if f := a.federation(id); f != nil {
		return a.trust.CRLsUnder(f.Other)
	}
	return a.trust.CRLs()
}

// IsFederated reports whether id is admitted now as a device of a
// federated trust (never our own staff: IsAdmitted is false for it).
func (n *Node) IsFederated(id peer.ID) bool {
	n.adm.mu.Lock()
	defer n.adm.mu.Unlock()
	st := n.adm.peers[id]
	return st != nil && st.fedAdmitted()
}

// FederatedStaff is the verified staff certificate of a federated peer
// admitted now, and the record it was admitted under.
func (n *Node) FederatedStaff(id peer.ID) (*identity.Staff, *identity.Federation, bool) {
	n.adm.mu.Lock()
	defer n.adm.mu.Unlock()
	st := n.adm.peers[id]
	if st == nil || !st.fedAdmitted() {
		return nil, nil, false
	}
	return st.staff, st.fed, true
}

// OnFederated registers f to run, in a goroutine the node owns, for every
// peer admitted as federated from now on (the layers above decide what it
// may sync: conversations it was invited to, nothing else).
func (n *Node) OnFederated(f func(peer.ID)) {
	n.adm.mu.Lock()
	defer n.adm.mu.Unlock()
	n.adm.onFederated = append(n.adm.onFederated, f)
}

func (n *Node) federatedHooks() []func(peer.ID) {
	n.adm.mu.Lock()
	defer n.adm.mu.Unlock()
	return append([]func(peer.ID){}, n.adm.onFederated...)
}

// Federations lists the federation records this device applies.
func (n *Node) Federations() []*identity.Federation { return n.adm.trust.Federations() }

// SubmitFederation installs a signed federation record (PEM or CBOR, from
// the local API or a file) and spreads it. It reports whether the record
// was newer than the one held for its other root.
func (n *Node) SubmitFederation(_ context.Context, data []byte) (bool, error) {
	f, err := identity.ParseFederation(data)
	if err != nil {
		return false, err
	}
	return n.installFederation(f.Raw)
}

// installFederation verifies a record and, when it is newer, persists it,
// judges every peer again and pushes it to every admitted colleague.
func (n *Node) installFederation(raw []byte) (bool, error) {
	n.adm.fedMu.Lock()
	f, changed, err := n.adm.trust.InstallFederation(raw)
	if err == nil && changed {
		if perr := n.adm.store.Put(n.ctx, fedPrefix.ChildString(f.Other.String()), f.Raw); perr != nil {
			n.log.Error("persist federation record", "err", perr)
		}
	}
	n.adm.fedMu.Unlock()
	if err != nil || !changed {
		return false, err
	}
	n.log.Info("federation record installed", "other_root", f.Other.String(), "number", f.Number, "withdrawn", f.Withdrawn)
	if f.Active() {
		n.reloadFederated()
	}
	n.adm.gen.Add(1)
	select {
	case n.recheck <- struct{}{}:
	default:
	}
	for _, id := range n.adm.admittedPeers("") {
		n.goOwned(func() { n.sendFederations(id, [][]byte{f.Raw}) })
	}
	n.adm.mu.Lock()
	hooks := append([]func(){}, n.adm.onFedRecord...)
	n.adm.mu.Unlock()
	for _, h := range hooks {
		n.goOwned(h)
	}
	return true, nil
}

// OnFederationRecord registers f to run, in a goroutine the node owns,
// each time a newer federation record is installed (a withdrawal or a
// narrower policy: the layers above remove the members it no longer
// admits).
func (n *Node) OnFederationRecord(f func()) {
	n.adm.mu.Lock()
	defer n.adm.mu.Unlock()
	n.adm.onFedRecord = append(n.adm.onFedRecord, f)
}

// reloadFederated runs when a record becomes active: the federated
// trust's issuing CAs and CRLs persisted while it was withdrawn (or before
// it was first installed) were refused at load, since its CAs verify only
// under an active record's root; they are loaded again, and the CRLs held
// for a CA unknown then are tried again.
func (n *Node) reloadFederated() {
	if err := n.adm.loadCAs(n.ctx); err != nil {
		n.log.Error("reload issuing CAs", "err", err)
	}
	if err := n.adm.loadCRLs(n.ctx); err != nil {
		n.log.Error("reload CRLs", "err", err)
	}
	n.retryPendingCRLs()
}

// loadFederations installs the persisted records. It runs before loadCAs,
// so the issuing CAs of federated trusts verify again.
func (a *admission) loadFederations(ctx context.Context) error {
	res, err := a.store.Query(ctx, query.Query{Prefix: fedPrefix.String()})
	if err != nil {
		return fmt.Errorf("load federation records: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load federation records: %w", r.Error)
		}
		if _, _, err := a.trust.InstallFederation(r.Value); err != nil {
			a.log.Warn("stored federation record refused", "err", err)
		}
	}
	return nil
}

// StoredFederations reads the federation records persisted in a device's
// store (a stopped node's), unverified: identity.Trust.InstallFederation
// judges them.
func StoredFederations(ctx context.Context, store ds.Datastore) ([][]byte, error) {
	res, err := store.Query(ctx, query.Query{Prefix: fedPrefix.String()})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		out = append(out, r.Value)
	}
	return out, nil
}

// sendFederations writes records to an admitted colleague on
// ProtoFederation. Nothing is sent when there is nothing to send, so a
// device of a trust with no federation never opens the protocol.
func (n *Node) sendFederations(id peer.ID, raws [][]byte) {
	if len(raws) == 0 || !n.isAdmitted(id) {
		return
	}
	n.sendMessages(id, ProtoFederation, "federation", raws, maxFedRecords)
}

// handleFederation reads the records an admitted colleague sends (gated:
// our own staff only) and installs the newer ones.
func (n *Node) handleFederation(s network.Stream) {
	defer s.Close()
	defer streams.Bound(n.ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(bufio.NewReader(s), identity.MaxFederationBytes)
	for range maxFedRecords {
		raw, err := r.ReadMsg()
		if err != nil {
			return
		}
		_, err = n.installFederation(raw)
		r.ReleaseMsg(raw)
		if err != nil && !errors.Is(err, identity.ErrUnknownCA) {
			n.log.Debug("federation record refused", "remote", s.Conn().RemotePeer().String(), "err", err)
			n.Penalise(s.Conn().RemotePeer())
		}
	}
}

// ownFederations are the records held, as they travel.
func (n *Node) ownFederations() [][]byte {
	var out [][]byte
	for _, f := range n.adm.trust.Federations() {
		out = append(out, f.Raw)
	}
	return out
}

// AddStoredFederation puts a federation record into a stopped node's store
// (medmesh trust add): it is verified against trust (the device's roots,
// with the records store holds installed first) and stored only when it is
// newer than the one held for its other root. The node installs it at its
// next start and spreads it.
func AddStoredFederation(ctx context.Context, store ds.Datastore, trust *identity.Trust, data []byte) (*identity.Federation, bool, error) {
	held, err := StoredFederations(ctx, store)
	if err != nil {
		return nil, false, err
	}
	for _, raw := range held {
		_, _, _ = trust.InstallFederation(raw) // a stored record that no longer verifies is simply not applied
	}
	f, err := identity.ParseFederation(data)
	if err != nil {
		return nil, false, err
	}
	f, changed, err := trust.InstallFederation(f.Raw)
	if err != nil || !changed {
		return f, false, err
	}
	return f, true, store.Put(ctx, fedPrefix.ChildString(f.Other.String()), f.Raw)
}
