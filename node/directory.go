package node

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// entry is what a device keeps in memory of a colleague's directory entry:
// enough to judge whether an incoming entry is newer and to find a colleague
// by staff ID. The entry itself (certificate chain and signed prekey) is in
// the store — a device holds one per colleague, thousands in a large trust,
// and their certificates and KEM keys do not belong on the heap.
type entry struct {
	staffID  string
	serial   string // leaf certificate serial, big-endian
	notAfter int64  // leaf certificate expiry, Unix seconds
	prekey   int64  // creation time of the newest verified prekey; 0: none
	sum      entrySum
	seq      uint64 // Node.dirSeq when it last changed
}

// entrySum identifies a stored entry's leaf certificate and prekey: what
// directory sync offers, and how an entry we already hold (the common case
// on the trust topic) is dropped without verifying its chain again. A
// collision could only make us drop an entry, never accept one.
type entrySum [entrySumSize]byte

const entrySumSize = 16

func sumOf(d dirEntry) entrySum {
	h := sha256.New()
	if len(d.Chain) > 0 {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(d.Chain[0])))
		h.Write(n[:])
		h.Write(d.Chain[0])
	}
	h.Write(d.Prekey)
	var s entrySum
	copy(s[:], h.Sum(nil))
	return s
}

func entryKey(id peer.ID) ds.Key { return entryPrefix.ChildString(id.String()) }

// holds reports whether the directory holds exactly this entry.
func (n *Node) holds(d dirEntry) bool {
	return len(d.Chain) > 0 && n.holdsSum(sumOf(d))
}

// holdsSum reports whether the directory holds the entry with this digest.
func (n *Node) holdsSum(s entrySum) bool {
	n.dirMu.Lock()
	defer n.dirMu.Unlock()
	_, ok := n.sums[s]
	return ok
}

// addEntry records a verified chain (and prekey, if any and valid) in the
// directory, persists it and, when it changed and publish is set, spreads it
// on the trust topic. A newer certificate of a peer blocked as revoked lifts
// the block. It reports whether the entry changed.
func (n *Node) addEntry(chain []*x509.Certificate, s *identity.Staff, prekey []byte, publish bool) bool {
	var pk *e2e.Prekey
	if prekey != nil {
		if p, err := e2e.DecodePrekey(prekey); err == nil && string(p.Owner) == string(s.PeerID) {
			pk = p
		}
	}
	n.dirMu.Lock()
	defer n.dirMu.Unlock()
	old, had := n.directory[s.PeerID]
	newCert := !had || (old.serial != string(s.Serial.Bytes()) && old.notAfter <= s.NotAfter.Unix())
	newPrekey := pk != nil && (!had || pk.Created > old.prekey)
	if !newCert && !newPrekey {
		return false
	}
	stored := dirEntry{Chain: encodeChain(chain)}
	if newPrekey {
		stored.Prekey = prekey
	}
	if had && (!newCert || !newPrekey) {
		prev, err := n.storedEntry(s.PeerID)
		if err != nil {
			n.log.Error("read directory entry", "err", err)
			return false
		}
		if !newCert {
			stored.Chain = prev.Chain
		}
		if !newPrekey {
			stored.Prekey = prev.Prekey
		}
	}
	raw, err := detcbor.Marshal(stored)
	if err == nil {
		err = n.cfg.Store.Put(n.ctx, entryKey(s.PeerID), raw)
	}
	if err != nil {
		n.log.Error("persist directory entry", "err", err)
		return false
	}
	e := old
	if newCert {
		e = certIndex(s)
		e.prekey = old.prekey
	}
	if newPrekey {
		e.prekey = pk.Created
	}
	n.indexLocked(s.PeerID, e, stored)
	if newCert {
		n.mu.Lock()
		delete(n.blocked, s.PeerID) // it holds a valid, unrevoked certificate now
		n.mu.Unlock()
	}
	if publish {
		n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: stored.Chain, Prekey: stored.Prekey}) })
	}
	return true
}

// certIndex is the part of the index a leaf certificate gives.
func certIndex(s *identity.Staff) entry {
	return entry{staffID: s.StaffID, serial: string(s.Serial.Bytes()), notAfter: s.NotAfter.Unix()}
}

// indexLocked records e as the index of id's stored entry d: its digest
// and a new change sequence number. Callers hold dirMu.
func (n *Node) indexLocked(id peer.ID, e entry, d dirEntry) {
	if old, ok := n.directory[id]; ok {
		delete(n.sums, old.sum)
	}
	n.dirSeq++
	e.sum, e.seq = sumOf(d), n.dirSeq
	n.directory[id] = e
	n.sums[e.sum] = struct{}{}
}

// storedEntry reads a colleague's entry from the store.
func (n *Node) storedEntry(id peer.ID) (dirEntry, error) {
	var d dirEntry
	raw, err := n.cfg.Store.Get(n.ctx, entryKey(id))
	switch {
	case errors.Is(err, ds.ErrNotFound):
		return d, fmt.Errorf("%w: %s is not in the directory", ErrUnknownPeer, id)
	case err != nil:
		return d, fmt.Errorf("read directory entry: %w", err)
	}
	if err := decode(raw, &d, maxEntryBytes); err != nil || len(d.Chain) == 0 {
		return d, fmt.Errorf("directory entry of %s: %w", id, identity.ErrMalformed)
	}
	return d, nil
}

// storedStaff reads a colleague's certificate from the store.
func (n *Node) storedStaff(id peer.ID) (*identity.Staff, dirEntry, error) {
	d, err := n.storedEntry(id)
	if err != nil {
		return nil, d, err
	}
	c, err := x509.ParseCertificate(d.Chain[0])
	if err != nil {
		return nil, d, fmt.Errorf("directory entry of %s: %w: %v", id, identity.ErrMalformed, err)
	}
	s, err := identity.StaffFromCert(c)
	return s, d, err
}

// Recipient implements chat.Directory: where to seal a welcome for id — its
// newest verified prekey, else (last resort) its certificate's KEM key.
func (n *Node) Recipient(id peer.ID, now time.Time) (e2e.Recipient, error) {
	if id == n.ID() {
		p, err := n.ownPrekey(now)
		if err != nil {
			return e2e.Recipient{}, err
		}
		return e2e.Recipient{ID: id, PrekeyID: p.ID, KEM: p.KEM}, nil
	}
	s, d, err := n.storedStaff(id)
	if err != nil {
		return e2e.Recipient{}, err
	}
	if p, err := e2e.DecodePrekey(d.Prekey); err == nil && string(p.Owner) == string(id) &&
		now.Sub(time.Unix(p.Created, 0)) < e2e.PrekeyRotation+e2e.PrekeyWindow {
		return e2e.Recipient{ID: id, PrekeyID: p.ID, KEM: p.KEM}, nil
	}
	return e2e.Recipient{ID: id, KEM: s.KEMKey}, nil
}

// afterAdmission syncs the directory with a newly admitted peer and tells it
// (and everyone else) who else is in reach.
func (n *Node) afterAdmission(id peer.ID) {
	n.sendDirectory(id)
	n.mu.Lock()
	var others []peer.ID
	for other, st := range n.peers {
		if other != id && st.admitted() {
			others = append(others, other)
		}
	}
	n.mu.Unlock()
	newcomer := n.addrsOf(id)
	if newcomer == nil {
		return
	}
	for _, o := range others {
		n.goOwned(func() { n.exchange(o, directoryMsg{Peers: []peerAddrs{*newcomer}}, nil) })
	}
}

func (n *Node) addrsOf(id peer.ID) *peerAddrs {
	var addrs [][]byte
	for _, c := range n.host.Network().ConnsToPeer(id) {
		if c.Stat().Direction == network.DirOutbound {
			addrs = append(addrs, c.RemoteMultiaddr().Bytes())
		}
	}
	for _, a := range n.host.Peerstore().Addrs(id) {
		if len(addrs) == maxAddrsPerPeer {
			break
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
	n.dirMu.Lock()
	since, upto := n.dirSent[id], n.dirSeq
	bySum := map[entrySum]peer.ID{}
	var offer directoryMsg
	for pid, e := range n.directory {
		if e.seq > since && pid != id && len(offer.Sums) < maxDirEntries {
			bySum[e.sum] = pid
			offer.Sums = append(offer.Sums, e.sum[:])
		}
	}
	n.dirMu.Unlock()
	if own := n.ownEntry(); own != nil {
		offer.Entries = append(offer.Entries, *own)
	}
	n.mu.Lock()
	var others []peer.ID
	for other, st := range n.peers {
		if other != id && st.admitted() {
			others = append(others, other)
		}
	}
	n.mu.Unlock()
	for _, o := range others {
		if pa := n.addrsOf(o); pa != nil {
			offer.Peers = append(offer.Peers, *pa)
		}
	}
	ok := n.exchange(id, offer, func(want [][]byte) (out directoryMsg) {
		for _, w := range want {
			pid, found := bySum[entrySum(w)]
			if !found {
				continue
			}
			if d, err := n.storedEntry(pid); err == nil {
				out.Entries = append(out.Entries, d)
			}
		}
		return out
	})
	if ok {
		n.dirMu.Lock()
		n.dirSent[id] = max(n.dirSent[id], upto)
		n.dirMu.Unlock()
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
// one; peers are dialled if not connected.
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
	n.takeEntries(offer.Entries)
	var want wantMsg
	for _, sum := range offer.Sums {
		if len(sum) == entrySumSize && !n.holdsSum(entrySum(sum)) {
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
	n.takeEntries(rest.Entries)
	n.tryPeers(offer.Peers, manet.IsIPLoopback(s.Conn().RemoteMultiaddr()))
}

// takeEntries verifies and records directory entries a peer sent.
func (n *Node) takeEntries(entries []dirEntry) {
	for _, de := range entries {
		if n.holds(de) {
			continue
		}
		chain, err := decodeChain(de.Chain)
		if err != nil {
			continue
		}
		if staff, err := n.judgeEntry(chain); err == nil && staff.PeerID != n.ID() {
			n.addEntry(chain, staff, de.Prekey, false)
		}
	}
}

// tryPeers dials the peers a colleague told us about, if not connected.
func (n *Node) tryPeers(peers []peerAddrs, viaLoopback bool) {
	for _, p := range peers {
		ai, err := toAddrInfo(p)
		if err != nil || ai.ID == n.ID() || n.isBlocked(ai.ID) {
			continue
		}
		ai.Addrs = slices.DeleteFunc(ai.Addrs, func(a ma.Multiaddr) bool {
			// A loopback address is only meaningful from a peer on this machine.
			return manet.IsIPLoopback(a) && !viaLoopback
		})
		if len(ai.Addrs) == 0 || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		n.disc.Try(ai)
	}
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

// Directory lists the staff known from certificates seen, sorted by name.
// It reads the entries from the store.
func (n *Node) Directory() []StaffInfo {
	n.dirMu.Lock()
	ids := make([]peer.ID, 0, len(n.directory))
	for id := range n.directory {
		ids = append(ids, id)
	}
	n.dirMu.Unlock()
	out := make([]StaffInfo, 0, len(ids))
	for _, id := range ids {
		if s, _, err := n.storedStaff(id); err == nil {
			out = append(out, staffInfo(s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DirectorySize is the number of colleagues in the directory.
func (n *Node) DirectorySize() int {
	n.dirMu.Lock()
	defer n.dirMu.Unlock()
	return len(n.directory)
}

// LookupStaff finds a directory entry by peer ID or staff ID.
func (n *Node) LookupStaff(key string) (*identity.Staff, bool) {
	if n.self.PeerID.String() == key || n.self.StaffID == key {
		return n.self, true
	}
	n.dirMu.Lock()
	var found peer.ID
	if id, err := peer.Decode(key); err == nil {
		if _, ok := n.directory[id]; ok {
			found = id
		}
	}
	for id, e := range n.directory {
		if found != "" {
			break
		}
		if e.staffID == key {
			found = id
		}
	}
	n.dirMu.Unlock()
	if found == "" {
		return nil, false
	}
	s, _, err := n.storedStaff(found)
	return s, err == nil
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
	n.mu.Lock()
	for id, ps := range n.peers {
		p := PeerStatus{PeerID: id.String(), Admitted: ps.admitted()}
		if p.Admitted {
			p.Name, p.StaffID = ps.staff.Name, ps.staff.StaffID
		}
		if conns := n.host.Network().ConnsToPeer(id); len(conns) > 0 {
			p.Addr = conns[0].RemoteMultiaddr().String()
		}
		st.Peers = append(st.Peers, p)
	}
	n.mu.Unlock()
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].PeerID < st.Peers[j].PeerID })
	return st
}
