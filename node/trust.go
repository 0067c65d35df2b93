package node

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/detcbor"
)

// Store keys.
var (
	crlPrefix   = ds.NewKey("/trust/crl")
	caPrefix    = ds.NewKey("/trust/ca") // issuing CAs learnt, by identity.CAKey
	entryPrefix = ds.NewKey("/directory")
)

// gatedHost is the host pubsub sees: its streams, both ways, wait for the
// admission decision and fail for peers that are not admitted.
type gatedHost struct {
	host.Host
	n *Node
}

func (g gatedHost) SetStreamHandler(pid protocol.ID, h network.StreamHandler) {
	g.Host.SetStreamHandler(pid, g.n.gate(h))
}

func (g gatedHost) SetStreamHandlerMatch(pid protocol.ID, m func(protocol.ID) bool, h network.StreamHandler) {
	g.Host.SetStreamHandlerMatch(pid, m, g.n.gate(h))
}

func (g gatedHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if !g.n.awaitAdmitted(ctx, p) {
		return nil, fmt.Errorf("%w: %s", ErrNotAdmitted, p)
	}
	return g.Host.NewStream(ctx, p, pids...)
}

// MessageID is the content hash of a message's data: the same bytes are the
// same message whoever forwards them.
func MessageID(m *pb.Message) string {
	sum := sha256.Sum256(m.Data)
	return string(sum[:])
}

// siteSubs keeps a site peer's subscriptions to any topic but the trust
// topic out of pubsub's view. The peer filter (gossipsWith) alone does not
// keep conversation gossip off a site link: gossipsub sends a message this
// node publishes itself (an anchor republishing what crossed in sync) to
// every peer subscribed to its topic, without asking the filter.
type siteSubs struct{ n *Node }

func (siteSubs) CanSubscribe(string) bool { return true }

func (f siteSubs) FilterIncomingSubscriptions(from peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	if !f.n.IsSitePeer(from) {
		return subs, nil
	}
	out := subs[:0:0]
	for _, s := range subs {
		if s.GetTopicid() == TrustTopic {
			out = append(out, s)
		}
	}
	return out, nil
}

func (n *Node) startPubsub() error {
	n.score = newScorer(n.cfg.Now)
	scoring, thresholds := scoreParams(n.score.appScore)
	opts := append([]pubsub.Option{
		pubsub.WithGossipSubProtocols(
			[]protocol.ID{pubsub.GossipSubID_v13, pubsub.GossipSubID_v12, pubsub.GossipSubID_v11, pubsub.GossipSubID_v10},
			pubsub.GossipSubDefaultFeatures),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(MessageID),
		pubsub.WithPeerFilter(n.gossipsWith),
		pubsub.WithSubscriptionFilter(siteSubs{n}),
		pubsub.WithAppSpecificRpcInspector(func(id peer.ID, _ *pubsub.RPC) error {
			if !n.isAdmitted(id) {
				return ErrNotAdmitted
			}
			return nil
		}),
		pubsub.WithPeerExchange(false),
		pubsub.WithMaxMessageSize(maxTrustMsg + 4096),
		pubsub.WithPeerScore(scoring, thresholds), // see score.go
	}, n.cfg.PubSubOptions...)
	ps, err := pubsub.NewGossipSub(n.ctx, gatedHost{n.host, n}, opts...)
	if err != nil {
		return fmt.Errorf("start pubsub: %w", err)
	}
	n.ps = ps
	if err := ps.RegisterTopicValidator(TrustTopic, n.scored(n.validateTrust)); err != nil {
		return err
	}
	if n.topic, err = ps.Join(TrustTopic); err != nil {
		return err
	}
	if n.sub, err = n.topic.Subscribe(); err != nil {
		return err
	}
	events, err := n.topic.EventHandler()
	if err != nil {
		return err
	}
	n.goOwned(n.readTrust)
	n.goOwned(func() { n.onTopicJoins(events) })
	return nil
}

// onTopicJoins hands our CRLs straight to every peer that joins the trust
// topic: a CRL published in the moment between admission and the peer's
// subscription reaching us would otherwise miss it until the next one.
func (n *Node) onTopicJoins(h *pubsub.TopicEventHandler) {
	defer h.Cancel()
	for {
		ev, err := h.NextPeerEvent(n.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin && len(n.cfg.Trust.CRLs()) > 0 {
			n.goOwned(func() { n.present(ev.Peer, true) })
		}
	}
}

// PubSub is the node's gossipsub instance, for the layers above.
func (n *Node) PubSub() *pubsub.PubSub { return n.ps }

// IsAdmitted reports whether a peer is admitted now (for validators above).
func (n *Node) IsAdmitted(id peer.ID) bool { return n.isAdmitted(id) }

func (n *Node) readTrust() {
	for {
		m, err := n.sub.Next(n.ctx)
		if err != nil {
			return
		}
		if m.ReceivedFrom != n.ID() {
			n.trustRecv.Add(1)
		}
	}
}

// validateTrust judges a trust-topic message. Its effect (a newer CRL, a
// new directory entry) is applied here, once, as it is accepted.
func (n *Node) validateTrust(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == n.ID() {
		return pubsub.ValidationAccept
	}
	if !n.isAdmitted(from) {
		return pubsub.ValidationReject
	}
	var msg trustMsg
	if err := decode(m.Data, &msg, maxTrustMsg); err != nil {
		return pubsub.ValidationReject
	}
	switch msg.Kind {
	case kindCRL:
		changed, err := n.installCRL(msg.CRL)
		switch {
		case errors.Is(err, identity.ErrUnknownCA):
			n.adm.holdCRL(from, msg.CRL) // perhaps a site CA we have not met yet
			return pubsub.ValidationIgnore
		case err != nil:
			return pubsub.ValidationReject
		case !changed:
			return pubsub.ValidationIgnore // not newer: not a fault
		}
		return pubsub.ValidationAccept
	case kindEntry:
		if n.dir.holds(dirEntry{Chain: msg.Chain, Prekey: msg.Prekey}) {
			return pubsub.ValidationIgnore
		}
		chain, err := decodeChain(msg.Chain)
		if err != nil {
			return pubsub.ValidationReject
		}
		staff, err := n.judgeEntry(chain)
		switch {
		case errors.Is(err, identity.ErrExpired), errors.Is(err, identity.ErrRevoked), errors.Is(err, identity.ErrNotYetValid):
			return pubsub.ValidationIgnore // stale, not malicious
		case err != nil:
			return pubsub.ValidationReject
		}
		if staff.PeerID == n.ID() || !n.addEntry(chain, staff, msg.Prekey, false) {
			return pubsub.ValidationIgnore
		}
		return pubsub.ValidationAccept
	}
	return pubsub.ValidationReject
}

// SubmitCRL installs a CRL given by the local API (PEM or DER) and spreads
// it. It reports whether the CRL was newer than the one we held.
func (n *Node) SubmitCRL(_ context.Context, data []byte) (bool, error) {
	l, err := identity.ParseCRL(data)
	if err != nil {
		return false, err
	}
	changed, err := n.installCRL(l.Raw)
	if errors.Is(err, identity.ErrUnknownCA) {
		n.adm.holdCRL("", l.Raw)
		err = fmt.Errorf("%w (held: applied once this device meets the CA)", err)
	}
	return changed, err
}

// learnCRLs installs the newer of the CRLs an admitted peer presented.
// Those of a CA not met yet are held (pendingcrl.go) when from is our own
// staff; a federated peer may hand us only its own trust's CRLs.
func (n *Node) learnCRLs(from peer.ID, raws [][]byte) {
	fed := n.adm.federation(from)
	for _, raw := range raws {
		if fed != nil && !n.adm.crlOfTrust(raw, fed.Other) {
			n.log.Debug("CRL of another trust refused from a federated peer", "remote", from.String())
			continue
		}
		_, err := n.installCRL(raw)
		switch {
		case errors.Is(err, identity.ErrUnknownCA):
			if fed == nil {
				n.adm.holdCRL(from, raw)
			}
		case err != nil:
			n.log.Debug("CRL refused", "err", err)
		}
	}
}

// installCRL verifies and installs a DER CRL; when it is newer it is
// persisted, published, and every peer is judged again, and when it
// changes what is revoked the OnRevocation hooks run.
func (n *Node) installCRL(der []byte) (bool, error) {
	change, err := n.adm.installCRL(der)
	if err != nil || change == nil {
		return false, err
	}
	n.spreadCRL(change)
	return true, nil
}

// spreadCRL follows a newer CRL's install: every peer is judged again, the
// OnRevocation hooks run, and it is published and presented.
func (n *Node) spreadCRL(change *crlChange) {
	select {
	case n.recheck <- struct{}{}:
	default:
	}
	if change.revokes {
		n.adm.ringRevocation()
	}
	// Spread it two ways: on the trust topic (reaches the whole mesh) and
	// straight to every admitted neighbour (gossip drops what is published
	// in the moment a new peer's streams come up; a CRL must not be lost).
	n.goOwned(func() { n.publish(trustMsg{Kind: kindCRL, CRL: change.raw}) })
	for _, id := range n.adm.admittedPeers("") {
		n.goOwned(func() { n.present(id, true) })
	}
}

// OnRevocation registers f to run after every newly applied CRL that
// changes what is revoked (not merely a newer CRL revoking the same
// certificates), wherever the CRL came from: the trust topic, a peer's
// presentation (at admission, or a notice) or SubmitCRL. f runs in a goroutine the node
// owns, outside every node lock, never concurrently with itself; CRLs
// applied while f runs or waits to run call it once more, not once each.
// A CRL applied before f is registered, or loaded from the store at start,
// does not call it. The directory already leaves revoked colleagues out
// when f runs; KnownStaff reports them revoked.
func (n *Node) OnRevocation(f func()) {
	bell := make(chan struct{}, 1)
	n.adm.addOnRevocation(bell)
	n.goOwned(func() {
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-bell:
				f()
			}
		}
	})
}

func (n *Node) publish(m trustMsg) {
	data, err := detcbor.Marshal(m)
	if err != nil {
		return
	}
	if err := n.topic.Publish(n.ctx, data); err != nil && n.ctx.Err() == nil {
		n.log.Debug("publish on trust topic", "err", err)
	}
}

// revocationLoop judges admitted peers again when a newer CRL arrives, and
// every minute for expiry.
func (n *Node) revocationLoop() {
	t := time.NewTicker(validityCheck)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.recheck:
		case <-t.C:
			if _, err := n.ownPrekey(n.cfg.Now()); err != nil { // rotate when due
				n.log.Error("rotate prekey", "err", err)
			}
		}
		n.judgeAll()
	}
}

func (n *Node) judgeAll() {
	now := n.cfg.Now()
	_, err := n.adm.trust.Admit(n.cfg.Chain, n.ID(), now)
	if err == nil {
		_, err = n.adm.trust.AdmitCredential(n.cred, n.ID(), now)
	}
	if errors.Is(err, identity.ErrRevoked) {
		n.goOwned(n.stopSelf)
		return
	}
	// States of peers whose connection went without a disconnect event
	// reaching us (a race at close) are forgotten here, once a minute.
	for _, id := range n.adm.idle() {
		if n.host.Network().Connectedness(id) != network.Connected {
			n.adm.forget(id)
		}
	}
	for _, d := range n.adm.rejudge(now) {
		n.goOwned(func() {
			if d.block {
				n.present(d.id, true) // hand it the CRL so it wipes itself
			}
			n.host.Network().ClosePeer(d.id)
		})
	}
}

// judgeEntry checks a directory entry: a chain as the device would present
// it, judged at the peer ID its certificate names.
func (n *Node) judgeEntry(chain []*x509.Certificate) (*identity.Staff, error) {
	return n.adm.judgeEntry(chain)
}

// loadPersisted restores the trust's state and the directory from the
// store: the issuing CAs learnt (and this device's own), which must be
// known before their CRLs are; the directory, whose chains teach CAs
// learnt before they were persisted; then the CRLs.
func (n *Node) loadPersisted(ctx context.Context) error {
	if err := n.adm.loadFederations(ctx); err != nil {
		return err
	}
	if err := n.adm.loadCAs(ctx); err != nil {
		return err
	}
	n.adm.learnIssuers(n.cfg.Chain, n.cfg.Now())
	if err := n.dir.load(ctx); err != nil {
		return err
	}
	if err := n.adm.loadCRLs(ctx); err != nil {
		return err
	}
	// Held CRLs last: those whose CA is known by now are installed when
	// the node retries them (retryPendingCRLs, once it runs).
	return n.adm.loadPending(ctx)
}
