package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/streams"
)

// Federated colleagues invited into conversations (scope "invited").
//
// A federated peer never enters the directory, so the layers above learn
// what they need of it here, and of nobody else:
//
//   - its verified staff chain, kept in memory (fedBook, at most
//     maxFedBook devices, the least recently met forgotten) from the
//     moment it is admitted under a record, so that KnownFederated can
//     judge its envelopes — again at every call, against the records and
//     CRLs held now: a withdrawn record or its trust's CRL makes it
//     unknown or revoked at once — also after it has disconnected;
//   - its signed KEM prekey, fetched from it on ProtoFedPrekey right after
//     its admission: the responder writes one frame, its current prekey
//     (e2e.EncodePrekey, at most maxFedPrekey bytes), signed by its device
//     key; the fetcher checks the owner is the peer it asked and the
//     signature, and keeps it. Recipient seals to it (else to the KEM key
//     of the verified certificate, the last resort as for colleagues).
//     The protocol is served only to a peer whose credential was accepted
//     under a federation record (our own staff get prekeys from the
//     directory), and a peer of either class learns only the responder's
//     own prekey — never anyone else's entry.
//
// Nothing else is given: a federated peer's details are shown only by
// FederatedPeers (the local API), never passed on to other peers.

// ProtoFedPrekey serves a device's own signed prekey to federated peers.
const ProtoFedPrekey = "/medmesh/fedprekey/1"

const (
	maxFedBook = 1024
	// maxFedPerTrust is one federated trust's share of the book.
	maxFedPerTrust = maxFedBook / 2
	maxFedPrekey   = 4096
	fedPrekeyTTL   = 10 * time.Second
)

// fedBook remembers the federated devices met; mu guards it and is never
// held while calling into the admission or the trust.
type fedBook struct {
	mu    sync.Mutex
	peers map[peer.ID]*fedMet
	intro map[peer.ID]map[peer.ID]bool // federated_intro.go
}

type fedMet struct {
	chain  []*x509.Certificate // the verified staff chain
	prekey *e2e.Prekey         // verified; nil until fetched
	seen   time.Time
	// vouched: met by this device (it proved its key) or told by our own
	// staff (fedbook). An entry only introduced by a federated peer
	// (fedintro: the other trust's word alone) judges envelopes but is
	// never sealed to nor passed on.
	vouched bool
	other   identity.CAKey // the root of its trust
}

// connected reports whether id is connected now (its book entry is kept).
func (n *Node) connected(id peer.ID) bool {
	return n.host.Network().Connectedness(id) == network.Connected
}

// ownStaff reports whether id is our own staff as this node knows it (in
// the directory or admitted as staff): then no federated entry answers for
// id, whatever another trust's CA certified.
func (n *Node) ownStaff(id peer.ID) bool { return n.dir.has(id) || n.isAdmitted(id) }

// FederatedInfo is a federated device admitted now: its certificate's
// details and the trust it belongs to: its root's subject name — chosen by
// that trust, so it may be anything, our own trust's name too — followed
// by the root key's fingerprint (short), which our record names, and the
// full fingerprint in OtherRoot.
type FederatedInfo struct {
	StaffInfo
	OtherTrust string `json:"other_trust"`
	OtherRoot  string `json:"other_root"`
}

// fedInfo is how FederatedPeers shows a device admitted under record f.
func fedInfo(s *identity.Staff, f *identity.Federation) FederatedInfo {
	root := f.Other.String()
	return FederatedInfo{StaffInfo: staffInfo(s), OtherTrust: f.RootCert.Subject.CommonName + " [" + root[:16] + "]", OtherRoot: root}
}

// metFederated runs (a node-owned goroutine) for every peer admitted as
// federated: it records its chain, then fetches its prekey.
func (n *Node) metFederated(id peer.ID) {
	n.adm.mu.Lock()
	st := n.adm.peers[id]
	var chain []*x509.Certificate
	var other identity.CAKey
	if st != nil && st.fedAdmitted() {
		chain, other = st.chain, st.fed.Other
	}
	n.adm.mu.Unlock()
	if chain == nil {
		return
	}
	if n.ownStaff(id) {
		return
	}
	n.fed.remember(id, chain, n.cfg.Now(), true, other, n.connected)
	n.fed.forgetIntroduced(id)
	if p := n.fetchFedPrekey(id); p != nil {
		n.fed.setPrekey(id, p)
	}
	n.tellFederated(id) // federated_book.go
}

// remember keeps id's verified chain, of the trust whose root is other.
// When the book is full, or other's trust holds its share
// (maxFedPerTrust), the least recently met entry of the trust holding
// most (other's own, at its share) is forgotten, never one keep protects
// (connected): one trust's CA minting chains cannot push another trust's
// members out.
func (b *fedBook) remember(id peer.ID, chain []*x509.Certificate, now time.Time, vouched bool, other identity.CAKey, keep func(peer.ID) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers == nil {
		b.peers = map[peer.ID]*fedMet{}
	}
	if m := b.peers[id]; m != nil {
		m.chain, m.seen, m.other = chain, now, other
		m.vouched = m.vouched || vouched
		return
	}
	per := map[identity.CAKey]int{}
	for _, m := range b.peers {
		per[m.other]++
	}
	if per[other] >= maxFedPerTrust || len(b.peers) >= maxFedBook {
		from := other
		if per[other] < maxFedPerTrust {
			for k, c := range per {
				if c > per[from] {
					from = k
				}
			}
		}
		var oldest peer.ID
		var at time.Time
		for p, m := range b.peers {
			if m.other != from || (keep != nil && keep(p)) {
				continue
			}
			if oldest == "" || m.seen.Before(at) {
				oldest, at = p, m.seen
			}
		}
		if oldest == "" {
			return // every entry of that trust is protected: the new one is not kept
		}
		delete(b.peers, oldest)
	}
	b.peers[id] = &fedMet{chain: chain, seen: now, vouched: vouched, other: other}
}

// forget drops id's entry (our own staff now).
func (b *fedBook) forget(id peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers, id)
}

// vouched reports whether id's entry was met or told by our own staff.
func (b *fedBook) vouchedFor(id peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.peers[id]
	return m != nil && m.vouched
}

func (b *fedBook) setPrekey(id peer.ID, p *e2e.Prekey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := b.peers[id]; m != nil && (m.prekey == nil || p.Created >= m.prekey.Created) {
		m.prekey = p
	}
}

func (b *fedBook) get(id peer.ID) ([]*x509.Certificate, *e2e.Prekey, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.peers[id]
	if m == nil {
		return nil, nil, false
	}
	return m.chain, m.prekey, true
}

// fedStaff judges a remembered federated device now: its staff details
// and record, or why it is refused (ErrUnknownPeer when never met).
func (n *Node) fedStaff(id peer.ID, now time.Time) (*identity.Staff, *identity.Federation, *e2e.Prekey, error) {
	chain, pk, ok := n.fed.get(id)
	if !ok || n.ownStaff(id) {
		return nil, nil, nil, fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	s, f, err := n.adm.trust.AdmitFederated(chain, id, now)
	return s, f, pk, err
}

// KnownFederated reports whether id is a device of a federated trust this
// node has met whose certificate its record admits now, and whether its
// trust's CRL revokes it (a withdrawn record or a lapsed certificate:
// unknown).
func (n *Node) KnownFederated(id peer.ID) (known, revoked bool) {
	_, _, _, err := n.fedStaff(id, n.cfg.Now())
	switch {
	case err == nil:
		return true, false
	case errors.Is(err, identity.ErrRevoked):
		return true, true
	}
	return false, false
}

// fedRecipient is Recipient for a federated device met: its verified
// prekey while fresh, else its certificate's KEM key.
func (n *Node) fedRecipient(id peer.ID, now time.Time) (e2e.Recipient, error) {
	s, _, pk, err := n.fedStaff(id, now)
	if err != nil {
		if errors.Is(err, identity.ErrRevoked) {
			return e2e.Recipient{}, fmt.Errorf("%w: %s", ErrRevoked, id)
		}
		return e2e.Recipient{}, fmt.Errorf("%w: %s: %w", ErrUnknownPeer, id, err)
	}
	if !n.fed.vouchedFor(id) {
		// Only the other trust's word (an introduction): its CA may have
		// certified one of our colleagues' keys with a KEM key it holds.
		return e2e.Recipient{}, fmt.Errorf("%w: %s: introduced by another trust only", ErrUnknownPeer, id)
	}
	if pk != nil && now.Sub(time.Unix(pk.Created, 0)) < e2e.PrekeyRotation+e2e.PrekeyWindow {
		return e2e.Recipient{ID: id, PrekeyID: pk.ID, KEM: pk.KEM}, nil
	}
	return e2e.Recipient{ID: id, KEM: s.KEMKey}, nil
}

// FederatedPeers lists the devices of federated trusts admitted now, by
// name: what an inviter picks from (they are never in Directory).
func (n *Node) FederatedPeers() []FederatedInfo {
	n.adm.mu.Lock()
	var out []FederatedInfo
	for id, st := range n.adm.peers {
		if st.fedAdmitted() && st.staff.PeerID == id {
			out = append(out, fedInfo(st.staff, st.fed))
		}
	}
	n.adm.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].PeerID < out[j].PeerID
	})
	return out
}

// FederatedPeer is one federated device as FederatedPeers shows it, also
// after it disconnected while its record and certificate still admit it.
func (n *Node) FederatedPeer(id peer.ID) (FederatedInfo, bool) {
	s, f, _, err := n.fedStaff(id, n.cfg.Now())
	if err != nil {
		return FederatedInfo{}, false
	}
	return fedInfo(s, f), true
}

// fedCredentialOK reports whether id's credential was accepted under a
// federation record (its details may not have arrived yet).
func (a *admission) fedCredentialOK(id peer.ID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.peers[id]
	return st != nil && st.credentialOK() && st.fed != nil
}

// handleFedPrekey writes this device's current prekey to a federated
// peer; anyone else is reset unread.
func (n *Node) handleFedPrekey(s network.Stream) {
	id := s.Conn().RemotePeer()
	ctx, cancel := context.WithTimeout(n.ctx, fedPrekeyTTL)
	defer cancel()
	select {
	case <-n.adm.state(id).verified:
	case <-ctx.Done():
	}
	if !n.adm.fedCredentialOK(id) {
		s.Reset()
		return
	}
	defer s.Close()
	defer streams.Bound(ctx, s, fedPrekeyTTL)()
	p, err := n.ownPrekey(n.cfg.Now())
	if err != nil {
		s.Reset()
		return
	}
	raw, err := e2e.EncodePrekey(p)
	if err != nil {
		s.Reset()
		return
	}
	if err := msgio.NewVarintWriter(s).WriteMsg(raw); err != nil {
		s.Reset()
		return
	}
	s.CloseWrite()
}

// fetchFedPrekey asks federated peer id for its prekey; nil when it does
// not answer with one it signed.
func (n *Node) fetchFedPrekey(id peer.ID) *e2e.Prekey {
	ctx, cancel := context.WithTimeout(n.ctx, fedPrekeyTTL)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "fedprekey"), id, ProtoFedPrekey)
	if err != nil {
		n.log.Debug("fedprekey: cannot open stream", "remote", id.String(), "err", err)
		return nil
	}
	defer s.Close()
	defer streams.Bound(ctx, s, fedPrekeyTTL)()
	s.CloseWrite()
	r := msgio.NewVarintReaderSize(s, maxFedPrekey)
	raw, err := r.ReadMsg()
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(s, 1))
	p, err := decodeFedPrekey(raw, id)
	if err != nil {
		n.log.Debug("fedprekey refused", "remote", id.String(), "err", err)
		n.Penalise(id)
		return nil
	}
	return p
}

// decodeFedPrekey decodes a prekey id presented and checks it is id's,
// signed by id's device key.
func decodeFedPrekey(raw []byte, id peer.ID) (*e2e.Prekey, error) {
	p, err := e2e.DecodePrekey(raw)
	if err != nil {
		return nil, err
	}
	if string(p.Owner) != string(id) {
		return nil, fmt.Errorf("%w: prekey of another device", e2e.ErrBadPrekey)
	}
	return p, nil
}

// Foreign reports whether id is a device of another trust this node has
// admitted as federated (whatever its record says now).
func (n *Node) Foreign(id peer.ID) bool {
	_, _, ok := n.fed.get(id)
	return ok && !n.ownStaff(id)
}
