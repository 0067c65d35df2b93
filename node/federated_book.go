package node

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// The federated devices a node met are told to our own staff, so that a
// colleague in a conversation with one (invited by another member) takes
// its envelopes — and can seal to it — without having met it: without
// that, one member's replies, which depend on the federated member's ops,
// would stall on every colleague who never met it.
//
// ProtoFedBook carries, between our own staff only (the gated handler;
// the opener sends only to an admitted colleague), entries as the
// directory has them (dirEntry: the federated device's staff chain and its
// signed prekey; at most maxFedBook frames, each at most maxFedEntry
// bytes). The taker judges each chain under its own records
// (identity.Trust.AdmitFederated: a chain of a trust it does not federate
// with, outside the policy, expired or revoked, is dropped) and checks the
// prekey's owner and signature; it remembers them in its fedBook. A
// node sends its whole book to each colleague it admits, and an entry
// learnt by meeting the device to every colleague admitted; entries taken
// from a colleague are not forwarded (each node's book reaches the next
// at their next meeting), so nothing floods. Never sent to a federated
// peer: one trust's devices learn nothing of who else was admitted.
const ProtoFedBook = "/medmesh/fedbook/1"

const maxFedEntry = maxChainFrame + maxFedPrekey + 64

// fedEntry is the book's entry for id as it travels, if it still holds.
func (n *Node) fedEntry(id peer.ID) ([]byte, bool) {
	chain, pk, ok := n.fed.get(id)
	if !ok || !n.fed.vouchedFor(id) || n.ownStaff(id) {
		return nil, false
	}
	if _, _, err := n.adm.trust.AdmitFederated(chain, id, n.cfg.Now()); err != nil {
		return nil, false
	}
	e := dirEntry{Chain: encodeChain(chain)}
	if pk != nil {
		e.Prekey, _ = e2e.EncodePrekey(pk)
	}
	raw, err := detcbor.Marshal(e)
	return raw, err == nil
}

// fedEntries is the whole book as it travels.
func (n *Node) fedEntries() [][]byte {
	n.fed.mu.Lock()
	ids := make([]peer.ID, 0, len(n.fed.peers))
	for id := range n.fed.peers {
		ids = append(ids, id)
	}
	n.fed.mu.Unlock()
	var out [][]byte
	for _, id := range ids {
		if raw, ok := n.fedEntry(id); ok {
			out = append(out, raw)
		}
	}
	return out
}

// tellFederated sends the entry of federated device id, just met, to
// every colleague admitted.
func (n *Node) tellFederated(id peer.ID) {
	raw, ok := n.fedEntry(id)
	if !ok {
		return
	}
	for _, to := range n.adm.admittedPeers("") {
		n.goOwned(func() { n.sendFedBook(to, [][]byte{raw}) })
	}
}

// sendFedBook writes entries to an admitted colleague.
func (n *Node) sendFedBook(to peer.ID, entries [][]byte) {
	if len(entries) == 0 || !n.isAdmitted(to) {
		return
	}
	n.sendMessages(to, ProtoFedBook, "fedbook", entries, maxFedBook)
}

// handleFedBook takes the entries a colleague sends (gated: our own staff).
func (n *Node) handleFedBook(s network.Stream) {
	defer s.Close()
	defer streams.Bound(n.ctx, s, dirTimeout)()
	from := s.Conn().RemotePeer()
	r := msgio.NewVarintReaderSize(bufio.NewReader(s), maxFedEntry)
	for range maxFedBook {
		raw, err := r.ReadMsg()
		if err != nil {
			return
		}
		err = n.takeFedEntry(raw, nil)
		r.ReleaseMsg(raw)
		if errors.Is(err, identity.ErrMalformed) || errors.Is(err, e2e.ErrBadPrekey) || errors.Is(err, identity.ErrBadSignature) {
			n.log.Debug("fedbook entry refused", "remote", from.String(), "err", err)
			n.Penalise(from)
		}
	}
}

// decodeFedEntry decodes an entry of the book (or an introduction): the
// chain, the device it names, and its prekey checked against it (nil if
// none). Nothing is judged against the trust here.
func decodeFedEntry(raw []byte) ([]*x509.Certificate, peer.ID, *e2e.Prekey, error) {
	var e dirEntry
	if err := detcbor.Unmarshal(raw, &e, maxFedEntry); err != nil {
		return nil, "", nil, fmt.Errorf("%w: fedbook entry: %v", identity.ErrMalformed, err)
	}
	chain, err := decodeChain(e.Chain)
	if err != nil {
		return nil, "", nil, err
	}
	st, err := identity.StaffFromCert(chain[0])
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %v", identity.ErrMalformed, err)
	}
	var pk *e2e.Prekey
	if e.Prekey != nil {
		if pk, err = decodeFedPrekey(e.Prekey, st.PeerID); err != nil {
			return nil, "", nil, err
		}
	}
	return chain, st.PeerID, pk, nil
}

// takeFedEntry judges one entry and remembers the device it names. other,
// if set, is the trust it must be of (an introduction by a device of that
// trust: errIntroOtherTrust otherwise).
func (n *Node) takeFedEntry(raw []byte, other *identity.CAKey) error {
	chain, id, pk, err := decodeFedEntry(raw)
	if err != nil {
		return err
	}
	now := n.cfg.Now()
	_, f, err := n.adm.trust.AdmitFederated(chain, id, now)
	if err != nil {
		return err // not (or no longer) federated here (our own staff never are)
	}
	if other != nil && f.Other != *other {
		return errIntroOtherTrust
	}
	if id == n.ID() || n.ownStaff(id) {
		return nil // our own staff win over any other trust's chain for the same peer ID
	}
	n.fed.remember(id, chain, now, other == nil, f.Other, n.connected)
	if pk != nil {
		n.fed.setPrekey(id, pk)
	}
	return nil
}
