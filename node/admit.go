package node

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// peerState is what we know of a connected peer. It lives while the peer
// has at least one connection.
type peerState struct {
	decided chan struct{} // closed once admitted or refused
	staff   *identity.Staff
	chain   []*x509.Certificate
	err     error
}

// admitted reports the decision. Callers hold n.mu (revocation rewrites
// err and staff).
func (p *peerState) admitted() bool {
	select {
	case <-p.decided:
		return p.err == nil && p.staff != nil
	default:
		return false
	}
}

// state returns the peer's state, creating it. Callers hold n.mu.
func (n *Node) stateLocked(id peer.ID) *peerState {
	st := n.peers[id]
	if st == nil {
		st = &peerState{decided: make(chan struct{})}
		n.peers[id] = st
	}
	return st
}

// isAdmitted reports whether id is admitted now.
func (n *Node) isAdmitted(id peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.peers[id]
	return st != nil && st.admitted()
}

// awaitAdmitted waits until id is admitted or refused, or the admission
// window has passed.
func (n *Node) awaitAdmitted(ctx context.Context, id peer.ID) bool {
	n.mu.Lock()
	st := n.stateLocked(id)
	n.mu.Unlock()
	t := time.NewTimer(n.cfg.AdmitTimeout + time.Second)
	defer t.Stop()
	select {
	case <-st.decided:
		n.mu.Lock() // a revocation may withdraw the admission meanwhile
		defer n.mu.Unlock()
		return st.admitted()
	case <-ctx.Done():
	case <-n.ctx.Done():
	case <-t.C:
	}
	return false
}

// gate wraps a stream handler so it serves only admitted peers.
func (n *Node) gate(h network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if !n.awaitAdmitted(n.ctx, s.Conn().RemotePeer()) {
			s.Reset()
			return
		}
		h(s)
	}
}

// onConnected runs for every new connection: refuse blocked peers, present
// ourselves, and start the admission clock.
func (n *Node) onConnected(c network.Conn) {
	id := c.RemotePeer()
	if n.isBlocked(id) {
		c.Close()
		return
	}
	n.mu.Lock()
	st := n.stateLocked(id)
	n.mu.Unlock()
	// Present on every new connection, even to a peer already admitted: on a
	// quick reconnect the peer may have dropped its state for us (the old
	// connection's close and the new one's open race), and waits for us. A
	// presentation to a peer that has decided is ignored.
	n.present(id, false)
	t := time.NewTimer(n.cfg.AdmitTimeout)
	defer t.Stop()
	select {
	case <-st.decided:
	case <-t.C:
		n.refuse(id, st, errors.New("no valid certificate chain presented in time"))
	case <-n.ctx.Done():
	}
}

func (n *Node) onDisconnected(id peer.ID) {
	if n.host.Network().Connectedness(id) == network.Connected {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if st := n.peers[id]; st != nil {
		delete(n.peers, id)
		if !isClosed(st.decided) {
			st.err = errors.New("disconnected")
			close(st.decided)
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// present sends our chain (unless crlsOnly) and our CRLs to id.
func (n *Node) present(id peer.ID, crlsOnly bool) {
	msg := presentation{CRLs: n.cfg.Trust.CRLs()}
	if !crlsOnly {
		msg.Chain = encodeChain(n.cfg.Chain)
	}
	data, err := detcbor.Marshal(msg)
	if err != nil {
		return
	}
	timeout := n.cfg.AdmitTimeout
	if crlsOnly {
		timeout = noticeTimeout
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "admit"), id, ProtoAdmit)
	if err != nil {
		n.log.Debug("admit: cannot open stream", "remote", id.String(), "err", err)
		return
	}
	defer streams.Bound(ctx, s, timeout)()
	if _, err := s.Write(data); err != nil {
		s.Reset()
		return
	}
	s.CloseWrite()
	// Wait for the other side to close, so the message is delivered before
	// a connection we are about to drop goes away.
	io.Copy(io.Discard, io.LimitReader(s, 1))
	s.Close()
}

// handleAdmit reads a peer's presentation: CRLs first (they authenticate
// themselves), then the chain, which decides admission.
func (n *Node) handleAdmit(s network.Stream) {
	defer s.Close()
	id := s.Conn().RemotePeer()
	defer streams.Bound(n.ctx, s, n.cfg.AdmitTimeout)()
	data, err := io.ReadAll(io.LimitReader(s, maxAdmitMsg+1))
	if err != nil {
		s.Reset()
		return
	}
	var msg presentation
	if err = decode(data, &msg, maxAdmitMsg); err == nil {
		err = msg.check()
	}
	if err != nil {
		n.mu.Lock()
		st := n.stateLocked(id)
		n.mu.Unlock()
		n.refuse(id, st, err)
		return
	}
	n.learnCRLs(msg.CRLs)
	if len(msg.Chain) == 0 {
		return // a notice carrying CRLs only
	}
	now := n.cfg.Now()
	chain, err := decodeChain(msg.Chain)
	var staff *identity.Staff
	if err == nil {
		n.cfg.Trust.AddIssuers(chain, now)
		staff, err = n.cfg.Trust.Admit(chain, id, now)
	}
	n.mu.Lock()
	st := n.stateLocked(id)
	if isClosed(st.decided) {
		// A new connection of a peer we admitted on an older one that has
		// not closed yet (a quick reconnect): sync as on any meeting.
		again := err == nil && st.admitted()
		n.mu.Unlock()
		if again {
			n.met(id)
		}
		return
	}
	if err != nil {
		n.mu.Unlock()
		n.refuse(id, st, err)
		return
	}
	st.staff, st.chain = staff, chain
	close(st.decided)
	n.mu.Unlock()
	n.log.Info("admitted", "remote", id.String(), "serial", identity.SerialHex(staff.Serial))
	n.addEntry(chain, staff, nil, true)
	n.met(id)
}

// met runs what follows meeting an admitted peer: directory sync and the
// layers' OnAdmitted hooks.
func (n *Node) met(id peer.ID) {
	n.goOwned(func() { n.afterAdmission(id) })
	n.mu.Lock()
	hooks := slices.Clone(n.onAdmitted)
	n.mu.Unlock()
	for _, f := range hooks {
		n.goOwned(func() { f(id) })
	}
}

// refuse records a negative decision, drops the peer and keeps it out for a
// while, so a flood of attempts costs us little.
func (n *Node) refuse(id peer.ID, st *peerState, why error) {
	n.mu.Lock()
	if !isClosed(st.decided) {
		st.err = why
		close(st.decided)
	}
	n.blocked[id] = n.cfg.Now().Add(intruderBlock)
	n.mu.Unlock()
	n.log.Warn("refused peer", "remote", id.String(), "reason", why.Error())
	n.host.Network().ClosePeer(id)
}

func (n *Node) isBlocked(id peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.blocked[id]
	if !ok {
		return false
	}
	if n.cfg.Now().After(until) {
		delete(n.blocked, id)
		return false
	}
	return true
}

// admittedPeers lists the peers admitted now.
func (n *Node) admittedPeers() []peer.ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []peer.ID
	for id, st := range n.peers {
		if st.admitted() {
			out = append(out, id)
		}
	}
	return out
}

// AwaitAdmitted waits for the admission decision on id (for the layers
// above, whose stream handlers serve admitted peers only).
func (n *Node) AwaitAdmitted(ctx context.Context, id peer.ID) bool { return n.awaitAdmitted(ctx, id) }

// OnAdmitted registers f to run, in a goroutine the node owns, for every
// peer admitted from now on — and again when an admitted peer opens a new
// connection (it walked away and straight back).
func (n *Node) OnAdmitted(f func(peer.ID)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onAdmitted = append(n.onAdmitted, f)
}

// KnownStaff reports whether id holds a valid certificate of a trusted CA
// that this node has seen — admitted now, or in the directory — and whether
// that certificate is revoked.
func (n *Node) KnownStaff(id peer.ID) (known, revoked bool) {
	now := n.cfg.Now()
	gen := n.crlGen.Load()
	n.mu.Lock()
	if k, ok := n.known[id]; ok && k.gen == gen && now.Before(k.until) {
		n.mu.Unlock()
		return k.known, k.revoked
	}
	var chain []*x509.Certificate
	if st := n.peers[id]; st != nil && st.chain != nil {
		chain = st.chain
	}
	n.mu.Unlock()
	if chain == nil {
		if d, err := n.storedEntry(id); err == nil {
			chain, _ = decodeChain(d.Chain)
		}
	}
	if chain == nil {
		return false, false
	}
	s, err := n.cfg.Trust.Admit(chain, id, now)
	k := knownStaff{gen: gen, until: now.Add(time.Minute)}
	switch {
	case err == nil:
		k.known = true
		if s.NotAfter.Before(k.until) {
			k.until = s.NotAfter
		}
	case errors.Is(err, identity.ErrRevoked):
		k.known, k.revoked = true, true
	}
	n.mu.Lock()
	n.known[id] = k
	n.mu.Unlock()
	return k.known, k.revoked
}

// knownStaff caches KnownStaff: one chain verification per sender per
// minute and CRL, not one per envelope.
type knownStaff struct {
	known, revoked bool
	gen            int64
	until          time.Time
}
