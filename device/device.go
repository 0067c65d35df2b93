// Package device is the composition root: the one place that builds a
// running medmesh device — the encrypted store, the libp2p node, the mesh
// and the conversations layer — and wires the rules that cut across them:
//
//   - every newly applied CRL (and, at start, those stored) re-applies the
//     revocation predicate of every conversation (a revoked sender's ops
//     stand only where an unrevoked member's op depends on them), admins
//     remove revoked members, and the node stops offering revoked staff as
//     recipients;
//   - an expiry loop (every ExpiryEvery, default one hour, and once at
//     start) applies retention on every conversation, drops skipped message
//     keys and superseded epochs past e2e.MessageKeyWindow, and drops this
//     device's expired prekey private halves, persisting what it dropped;
//   - a device that learns its own certificate is revoked destroys its
//     keys: the prekey ring (deleted from the store), the store's key
//     file, device.key and api.token (each overwritten, fsynced,
//     unlinked); it leaves a "revoked" marker, so a restart fails with
//     ErrRevoked rather than an obscure missing-file error;
//   - the audit trail (Trail, package audit): a hash-chained log signed by
//     the device key, in the device's encrypted store, fed by the
//     conversations layer (sent, received, read, acknowledged, edited,
//     deleted, members, photo viewed), the node (CRL applied), the wipe
//     and, through Audit().Record, the web app (unlocked, locked, failed
//     unlock). Recording never blocks or fails what it records.
//   - a device whose certificate has the archive role files every
//     conversation it is in into its own store (package archive).
//
// `medmesh run`, `medmesh demo`, the web tests and the full simulation
// engine all build devices with Open; what differs between them is an
// Option (a prebuilt mocknet host, a prebuilt store and keys, a clock,
// timers, observation hooks). Package device must not import web or cmd.
package device

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/archive"
	"github.com/medmesh/medmesh/audit"
	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/crdt"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/keywrap"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/store"
	"github.com/medmesh/medmesh/witness"
)

// StoreDir is the store's directory inside a device directory.
const StoreDir = "store"

// DefaultExpiryEvery is how often the expiry loop runs.
const DefaultExpiryEvery = time.Hour

// Errors.
var (
	ErrNoCertificate = errors.New("no device certificate")
	ErrRevoked       = errors.New("this device's certificate was revoked and its keys destroyed: enrol it again (medmesh init, ca sign)")
)

// Device is one running device.
type Device struct {
	cfg   config
	dir   string // the device directory; "" when nothing came from one
	ownID bool   // the keys were read from dir/device.key
	key   *identity.DeviceKey
	st    *store.Store // nil when the store was passed in (WithStore)
	n     *node.Node
	m     *mesh.Service
	c     *conversations.Service
	trail *Trail
	filer *archive.Filer // an archive device's filing (nil for others)
	wit   *witness.Service
	log   *slog.Logger
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	close sync.Once
}

type config struct {
	listen        []string
	bootstrap     []peer.AddrInfo
	mdns          bool
	anchor        bool
	private       bool
	quota         int64
	ttl           time.Duration
	log           *slog.Logger
	kdf           *keywrap.Params
	host          host.Host
	psOpts        []pubsub.Option
	admit         time.Duration
	key           *identity.DeviceKey
	chain         []*x509.Certificate
	trust         *identity.Trust
	store         ds.Batching
	now           func() time.Time
	observe       func(id crdt.OpID, from peer.ID, dup bool)
	syncEvery     time.Duration
	kickDelay     time.Duration
	session       time.Duration // WithSessionTimeout
	receiptWindow time.Duration
	expiryEvery   time.Duration
	onRevoked     func()
	escalator     conversations.Escalator // WithEscalator (escalate.go)
	noCarry       bool                    // see WithCarry
	sites         []peer.AddrInfo         // WithSitePeers (sites.go)
	siteBudget    int64
	siteTiming    node.SiteTiming // WithSiteTiming
}

// Option configures a device.
type Option func(*config) error

// WithListen sets the multiaddrs to listen on (default: all interfaces,
// random TCP and QUIC ports).
func WithListen(addrs ...string) Option {
	return func(c *config) error { c.listen = addrs; return nil }
}

// WithBootstrap sets peers to keep connected (anchors, colleagues).
func WithBootstrap(peers ...peer.AddrInfo) Option {
	return func(c *config) error { c.bootstrap = peers; return nil }
}

// WithMDNS turns LAN discovery on.
func WithMDNS(on bool) Option { return func(c *config) error { c.mdns = on; return nil } }

// WithAnchor makes the device an anchor: it keeps every valid envelope
// colleagues offer (ciphertext), up to quota bytes and for ttl (zero:
// the mesh's defaults).
func WithAnchor(quota int64, ttl time.Duration) Option {
	return func(c *config) error { c.anchor, c.quota, c.ttl = true, quota, ttl; return nil }
}

// WithPrivate says the device is behind NAT: it holds a relay slot on the
// anchors it reaches at once, without waiting for AutoNAT's verdict.
func WithPrivate() Option { return func(c *config) error { c.private = true; return nil } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *config) error { c.log = l; return nil } }

// WithKDF sets the passphrase KDF parameters of a store created at Open.
func WithKDF(p keywrap.Params) Option { return func(c *config) error { c.kdf = &p; return nil } }

// WithHost runs the node on a prebuilt libp2p host with this device's
// identity key (simulations pass a mocknet host); the device owns it.
func WithHost(h host.Host) Option { return func(c *config) error { c.host = h; return nil } }

// WithPubSubOptions appends gossipsub options (simulations: a heartbeat
// scaled with compressed time, a tracer counting bytes).
func WithPubSubOptions(o ...pubsub.Option) Option {
	return func(c *config) error { c.psOpts = append(c.psOpts, o...); return nil }
}

// WithAdmitTimeout bounds how long a connected peer has to present a
// valid chain (default: the node's).
func WithAdmitTimeout(d time.Duration) Option {
	return func(c *config) error { c.admit = d; return nil }
}

// WithIdentity gives the device its keys, certificate chain and trust
// instead of reading them from the directory (simulations: no argon2id).
func WithIdentity(key *identity.DeviceKey, chain []*x509.Certificate, trust *identity.Trust) Option {
	return func(c *config) error {
		if key == nil || len(chain) == 0 || trust == nil {
			return errors.New("WithIdentity needs a key, a chain and a trust")
		}
		c.key, c.chain, c.trust = key, chain, trust
		return nil
	}
}

// WithStore runs the device on a datastore that is already open (and
// encrypted, if it holds real data); the caller closes it after Close.
// Simulations give each device a namespace of one shared pebble.
func WithStore(d ds.Batching) Option { return func(c *config) error { c.store = d; return nil } }

// WithClock sets the device's clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) error { c.now = now; return nil } }

// WithObserve tells f of every envelope the device takes in from the mesh
// or carries (dup: held already), outside any lock; f must not block.
func WithObserve(f func(id crdt.OpID, from peer.ID, dup bool)) Option {
	return func(c *config) error { c.observe = f; return nil }
}

// WithTimers sets the anti-entropy period and the delay of the sync that
// follows a publish (zero: the mesh's defaults, 30 s and 300 ms).
func WithTimers(syncEvery, kickDelay time.Duration) Option {
	return func(c *config) error { c.syncEvery, c.kickDelay = syncEvery, kickDelay; return nil }
}

// WithSessionTimeout bounds one sync session (zero: the mesh's default,
// 2 min). Simulations shorten it with their clock.
func WithSessionTimeout(d time.Duration) Option {
	return func(c *config) error { c.session = d; return nil }
}

// WithReceiptWindow sets how long the device coalesces its delivered and
// read receipts (zero: conversations.ReceiptWindow, 500 ms; negative:
// none). Simulations scale it with their clock.
func WithReceiptWindow(d time.Duration) Option {
	return func(c *config) error { c.receiptWindow = d; return nil }
}

// WithExpiryEvery sets the period of the expiry loop (default one hour).
func WithExpiryEvery(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return errors.New("expiry period must be positive")
		}
		c.expiryEvery = d
		return nil
	}
}

// WithOnRevoked runs f after the device, having learnt that its own
// certificate is revoked, destroyed its keys (before the node stops).
func WithOnRevoked(f func()) Option { return func(c *config) error { c.onRevoked = f; return nil } }

// Open opens the device directory dir with its passphrase — keys,
// certificate chain, trust roots, store — and starts everything a device
// runs. With WithIdentity and WithStore, dir and passphrase are unused.
func Open(ctx context.Context, dir string, passphrase []byte, opts ...Option) (_ *Device, err error) {
	cfg := config{expiryEvery: DefaultExpiryEvery, now: time.Now}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, identity.RevokedFile)); err == nil {
			// A wipe cut short (power lost) is finished first.
			return nil, errors.Join(fmt.Errorf("open device %s: %w", dir, ErrRevoked), destroyFiles(dir))
		}
	}
	ownID := cfg.key == nil
	if ownID {
		if cfg.key, cfg.chain, cfg.trust, err = loadIdentity(dir, passphrase); err != nil {
			return nil, err
		}
	}
	d := &Device{cfg: cfg, dir: dir, ownID: ownID, key: cfg.key, log: cfg.log}
	d.ctx, d.stop = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	backing := cfg.store
	if backing == nil {
		so := []store.Option{store.WithLogger(cfg.log)}
		if cfg.kdf != nil {
			so = append(so, store.WithKDF(*cfg.kdf))
		}
		if d.st, err = store.Open(filepath.Join(dir, StoreDir), passphrase, so...); err != nil {
			return nil, err
		}
		backing = d.st
	}
	if alog, err := audit.Open(ctx, backing, cfg.key.Identity, audit.WithClock(cfg.now)); err != nil {
		// Messages must still flow: run without recording, and say so
		// in status; never start a fresh log over the old one.
		d.trail = brokenTrail(err, d.log.Error)
	} else {
		d.trail = startTrail(alog, d.log.Warn)
	}
	d.n, err = node.New(ctx, node.Config{
		Key: cfg.key, Chain: cfg.chain, Trust: cfg.trust, Store: backing,
		Listen: cfg.listen, Bootstrap: cfg.bootstrap, MDNS: cfg.mdns, AdmitTimeout: cfg.admit,
		Host: cfg.host, PubSubOptions: cfg.psOpts, Logger: cfg.log, Now: cfg.now,
		OnRevoked: d.wipe, Relay: cfg.anchor, ForcePrivate: cfg.private,
		SitePeers: sitePeers(cfg), SiteBudget: cfg.siteBudget, SiteTiming: cfg.siteTiming,
	})
	if err != nil {
		return nil, err
	}
	revoked := revokedIn(d.n) // federated.go: our staff's CRLs and federated trusts'
	d.c, err = conversations.Open(conversations.Config{
		Device:    &chat.Device{Key: cfg.key.Identity, ID: cfg.key.PeerID(), Prekeys: d.n.Prekeys(), CertKEM: cfg.key.KEM},
		Directory: d.n, Store: backing, Logger: cfg.log, Now: cfg.now, Revoked: revoked, Observe: cfg.observe,
		ReceiptWindow: cfg.receiptWindow, Audit: func(evs []audit.Event) { d.trail.Record(evs...) },
		Foreign: foreignIn(d.n),
		Invites: invitesFrom(d.n, cfg.trust),
	})
	if err != nil {
		return nil, err
	}
	if cfg.anchor && !d.n.Self().HasRole(mesh.RoleAnchor) {
		cfg.log.Warn("running as an anchor on a certificate without the anchor role: colleagues will not count its acknowledgements as held (have the CA sign with --roles anchor)")
	}
	d.m, err = mesh.New(federatedMesh(mesh.Config{Node: d.n, Store: backing, Anchor: cfg.anchor, AnchorQuota: cfg.quota, AnchorTTL: cfg.ttl, Carry: !cfg.noCarry,
		Logger: cfg.log, Now: cfg.now, SyncEvery: cfg.syncEvery, KickDelay: cfg.kickDelay, SessionTimeout: cfg.session, Observe: cfg.observe, Links: siteLinks(cfg, d.n)}, d.n, d.c), d.c)
	if err != nil {
		return nil, err
	}
	d.n.OnFederated(d.m.SyncFederated)
	d.c.Attach(d.m)
	esc := cfg.escalator
	if esc == nil {
		esc = rotaEscalator{d}
	}
	d.c.StartEscalations(esc)
	d.n.OnRevocation(func() {
		d.trail.Record(audit.Event{Kind: audit.CRLApplied, IDs: audit.IDs{Serial: strconv.FormatInt(d.cfg.trust.NewestCRLNumber(), 10)}})
		d.c.Revoke()
	})
	d.c.Revoke() // CRLs stored before this start fire no hook
	d.n.OnFederationRecord(func() { d.c.Prune(unfederated(d.n)) })
	if d.n.Self().HasRole(archive.Role) {
		d.filer = archive.Start(d.c, backing, archive.Options{Now: cfg.now, Logger: cfg.log})
	}
	d.startWitness(backing)
	d.wg.Add(1)
	go d.expiryLoop()
	return d, nil
}

// loadIdentity reads the device's keys (sealed under the passphrase), its
// certificate chain and the trust roots from dir.
func loadIdentity(dir string, pass []byte) (*identity.DeviceKey, []*x509.Certificate, *identity.Trust, error) {
	key, err := identity.LoadDeviceKey(dir, pass)
	if err != nil {
		return nil, nil, nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, identity.DeviceCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("%w: no %s in %s: have the CA sign %s first (medmesh ca sign)",
			ErrNoCertificate, identity.DeviceCertFile, dir, identity.DeviceCSRFile)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read device certificate: %w", err)
	}
	chain, err := identity.ParseCertificates(raw)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("device certificate: %w", err)
	}
	trust, err := identity.LoadTrust(filepath.Join(dir, identity.TrustFile))
	if err != nil {
		return nil, nil, nil, err
	}
	return key, chain, trust, nil
}

// wipe destroys this device's keys when its own certificate is revoked:
// it writes the revoked marker first (a restart finishes a wipe cut
// short), deletes the prekey ring, wipes the store (its key file
// shredded: what remains of the data can never be read), and shreds
// device.key and api.token (overwritten, fsynced, unlinked). It runs on
// the node's goroutine while the device still works: calls into the
// wiped store fail with store.ErrWiped. Failures are logged; it goes on
// with the rest.
func (d *Device) wipe() {
	// The last entry: after the store's key is gone nothing can be read.
	d.trail.end(audit.Event{Kind: audit.Wiped, IDs: audit.IDs{Peer: d.ID().String()}})
	if d.dir != "" {
		note := fmt.Appendf(nil, "device certificate revoked; keys destroyed %s\n", d.cfg.now().UTC().Format(time.RFC3339))
		if err := atomicfile.WriteFile(filepath.Join(d.dir, identity.RevokedFile), note, 0o600); err != nil {
			d.log.Error("write revoked marker", "err", err)
		}
	}
	if err := d.n.DestroyPrekeys(); err != nil && !errors.Is(err, store.ErrWiped) {
		d.log.Error("destroy prekeys", "err", err)
	}
	if d.st != nil {
		if err := d.st.Wipe(); err != nil {
			d.log.Error("wipe store", "err", err)
		}
	}
	if d.dir != "" {
		var err error
		if d.ownID {
			err = store.Shred(filepath.Join(d.dir, identity.DeviceKeyFile))
		}
		if err = errors.Join(err, store.Shred(filepath.Join(d.dir, identity.APITokenFile))); err != nil {
			d.log.Error("destroy keys", "err", err)
		}
	}
	if d.cfg.onRevoked != nil {
		d.cfg.onRevoked()
	}
}

// destroyFiles shreds what a wipe destroys in device directory dir and
// removes the store's data: run when a revoked device is opened again.
func destroyFiles(dir string) error {
	var errs []error
	for _, f := range []string{identity.DeviceKeyFile, identity.APITokenFile, filepath.Join(StoreDir, store.KeyFile)} {
		errs = append(errs, store.Shred(filepath.Join(dir, f)))
	}
	errs = append(errs, os.RemoveAll(filepath.Join(dir, StoreDir, store.DataDir)))
	return errors.Join(errs...)
}

// expiryLoop runs Expire at start and every cfg.expiryEvery until Close.
func (d *Device) expiryLoop() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.expiryEvery)
	defer t.Stop()
	for {
		if err := d.Expire(); err != nil && d.ctx.Err() == nil {
			d.log.Warn("expiry", "err", err)
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Expire runs one pass of the expiry loop now: retention and key expiry on
// every conversation, and this device's expired prekeys.
func (d *Device) Expire() error {
	now := d.cfg.now()
	n, err := d.c.Expire(now)
	if n > 0 {
		d.log.Info("retention deleted messages", "messages", n)
	}
	_, perr := d.n.ExpirePrekeys(now)
	return errors.Join(err, perr)
}

// ID is the device's peer ID.
func (d *Device) ID() peer.ID { return d.key.PeerID() }

// Node is the device's libp2p node (admission, directory, trust).
func (d *Device) Node() *node.Node { return d.n }

// Mesh is the device's envelope mover.
func (d *Device) Mesh() *mesh.Service { return d.m }

// Filer is an archive device's filing (package archive); nil unless the
// device's certificate has the archive role.
func (d *Device) Filer() *archive.Filer { return d.filer }

// Conversations is the device's conversation service.
func (d *Device) Conversations() *conversations.Service { return d.c }

// Audit is the device's audit trail.
func (d *Device) Audit() *Trail { return d.trail }

// Done is closed when the node stops by itself (its certificate revoked).
func (d *Device) Done() <-chan struct{} { return d.n.Done() }

// Close stops the device: expiry, mesh, conversations, node, then the
// store it opened. Safe to call twice.
func (d *Device) Close() error {
	var err error
	d.close.Do(func() {
		d.stop()
		d.wg.Wait()
		if d.m != nil {
			d.m.Close()
		}
		if d.filer != nil {
			d.filer.Close()
		}
		if d.wit != nil {
			d.wit.Close()
		}
		if d.c != nil {
			d.c.Close()
		}
		d.trail.close() // after everything that records
		if d.n != nil {
			err = d.n.Close()
		}
		if d.st != nil {
			err = errors.Join(err, d.st.Close())
		}
	})
	return err
}
