package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/identity"
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
	n.goOwned(func() { n.present(id, false) })
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

// present opens a stream to id on /medmesh/admit/2 and writes our
// credential. Unless notice is set it then waits for our decision on id:
// if we admitted id, it shows our staff details and CRLs; if we refused
// id as revoked, it hands over the CRLs (so a revoked device learns it and
// wipes itself). A notice (to a peer being thrown out, or a newer CRL for a
// peer) carries the credential and the CRLs only.
func (n *Node) present(id peer.ID, notice bool) {
	if !notice {
		n.presentOnce(id, false)
		return
	}
	// A peer reads one presentation of ours at a time and resets the
	// others: a notice that meets the end of our first presentation (a
	// CRL applied in the moment after admission) is tried again, a few
	// times, while the peer is connected — a revoked device must learn
	// it, and the connection is dropped right after.
	wait := noticeRetry
	for range noticeTries - 1 {
		if n.presentOnce(id, true) || n.host.Network().Connectedness(id) != network.Connected {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
	n.presentOnce(id, true)
}

// presentOnce runs one presentation (see present) and reports whether
// the peer took it in (closed the stream rather than resetting it).
func (n *Node) presentOnce(id peer.ID, notice bool) bool {
	timeout := n.cfg.AdmitTimeout
	if notice {
		timeout = noticeTimeout
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "admit"), id, ProtoAdmit)
	if err != nil {
		n.log.Debug("admit: cannot open stream", "remote", id.String(), "err", err)
		return false
	}
	defer streams.Bound(ctx, s, timeout)()
	w := bufio.NewWriter(s)
	frames := []admitFrame{{Kind: admitCredential, Chain: encodeChain(n.cred)}}
	if !notice {
		if err := writeFrames(w, frames); err != nil {
			s.Reset()
			return false
		}
		frames = nil
		accepted, revoked := n.adm.awaitCredential(ctx, id)
		switch {
		case accepted:
			frames = append(frames, admitFrame{Kind: admitDetails, Chain: encodeChain(n.cfg.Chain)})
		case !revoked:
			s.Close()
			return true
		}
	}
	for _, crl := range n.adm.crlsFor(id) {
		frames = append(frames, admitFrame{Kind: admitCRL, CRL: crl})
	}
	if err := writeFrames(w, frames); err != nil {
		s.Reset()
		return false
	}
	s.CloseWrite()
	// Wait for the other side to close, so the frames are delivered before
	// a connection we are about to drop goes away.
	_, err = io.Copy(io.Discard, io.LimitReader(s, 1))
	s.Close()
	return err == nil
}

func writeFrames(w *bufio.Writer, frames []admitFrame) error {
	for _, f := range frames {
		if err := writeAdmitFrame(w, f); err != nil {
			return err
		}
	}
	return w.Flush()
}

// handleAdmit reads a peer's presentation. The credential comes first and
// decides admission; only an admitted peer may send more: its staff
// details (the certificate its credential was issued with) and CRLs. A
// peer not admitted yet gets one presentation read at a time, and no frame
// of it larger than a chain.
func (n *Node) handleAdmit(s network.Stream) {
	id := s.Conn().RemotePeer()
	release, ok := n.adm.beginReading(id)
	if !ok {
		s.Reset()
		return
	}
	defer release()
	defer s.Close()
	defer streams.Bound(n.ctx, s, 2*n.cfg.AdmitTimeout)()
	r := bufio.NewReaderSize(s, 4<<10)
	f, err := readAdmitFrame(r, maxChainFrame)
	if err == nil && f.Kind != admitCredential {
		err = fmt.Errorf("%w: expected a credential", identity.ErrMalformed)
	}
	if err != nil {
		// A malformed presentation refuses the peer; a stream that broke
		// (a connection lost mid-way) does not: the admission clock of
		// onConnected still runs.
		if errors.Is(err, identity.ErrMalformed) {
			n.refuse(id, n.adm.state(id), err)
		}
		s.Reset()
		return
	}
	now := n.cfg.Now()
	chain, err := decodeChain(f.Chain)
	var cred *identity.Credential
	var fed *identity.Federation
	if err == nil {
		n.adm.learnIssuers(chain, now)
		cred, fed, err = n.adm.judgeCredential(chain, id, now)
	}
	fresh, accepted := n.adm.decide(id, cred, chain, fed, err)
	switch {
	case !accepted && fresh && errors.Is(err, identity.ErrRevoked):
		// Hand a revoked device the CRL before dropping it, so it learns
		// it is revoked and wipes itself.
		s.Reset()
		n.log.Warn("refused peer", "remote", id.String(), "reason", err.Error())
		n.present(id, true)
		n.host.Network().ClosePeer(id)
		return
	case !accepted:
		if fresh {
			n.refused(id, err)
		}
		s.Reset()
		return
	}
	// Fresh, or a new connection of a peer admitted on an older one that
	// has not closed yet (a quick reconnect): sync as on any meeting, once
	// its details are in (the directory it is offered then holds its own
	// entry) or the stream ended without them.
	var once sync.Once
	meet := func() { once.Do(func() { n.met(id) }) }
	defer func() {
		if n.isAdmitted(id) {
			meet()
		}
	}()
	n.readAdmitted(id, r, meet)
}

// readAdmitted reads what an admitted peer sends after its credential:
// its staff details at most once (then it calls shown), and at most
// maxCRLs CRLs.
func (n *Node) readAdmitted(id peer.ID, r *bufio.Reader, shown func()) {
	details, crls := false, 0
	for {
		f, err := readAdmitFrame(r, maxCRLFrame)
		if err != nil {
			return // EOF, or a broken frame: the admission stands on the credential
		}
		switch {
		case f.Kind == admitDetails && !details:
			details = true
			if n.showDetails(id, f.Chain) {
				shown()
			}
		case f.Kind == admitCRL && crls < maxCRLs:
			crls++
			n.learnCRLs(id, [][]byte{f.CRL})
		default:
			n.withdraw(id, fmt.Errorf("%w: unexpected admission frame %d", identity.ErrMalformed, f.Kind))
			return
		}
	}
}

// showDetails checks and records the staff chain an admitted peer showed.
// A chain that does not verify, or is not the one its credential was
// issued with, refuses the peer.
func (n *Node) showDetails(id peer.ID, raw [][]byte) bool {
	chain, err := decodeChain(raw)
	var staff *identity.Staff
	fed := n.adm.federation(id)
	if err == nil {
		now := n.cfg.Now()
		n.adm.learnIssuers(chain, now)
		staff, err = n.adm.judgeStaff(chain, id, fed, now)
	}
	if err == nil {
		admitted, matches := n.adm.showDetails(id, staff, chain)
		switch {
		case !matches:
			err = fmt.Errorf("%w: staff certificate is not the one the credential names", identity.ErrPeerMismatch)
		case !admitted:
			return false // decided anew on a newer connection
		}
		n.log.Info("admitted", "remote", id.String(), "serial", identity.SerialHex(staff.Serial), "federated", fed != nil)
	}
	if err != nil {
		n.withdraw(id, err)
		return false
	}
	if fed == nil { // a federated peer never enters our directory
		n.addEntry(chain, staff, nil, true)
	}
	return true
}

// met runs what follows meeting an admitted peer: directory sync and the
// layers' OnAdmitted hooks.
func (n *Node) met(id peer.ID) {
	if n.adm.federation(id) != nil {
		// A federated peer: no directory, rota or peer exchange, no
		// layer's OnAdmitted hook; only OnFederated.
		for _, f := range n.federatedHooks() {
			n.goOwned(func() { f(id) })
		}
		return
	}
	n.goOwned(func() { n.afterAdmission(id) })
	n.goOwned(func() { n.sendFederations(id, n.ownFederations()) })
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

// withdraw withdraws an admission (the peer broke the protocol after its
// credential), drops the peer and keeps it out for a while.
func (n *Node) withdraw(id peer.ID, why error) {
	n.adm.withdraw(id, why)
	if errors.Is(why, identity.ErrRevoked) {
		// A device found revoked is handed the CRL first, so it learns
		// it and wipes itself.
		n.log.Warn("refused peer", "remote", id.String(), "reason", why.Error())
		n.goOwned(func() {
			n.present(id, true)
			n.host.Network().ClosePeer(id)
		})
		return
	}
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
