package node

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// entry is a directory entry: a colleague's verified certificate chain (as
// DER, not parsed: a device holds one entry per colleague, and a parsed
// chain costs several times its bytes) and newest verified prekey.
type entry struct {
	staff  *identity.Staff
	chain  [][]byte
	prekey *e2e.Prekey
}

func (e *entry) wire() dirEntry {
	d := dirEntry{Chain: e.chain}
	if e.prekey != nil {
		d.Prekey, _ = e2e.EncodePrekey(e.prekey)
	}
	return d
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
	compact := n.compactChain(chain)
	n.mu.Lock()
	old := n.directory[s.PeerID]
	newCert := old == nil || (old.staff.Serial.Cmp(s.Serial) != 0 && !old.staff.NotAfter.After(s.NotAfter))
	newPrekey := pk != nil && (old == nil || old.prekey == nil || pk.Created > old.prekey.Created)
	if !newCert && !newPrekey {
		n.mu.Unlock()
		return false
	}
	e := &entry{staff: s, chain: compact, prekey: pk}
	if old != nil {
		if !newCert {
			e.staff, e.chain = old.staff, old.chain
		}
		if !newPrekey {
			e.prekey = old.prekey
		}
	}
	n.directory[s.PeerID] = e
	if newCert {
		delete(n.blocked, s.PeerID) // it holds a valid, unrevoked certificate now
	}
	n.mu.Unlock()
	n.persistEntry(e)
	if publish {
		w := e.wire()
		n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: w.Chain, Prekey: w.Prekey}) })
	}
	return true
}

// compactChain copies a chain's DER out of the message it came in, sharing
// the issuers' certificates between entries. Callers must not hold mu.
func (n *Node) compactChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, c := range chain {
		if i == 0 {
			out[i] = slices.Clone(c.Raw)
			continue
		}
		if shared, ok := n.issuers[string(c.Raw)]; ok {
			out[i] = shared
		} else {
			out[i] = slices.Clone(c.Raw)
			n.issuers[string(out[i])] = out[i]
		}
	}
	return out
}

func (n *Node) persistEntry(e *entry) {
	raw, err := detcbor.Marshal(e.wire())
	if err == nil {
		err = n.cfg.Store.Put(n.ctx, entryPrefix.ChildString(e.staff.PeerID.String()), raw)
	}
	if err != nil {
		n.log.Error("persist directory entry", "err", err)
	}
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
	n.mu.Lock()
	e := n.directory[id]
	n.mu.Unlock()
	switch {
	case e == nil:
		return e2e.Recipient{}, fmt.Errorf("%w: %s is not in the directory", ErrUnknownPeer, id)
	case e.prekey != nil && now.Sub(time.Unix(e.prekey.Created, 0)) < e2e.PrekeyRotation+e2e.PrekeyWindow:
		return e2e.Recipient{ID: id, PrekeyID: e.prekey.ID, KEM: e.prekey.KEM}, nil
	}
	return e2e.Recipient{ID: id, KEM: e.staff.KEMKey}, nil
}

// afterAdmission syncs the directory with a newly admitted peer and tells it
// (and everyone else) who else is in reach.
func (n *Node) afterAdmission(id peer.ID) {
	n.sendDirectory(id, true)
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
		n.goOwned(func() { n.send(o, directoryMsg{Peers: []peerAddrs{*newcomer}}) })
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

// sendDirectory sends id the other admitted peers and, with entries, every
// directory entry we hold.
func (n *Node) sendDirectory(id peer.ID, entries bool) {
	var msg directoryMsg
	n.mu.Lock()
	var others []peer.ID
	for other, st := range n.peers {
		if other != id && st.admitted() {
			others = append(others, other)
		}
	}
	if entries {
		for pid, e := range n.directory {
			if pid != id && len(msg.Entries) < maxDirEntries {
				msg.Entries = append(msg.Entries, e.wire())
			}
		}
		if own := n.ownEntry(); own != nil {
			msg.Entries = append(msg.Entries, own.wire())
		}
	}
	n.mu.Unlock()
	for _, o := range others {
		if pa := n.addrsOf(o); pa != nil {
			msg.Peers = append(msg.Peers, *pa)
		}
	}
	n.send(id, msg)
}

func (n *Node) send(id peer.ID, msg directoryMsg) {
	data, err := detcbor.Marshal(msg)
	if err != nil || len(data) > maxDirMsg {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	s, err := n.host.NewStream(ctx, id, ProtoDirectory)
	if err != nil {
		return
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(data); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// handleDirectory takes a directory message from an admitted peer: entries
// are verified one by one; peers are dialled if not connected.
func (n *Node) handleDirectory(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(io.LimitReader(s, maxDirMsg+1))
	if err != nil {
		s.Reset()
		return
	}
	var msg directoryMsg
	if err := decode(data, &msg, maxDirMsg); err != nil || len(msg.Entries) > maxDirEntries || len(msg.Peers) > maxDirEntries {
		n.log.Debug("bad directory message", "remote", from.String())
		return
	}
	for _, de := range msg.Entries {
		chain, err := decodeChain(de.Chain)
		if err != nil {
			continue
		}
		if staff, err := n.judgeEntry(chain); err == nil && staff.PeerID != n.ID() {
			n.addEntry(chain, staff, de.Prekey, false)
		}
	}
	viaLoopback := manet.IsIPLoopback(s.Conn().RemoteMultiaddr())
	for _, p := range msg.Peers {
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
func (n *Node) Directory() []StaffInfo {
	n.mu.Lock()
	out := make([]StaffInfo, 0, len(n.directory))
	for _, e := range n.directory {
		out = append(out, staffInfo(e.staff))
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupStaff finds a directory entry by peer ID or staff ID.
func (n *Node) LookupStaff(key string) (*identity.Staff, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, e := range n.directory {
		if id.String() == key || e.staff.StaffID == key {
			return e.staff, true
		}
	}
	if n.self.PeerID.String() == key || n.self.StaffID == key {
		return n.self, true
	}
	return nil, false
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
