package node

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
	"github.com/medmesh/medmesh/internal/streams"
)

// isAdmitted reports whether id is admitted now.
func (n *Node) isAdmitted(id peer.ID) bool { return n.adm.isAdmitted(id) }

// awaitAdmitted waits until id is admitted or refused, or the admission
// window has passed.
func (n *Node) awaitAdmitted(ctx context.Context, id peer.ID) bool {
	return n.adm.awaitAdmitted(ctx, id)
}

func (n *Node) isBlocked(id peer.ID) bool { return n.adm.isBlocked(id) }

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
	st := n.adm.state(id)
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
	n.adm.forget(id)
}

// present sends our chain (unless crlsOnly) and our CRLs to id.
func (n *Node) present(id peer.ID, crlsOnly bool) {
	msg := presentation{CRLs: n.adm.trust.CRLs()}
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
// themselves; the chain's issuing CAs are learnt before them, so a site
// CA's CRL is not refused for want of its CA), then the chain, which
// decides admission.
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
		n.refuse(id, n.adm.state(id), err)
		return
	}
	now := n.cfg.Now()
	var chain []*x509.Certificate
	if len(msg.Chain) > 0 {
		if chain, err = decodeChain(msg.Chain); err == nil {
			n.adm.learnIssuers(chain, now)
		}
	}
	n.learnCRLs(msg.CRLs)
	if len(msg.Chain) == 0 {
		return // a notice carrying CRLs only
	}
	var staff *identity.Staff
	if err == nil {
		staff, err = n.adm.trust.Admit(chain, id, now)
	}
	fresh, admitted := n.adm.decide(id, staff, chain, err)
	switch {
	case !fresh:
		// A new connection of a peer we admitted on an older one that has
		// not closed yet (a quick reconnect): sync as on any meeting.
		if admitted {
			n.met(id)
		}
		return
	case !admitted:
		n.refused(id, err)
		return
	}
	n.log.Info("admitted", "remote", id.String(), "serial", identity.SerialHex(staff.Serial))
	n.addEntry(chain, staff, nil, true)
	n.met(id)
}

// met runs what follows meeting an admitted peer: directory sync and the
// layers' OnAdmitted hooks.
func (n *Node) met(id peer.ID) {
	n.goOwned(func() { n.afterAdmission(id) })
	for _, f := range n.adm.admittedHooks() {
		n.goOwned(func() { f(id) })
	}
}

// refuse records a negative decision, drops the peer and keeps it out for a
// while, so a flood of attempts costs us little.
func (n *Node) refuse(id peer.ID, st *peerState, why error) {
	n.adm.refuse(id, st, why)
	n.refused(id, why)
}

// refused drops a peer refused (and blocked) by the admission.
func (n *Node) refused(id peer.ID, why error) {
	n.log.Warn("refused peer", "remote", id.String(), "reason", why.Error())
	n.host.Network().ClosePeer(id)
}

// AwaitAdmitted waits for the admission decision on id (for the layers
// above, whose stream handlers serve admitted peers only).
func (n *Node) AwaitAdmitted(ctx context.Context, id peer.ID) bool { return n.awaitAdmitted(ctx, id) }

// OnAdmitted registers f to run, in a goroutine the node owns, for every
// peer admitted from now on — and again when an admitted peer opens a new
// connection (it walked away and straight back).
func (n *Node) OnAdmitted(f func(peer.ID)) { n.adm.addOnAdmitted(f) }

// KnownStaff reports whether id holds a valid certificate of a trusted CA
// that this node has seen — admitted now, or in the directory — and whether
// that certificate is revoked.
func (n *Node) KnownStaff(id peer.ID) (known, revoked bool) { return n.adm.knownStaff(id, n.dir) }
