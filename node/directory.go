package node

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/medmesh/medmesh/discovery"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/streams"
)

// addEntry records a verified chain (and prekey, if any and valid) in the
// directory, persists it and, when it changed and publish is set, spreads it
// on the trust topic. A newer certificate of a peer blocked as revoked lifts
// the block, and KnownStaff judges it afresh. It reports whether the entry
// changed.
func (n *Node) addEntry(chain []*x509.Certificate, s *identity.Staff, prekey []byte, publish bool) bool {
	changed, newCert, stored := n.dir.add(chain, s, prekey)
	if !changed {
		return false
	}
	if newCert {
		n.adm.renewed(s.PeerID)
	}
	if publish {
		n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: stored.Chain, Prekey: stored.Prekey}) })
	}
	return true
}

// Recipient implements chat.Directory: where to seal a welcome for id — its
// newest verified prekey, else (last resort) its certificate's KEM key. A
// colleague whose certificate a CRL revokes is refused with an error
// wrapping ErrRevoked; one not in the directory with ErrUnknownPeer.
func (n *Node) Recipient(id peer.ID, now time.Time) (e2e.Recipient, error) {
	if id == n.ID() {
		p, err := n.ownPrekey(now)
		if err != nil {
			return e2e.Recipient{}, err
		}
		return e2e.Recipient{ID: id, PrekeyID: p.ID, KEM: p.KEM}, nil
	}
	r, err := n.dir.recipient(id, now)
	if errors.Is(err, ErrUnknownPeer) && !n.dir.has(id) {
		return n.fedRecipient(id, now) // a federated device met (federated_peers.go)
	}
	return r, err
}

// afterAdmission syncs the directory with a newly admitted peer and tells it
// (and everyone else) who else is in reach.
func (n *Node) afterAdmission(id peer.ID) {
	if n.siteLink(id) != nil {
		n.announceSite(id) // before the directory: it names no one to id
	}
	n.sendDirectory(id)
	n.sendRota(id)
	if n.IsSitePeer(id) || (n.HasRole(id, RoleAnchor) && n.awaitSiteWord(id)) {
		return // a site peer is named to no one (sitesPX)
	}
	others := n.adm.admittedPeers(id)
	newcomer := n.addrsOf(id)
	if newcomer == nil {
		return
	}
	for _, o := range others {
		if n.IsSitePeer(o) {
			continue // and no one is named to a site peer
		}
		n.goOwned(func() { n.exchange(o, directoryMsg{Peers: []peerAddrs{*newcomer}}, nil) })
	}
}

// addrsOf is what peer exchange tells this site's peers of id: where we
// reached it. Nothing of a site peer, nor of a peer reached only across
// a site link (through a site peer's relay), nor any relay path through
// a site peer: this site's devices would dial across the WAN, outside the
// site link's filter and budget (sitesPX).
func (n *Node) addrsOf(id peer.ID) *peerAddrs {
	if n.IsSitePeer(id) || n.words.awaiting(id) || n.acrossSite(id) {
		return nil
	}
	var addrs [][]byte
	for _, c := range n.host.Network().ConnsToPeer(id) {
		if c.Stat().Direction == network.DirOutbound && !n.viaSitePeer(c.RemoteMultiaddr()) {
			addrs = append(addrs, c.RemoteMultiaddr().Bytes())
		}
	}
	if n.relay != nil && n.reservedHere(id) {
		addrs = append(addrs, discovery.Circuit(n.ID()).Bytes())
	}
	for _, a := range n.host.Peerstore().Addrs(id) {
		if len(addrs) == maxAddrsPerPeer {
			break
		}
		if n.viaSitePeer(a) {
			continue
		}
		if !slices.ContainsFunc(addrs, func(b []byte) bool { return string(b) == string(a.Bytes()) }) {
			addrs = append(addrs, a.Bytes())
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	return &peerAddrs{ID: []byte(id), Addrs: addrs}
}

// sendDirectory syncs our directory to id: it offers the other admitted
// peers, our own entry and the digests of the entries that changed since id
// last took ours (all of them, the first time); id asks for the ones it
// lacks. Devices walking in and out of reach meet again and again, and
// after the first days hold nearly the same directory: a meeting costs a
// digest per colleague at most, not every certificate.
func (n *Node) sendDirectory(id peer.ID) {
	bySum, sums, upto := n.dir.offer(id)
	offer := directoryMsg{Sums: sums}
	if own := n.ownEntry(); own != nil {
		offer.Entries = append(offer.Entries, *own)
	}
	if !n.IsSitePeer(id) { // a site peer is told of no peer here (sitesPX)
		for _, o := range n.adm.admittedPeers(id) {
			if pa := n.addrsOf(o); pa != nil {
				offer.Peers = append(offer.Peers, *pa)
			}
		}
	}
	ok := n.exchange(id, offer, func(want [][]byte) (out directoryMsg) {
		for _, w := range want {
			pid, found := bySum[entrySum(w)]
			if !found {
				continue
			}
			if d, err := n.dir.stored(pid); err == nil {
				out.Entries = append(out.Entries, d)
			}
		}
		return out
	})
	if ok {
		n.dir.markSent(id, upto)
	}
}

// exchange runs the initiator's side of /medmesh/directory/2: offer, the
// peer's list of wanted digests, then the entries reply gives for them.
// It reports whether the peer took everything in.
func (n *Node) exchange(id peer.ID, offer directoryMsg, reply func(want [][]byte) directoryMsg) bool {
	ctx, cancel := context.WithTimeout(n.ctx, dirTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, ProtoDirectory)
	if err != nil {
		return false
	}
	defer streams.Bound(ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(s, maxDirMsg)
	var want wantMsg
	if err := writeFrame(s, offer); err != nil {
		s.Reset()
		return false
	}
	if err := readFrame(r, &want, maxWantMsg); err != nil || len(want.Sums) > maxDirEntries {
		s.Reset()
		return false
	}
	var rest directoryMsg
	if reply != nil {
		rest = reply(want.Sums)
	}
	if err := writeFrame(s, rest); err != nil {
		s.Reset()
		return false
	}
	s.CloseWrite()
	// The peer closes once it has taken the entries in; a reset (it did
	// not admit us, or failed) is an error.
	_, err = io.Copy(io.Discard, io.LimitReader(s, 1))
	s.Close()
	return err == nil
}

// handleDirectory is the responder's side of /medmesh/directory/2 with an
// admitted peer: take the offer's entries and peers, ask for the offered
// digests we do not hold, take those entries. Entries are verified one by
// one; peers are dialled if not connected, within the bounds of tryPeers.
func (n *Node) handleDirectory(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	defer streams.Bound(n.ctx, s, dirTimeout)()
	r := msgio.NewVarintReaderSize(s, maxDirMsg)
	var offer directoryMsg
	if err := readFrame(r, &offer, maxDirMsg); err != nil || offer.check() != nil {
		n.log.Debug("bad directory offer", "remote", from.String())
		s.Reset()
		return
	}
	fresh := n.takeEntries(offer.Entries)
	var want wantMsg
	for _, sum := range offer.Sums {
		if len(sum) == entrySumSize && !n.dir.holdsSum(entrySum(sum)) {
			want.Sums = append(want.Sums, sum)
		}
	}
	if err := writeFrame(s, want); err != nil {
		s.Reset()
		return
	}
	var rest directoryMsg
	if err := readFrame(r, &rest, maxDirMsg); err != nil || rest.check() != nil || len(rest.Entries) > len(want.Sums) {
		n.log.Debug("bad directory entries", "remote", from.String())
		s.Reset()
		return
	}
	fresh += n.takeEntries(rest.Entries)
	if !n.IsSitePeer(from) { // peers a site peer names are at its site (sitesPX)
		n.tryPeers(from, offer.Peers, manet.IsIPLoopback(s.Conn().RemoteMultiaddr()))
	}
	n.bridgeDirectory(from, fresh)
}

// takeEntries verifies and records directory entries a peer sent; it
// reports how many changed the directory (what is worth bridging).
func (n *Node) takeEntries(entries []dirEntry) (changed int) {
	for _, de := range entries {
		if n.dir.holds(de) {
			continue
		}
		chain, err := decodeChain(de.Chain)
		if err != nil {
			continue
		}
		if staff, err := n.judgeEntry(chain); err == nil && staff.PeerID != n.ID() && n.addEntry(chain, staff, de.Prekey, false) {
			changed++
		}
	}
	return changed
}

// StaffInfo is what the local API shows of a colleague.
type StaffInfo struct {
	PeerID     string    `json:"peer_id"`
	Name       string    `json:"name"`
	StaffID    string    `json:"staff_id"`
	Roles      []string  `json:"roles"`
	Department string    `json:"department,omitempty"`
	Site       string    `json:"site,omitempty"`
	Trust      string    `json:"trust,omitempty"`
	ValidUntil time.Time `json:"valid_until"`
}

func staffInfo(s *identity.Staff) StaffInfo {
	roles := s.Roles
	if roles == nil {
		roles = []string{}
	}
	return StaffInfo{PeerID: s.PeerID.String(), Name: s.Name, StaffID: s.StaffID, Roles: roles,
		Department: s.Department, Site: s.Site, Trust: s.Trust, ValidUntil: s.NotAfter}
}

// Directory lists the colleagues known from certificates seen, sorted by
// name, but those whose certificate a CRL revokes. It reads the entries
// from the store.
func (n *Node) Directory() []StaffInfo { return n.dir.list() }

// DirectorySize is the number of colleagues in the directory, revoked ones
// included.
func (n *Node) DirectorySize() int { return n.dir.size() }

// LookupStaff finds a colleague by peer ID or staff ID, never one whose
// certificate a CRL revokes (a staff member's other device is found
// instead).
func (n *Node) LookupStaff(key string) (*identity.Staff, bool) {
	if n.self.PeerID.String() == key || n.self.StaffID == key {
		return n.self, true
	}
	return n.dir.lookup(key)
}

// PeerStatus is one connected peer in Status.
type PeerStatus struct {
	PeerID   string `json:"peer_id"`
	Name     string `json:"name,omitempty"`
	StaffID  string `json:"staff_id,omitempty"`
	Admitted bool   `json:"admitted"`
	Addr     string `json:"addr,omitempty"`
}

// Status is the node's view of itself and the peers it is connected to.
type Status struct {
	PeerID    string       `json:"peer_id"`
	Name      string       `json:"name"`
	StaffID   string       `json:"staff_id"`
	Roles     []string     `json:"roles"`
	Addrs     []string     `json:"addrs"`
	Peers     []PeerStatus `json:"peers"`
	CRLNumber int64        `json:"crl_number"`
}

// Status reports this node and each connected peer once.
func (n *Node) Status() Status {
	st := Status{PeerID: n.ID().String(), Name: n.self.Name, StaffID: n.self.StaffID,
		Roles: staffInfo(n.self).Roles, Addrs: []string{}, Peers: []PeerStatus{}, CRLNumber: n.cfg.Trust.NewestCRLNumber()}
	for _, a := range n.host.Addrs() {
		st.Addrs = append(st.Addrs, a.String()+"/p2p/"+n.ID().String())
	}
	for _, v := range n.adm.peerViews() {
		p := PeerStatus{PeerID: v.id.String(), Admitted: v.admitted}
		if v.staff != nil { // the details an admitted peer showed
			p.Name, p.StaffID = v.staff.Name, v.staff.StaffID
		}
		if conns := n.host.Network().ConnsToPeer(v.id); len(conns) > 0 {
			p.Addr = conns[0].RemoteMultiaddr().String()
		}
		st.Peers = append(st.Peers, p)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].PeerID < st.Peers[j].PeerID })
	return st
}
