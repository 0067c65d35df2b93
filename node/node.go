package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/discovery"
	"github.com/medmesh/medmesh/e2e"
	"github.com/medmesh/medmesh/identity"
)

// Config is what a node is built from. Key, Chain, Trust and Store are
// required; the rest have documented defaults.
type Config struct {
	Key *identity.DeviceKey
	// Chain is this device's certificates as device.crt holds them: the
	// staff certificate chain, device first, then the admission
	// credential (identity.CA.Bundle).
	Chain []*x509.Certificate
	Trust *identity.Trust
	Store ds.Batching // persists CRLs and directory entries (encrypted store)

	// Listen addresses; default all interfaces, random TCP and QUIC ports.
	Listen []string
	// Bootstrap peers kept connected (anchors, colleagues).
	Bootstrap []peer.AddrInfo
	// MDNS turns LAN discovery (service _medmesh._udp) on.
	MDNS bool
	// AdmitTimeout bounds how long a connected peer has to present a valid
	// chain; default 5 s.
	AdmitTimeout time.Duration
	// OnRevoked is called once when this device learns its own certificate
	// is revoked, before the node stops; it should wipe the store.
	OnRevoked func()
	Logger    *slog.Logger
	Now       func() time.Time
	// Host, if set, is a libp2p host already built with this device's
	// identity key — simulations pass a libp2p mocknet host — and Listen
	// is ignored. The node owns it and closes it. Such a host has no
	// connection gater: blocked peers are refused at admission instead.
	Host host.Host
	// PubSubOptions are appended to the gossipsub options (simulations:
	// heartbeat scaled with compressed time, a tracer counting bytes).
	PubSubOptions []pubsub.Option
	// Relay runs a circuit relay v2 service for admitted peers (anchors;
	// relay.go). ForcePrivate skips AutoNAT's verdict: the
	// device knows it is behind NAT and reserves a relay slot on an
	// anchor at once. Neither applies to a Host passed in.
	Relay        bool
	ForcePrivate bool
	// NoListen: dial out only, no listening socket — a device no one can
	// reach directly, only through an anchor's relay (tests of NAT).
	NoListen bool
	// SitePeers are the other sites' anchors this anchor keeps connected
	// (sites.go); SiteBudget bounds the bytes per second the mesh sends
	// each of them in sync (default DefaultSiteBudget).
	SitePeers  []peer.AddrInfo
	SiteBudget int64
	// SiteTiming is the site links' timing; zero fields take the
	// product's defaults (simulations shorten them by their clock's scale).
	SiteTiming SiteTiming
}

// Node is one running device. It wires its parts — adm (admission and
// trust) and dir (the staff directory), each with its own mutex and
// invariants — to the host, pubsub and discovery, runs the protocols and
// owns every goroutine.
type Node struct {
	cfg   Config
	host  host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	disc  *discovery.Dialer
	mdns  interface{ Close() error }
	log   *slog.Logger
	self  *identity.Staff
	cred  []*x509.Certificate // admission credential chain, credential first

	adm   *admission // peers admitted, blocked; the trust, its CAs and CRLs
	dir   *directory // colleagues' entries and prekeys
	fed   fedBook    // federated devices met (federated_peers.go)
	score *scorer    // rejected messages per peer (score.go)
	rt    *rotaState // the site's on-call rota (rota.go)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lifeMu sync.Mutex // guards closed; see enter
	closed bool

	recheck   chan struct{} // a newer CRL arrived: judge peers again
	done      chan struct{} // closed when the node stops itself (revoked)
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error

	trustRecv atomic.Int64 // trust-topic messages delivered (for tests)

	relay     *relayv2.Relay                 // an anchor's relay service (Config.Relay)
	circuit   atomic.Pointer[[]ma.Multiaddr] // relayed addresses of the reservations held (relay.go)
	relayMu   sync.Mutex
	announced map[peer.ID]time.Time // relay.go: when each reserving peer was last announced
	reserved  map[peer.ID]time.Time // relay.go: when each peer last asked for a reservation here

	sites *sites    // sites.go: links to other sites' anchors (nil: none)
	words siteWords // sitelink.go: anchors that keep a site link to us

	pkMu         sync.Mutex // guards the fields below and the ring's stored copy
	prekeys      *e2e.PrekeyRing
	prekeyID     uint32 // ID of the current prekey as stored
	curPrekey    *e2e.Prekey
	storedPrekey int  // private halves in the ring as stored
	prekeysGone  bool // DestroyPrekeys ran: the ring is never stored again
}

// Timing.
const (
	defaultAdmitTimeout = 5 * time.Second
	intruderBlock       = time.Minute
	revokedBlock        = time.Hour
	validityCheck       = time.Minute
	noticeTimeout       = time.Second
	noticeTries         = 4                      // a notice the peer reset is tried again…
	noticeRetry         = 100 * time.Millisecond // …after 100, 200, 400 ms
)

// New builds and starts a node.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Key == nil || len(cfg.Chain) == 0 || cfg.Trust == nil || cfg.Store == nil {
		return nil, errors.New("node: key, certificate chain, trust and store are required")
	}
	if cfg.AdmitTimeout == 0 {
		cfg.AdmitTimeout = defaultAdmitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}
	}
	chain, cred := identity.SplitBundle(cfg.Chain)
	if cred == nil {
		return nil, ErrNoCredential
	}
	cfg.Chain = chain
	self, err := cfg.Trust.Admit(chain, cfg.Key.PeerID(), cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("own certificate is not admissible: %w", err)
	}
	if _, err := cfg.Trust.AdmitCredential(cred, cfg.Key.PeerID(), cfg.Now()); err != nil {
		return nil, fmt.Errorf("own admission credential is not admissible: %w", err)
	}
	n := &Node{
		cfg: cfg, self: self, cred: cred, log: cfg.Logger.With("peer", cfg.Key.PeerID().String()),
		recheck: make(chan struct{}, 1), done: make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if len(cfg.SitePeers) > 0 {
		n.sites = newSites(cfg.Key.PeerID(), cfg.SitePeers, cfg.SiteBudget, cfg.SiteTiming, cfg.Now())
	}
	n.adm = newAdmission(n.ctx, cfg, n.log)
	n.dir = newDirectory(n.ctx, cfg.Store, n.log, cfg.Now, n.adm)
	if err := n.loadPersisted(ctx); err != nil {
		n.cancel()
		return nil, err
	}
	n.adm.onLearnt = n.retryPendingCRLs
	if err := n.loadRota(ctx); err != nil {
		n.cancel()
		return nil, err
	}
	if err := n.loadPrekeys(ctx); err != nil {
		n.cancel()
		return nil, err
	}
	if err := n.start(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	h := n.cfg.Host
	if h == nil {
		var err error
		if h, err = n.newHost(); err != nil {
			return err
		}
	} else if h.ID() != n.cfg.Key.PeerID() {
		return fmt.Errorf("host %s does not carry this device's identity %s", h.ID(), n.cfg.Key.PeerID())
	}
	n.host = h
	return n.startProtocols(h)
}

// newHost builds the device's libp2p host: TCP and QUIC, Noise, the gater.
func (n *Node) newHost() (host.Host, error) {
	priv, err := crypto.UnmarshalEd25519PrivateKey(n.cfg.Key.Identity)
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	rm, err := newResourceManager()
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(64, 256, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, err
	}
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater((*gater)(n.adm)),
		libp2p.Ping(false),
		libp2p.DisableMetrics(),
		// NAT traversal (relay.go): the relay client, hole punching, and
		// reservations on admitted anchors when private.
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
		libp2p.AddrsFactory(n.circuitAddrs),
	}
	if n.cfg.NoListen {
		opts = append(opts, libp2p.NoListenAddrs)
	} else {
		opts = append(opts, libp2p.ListenAddrStrings(n.cfg.Listen...))
	}
	if n.cfg.ForcePrivate {
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("start libp2p host: %w", err)
	}
	if n.cfg.Relay {
		if n.relay, err = relayv2.New(h, relayOptions(n)...); err != nil {
			h.Close()
			return nil, fmt.Errorf("start relay service: %w", err)
		}
	}
	return h, nil
}

func (n *Node) startProtocols(h host.Host) error {
	h.SetStreamHandler(ProtoAdmit, n.owned(n.handleAdmit))
	h.SetStreamHandler(ProtoDirectory, n.owned(n.gate(n.handleDirectory)))
	h.SetStreamHandler(ProtoFederation, n.owned(n.gate(n.handleFederation)))
	h.SetStreamHandler(ProtoFedPrekey, n.owned(n.handleFedPrekey))
	n.OnFederated(n.metFederated)
	h.SetStreamHandler(ProtoFedBook, n.owned(n.gate(n.handleFedBook)))
	h.SetStreamHandler(ProtoFedIntro, n.owned(n.handleFedIntro))
	n.OnAdmitted(func(id peer.ID) { n.sendFedBook(id, n.fedEntries()) })
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			n.siteConnected(c.RemotePeer())
			n.goOwned(func() { n.onConnected(c) })
		},
		DisconnectedF: func(_ network.Network, c network.Conn) {
			n.siteDisconnected(c.RemotePeer())
			n.onDisconnected(c.RemotePeer())
		},
	})
	if err := n.startPubsub(); err != nil {
		return err
	}
	if err := n.startRota(); err != nil {
		return err
	}
	n.disc = discovery.NewDialer(n.ctx, h, n.log, n.dialerOptions()...)
	for _, ai := range n.cfg.Bootstrap {
		n.disc.Keep(ai)
	}
	if n.cfg.MDNS {
		m, err := discovery.StartMDNS(h, n.disc, n.log)
		if err != nil {
			return err
		}
		n.mdns = m
	}
	n.goOwned(n.revocationLoop)
	n.startSites()
	if n.cfg.Host == nil {
		n.goOwned(n.keepRelays)
	}
	if w := n.ownEntry(); w != nil {
		n.goOwned(func() { n.publish(trustMsg{Kind: kindEntry, Chain: w.Chain, Prekey: w.Prekey}) })
	}
	n.log.Info("node started", "addrs", fmt.Sprint(h.Addrs()))
	return nil
}

// goOwned runs f in a goroutine the node owns and waits for on Close.
// enter counts one more goroutine of the node (release with n.wg.Done),
// unless Close has begun: Close sets closed under lifeMu before it waits,
// so nothing the node owns — its stream handlers included — runs on after
// Close returns (the store is closed next).
func (n *Node) enter() bool {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.closed || n.ctx.Err() != nil {
		return false
	}
	n.wg.Add(1)
	return true
}

// owned wraps a stream handler so Close waits for it.
func (n *Node) owned(h network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		if !n.enter() {
			s.Reset()
			return
		}
		defer n.wg.Done()
		h(s)
	}
}

func (n *Node) goOwned(f func()) {
	if !n.enter() {
		return
	}
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// ID is this device's peer ID.
func (n *Node) ID() peer.ID { return n.cfg.Key.PeerID() }

// Host is the libp2p host (for the layers above: mesh, sync).
func (n *Node) Host() host.Host { return n.host }

// Self is this device's own verified identity.
func (n *Node) Self() *identity.Staff { return n.self }

// Done is closed when the node has stopped itself (its certificate was
// revoked). The owner should then call Close.
func (n *Node) Done() <-chan struct{} { return n.done }

// TrustMessages counts trust-topic messages delivered to this node.
func (n *Node) TrustMessages() int64 { return n.trustRecv.Load() }

// Close stops every goroutine the node started and waits for them. It is
// safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.lifeMu.Lock()
		n.closed = true
		n.lifeMu.Unlock()
		n.cancel()
		var errs []error
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		if n.sub != nil {
			n.sub.Cancel()
		}
		if n.topic != nil {
			n.topic.Close()
		}
		if n.disc != nil {
			n.disc.Close()
		}
		if n.relay != nil {
			errs = append(errs, n.relay.Close())
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		n.wg.Wait()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// stopSelf is called when our own certificate is revoked.
func (n *Node) stopSelf() {
	n.stopOnce.Do(func() {
		n.log.Warn("own certificate revoked: wiping and stopping")
		if n.cfg.OnRevoked != nil {
			n.cfg.OnRevoked()
		}
		close(n.done)
	})
}
