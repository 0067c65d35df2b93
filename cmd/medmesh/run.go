package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/conversations"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/web"
)

// Files the running node writes in its device directory.
const (
	tokenFile = "api.token"
)

const shutdownGrace = 5 * time.Second

func newRunCmd(e *env) *cobra.Command {
	var dir, api string
	var listen, bootstrap []string
	var noMDNS, anchor, private bool
	carry := true
	var quota int64
	var ttl, lockAfter time.Duration
	var sitesFile string
	var siteBudget int64
	c := &cobra.Command{
		Use:   "run --dir DEV [--listen MA]... [--bootstrap MA]... [--api ADDR] [--no-mdns]",
		Short: "Run this device's node and its local API",
		Long: `Start the node: admit only verified staff of the trusts in DEV/ca.crt, find
colleagues on the LAN (mDNS) and through --bootstrap peers, and serve the local
API on --api with the bearer token written to DEV/api.token (mode 0600).
Stops cleanly on SIGINT/SIGTERM, or by itself if its certificate is revoked
(after wiping its store).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			boot, err := parseBootstrap(bootstrap)
			if err != nil {
				return err
			}
			sites, err := readSitePeers(sitesFile, anchor, siteBudget)
			if err != nil {
				return err
			}
			pass, err := e.passphrase(envDevicePass, "device", false)
			if err != nil {
				return err
			}
			return runNode(cmd.Context(), e, runOptions{dir: dir, api: api, listen: listen, bootstrap: boot, mdns: !noMDNS,
				anchor: anchor, quota: quota, ttl: ttl, lockAfter: lockAfter, private: private, noCarry: !carry,
				sitePeers: sites, siteBudget: siteBudget}, pass)
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "device directory (from medmesh init, with device.crt)")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (default: all interfaces, random TCP and QUIC ports)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "multiaddr of a peer to keep connected, with /p2p/PEER_ID")
	f.StringVar(&api, "api", "127.0.0.1:7070", "address of the local API")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn LAN multicast discovery off")
	f.BoolVar(&anchor, "anchor", false, "store and forward every conversation colleagues offer (ciphertext only); relay admitted colleagues behind NAT")
	f.BoolVar(&private, "private", false, "this device is behind NAT: hold a relay slot on the anchors it reaches without waiting for AutoNAT")
	f.Int64Var(&quota, "anchor-quota", 1<<30, "bytes an anchor keeps; oldest dropped first")
	f.DurationVar(&ttl, "anchor-ttl", 30*24*time.Hour, "how long an anchor keeps an envelope")
	f.BoolVar(&carry, "carry", true, "carry colleagues' sealed envelopes of conversations this device is not in (1 MiB, 7 days; unreadable to it)")
	f.DurationVar(&lockAfter, "lock-after", web.DefaultLockAfter, "lock the web app after this long without use")
	f.StringVar(&sitesFile, "site-peers", "", "with --anchor: file of the other sites' anchors (one multiaddr with /p2p/PEER_ID a line, # comments), kept connected")
	f.Int64Var(&siteBudget, "site-budget", node.DefaultSiteBudget, "with --site-peers: bytes per second of sync sent to each site peer (urgent first)")
	required(c, "dir")
	return c
}

type runOptions struct {
	dir        string
	api        string
	listen     []string
	bootstrap  []peer.AddrInfo
	mdns       bool
	anchor     bool
	quota      int64
	ttl        time.Duration
	lockAfter  time.Duration
	private    bool
	noCarry    bool            // --carry=false
	sitePeers  []peer.AddrInfo // --site-peers (sites.go)
	siteBudget int64
}

func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("--bootstrap %q: %w", s, err)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("--bootstrap needs /p2p/PEER_ID: %w", err)
	}
	return infos, nil
}

// running is one running device with its local API and app.
type running struct {
	dir string
	d   *device.Device
	n   *node.Node
	svc *conversations.Service
	app *web.App
	log *slog.Logger
}

func (e *env) logger() *slog.Logger {
	level := slog.LevelInfo
	if e.getenv("MEDMESH_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// startDevice opens a device directory, starts the device (device.Open)
// and serves its local API and app.
func startDevice(ctx context.Context, e *env, o runOptions, pass []byte, log *slog.Logger) (_ *running, err error) {
	opts := []device.Option{device.WithListen(o.listen...), device.WithBootstrap(o.bootstrap...), device.WithMDNS(o.mdns),
		device.WithLogger(log), device.WithOnRevoked(func() { os.Remove(filepath.Join(o.dir, tokenFile)) })}
	if o.anchor {
		opts = append(opts, device.WithAnchor(o.quota, o.ttl))
	}
	if o.private {
		opts = append(opts, device.WithPrivate())
	}
	if o.noCarry {
		opts = append(opts, device.WithCarry(false))
	}
	if len(o.sitePeers) > 0 {
		opts = append(opts, device.WithSitePeers(o.siteBudget, o.sitePeers...))
	}
	if e.kdf != nil {
		opts = append(opts, device.WithKDF(*e.kdf))
	}
	d, err := device.Open(ctx, o.dir, pass, opts...)
	if err != nil {
		return nil, err
	}
	r := &running{dir: o.dir, d: d, n: d.Node(), svc: d.Conversations(), log: log}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	unlock := func(p []byte) bool { _, err := identity.LoadDeviceKey(o.dir, p); return err == nil }
	if r.app, err = web.Serve(d, o.api, unlock, o.lockAfter, log); err != nil {
		return nil, err
	}
	if err = atomicfile.WriteFile(filepath.Join(o.dir, tokenFile), []byte(r.app.Token()+"\n"), 0o600); err != nil {
		return nil, err
	}
	return r, nil
}

// url is the app's address.
func (r *running) url() string { return r.app.URL() }

// close stops the device: API first, then the device.
func (r *running) close() {
	if r.app != nil {
		r.app.Close(shutdownGrace)
	}
	if err := r.d.Close(); err != nil {
		r.log.Warn("close device", "err", err)
	}
}

func runNode(ctx context.Context, e *env, o runOptions, pass []byte) error {
	log := e.logger()
	d, err := startDevice(ctx, e, o, pass, log)
	if err != nil {
		return err
	}
	defer d.close()
	st0 := d.n.Status()
	log.Info("medmesh running", "api", d.url(), "addrs", fmt.Sprint(st0.Addrs))
	fmt.Fprintf(e.stdout, "medmesh node %s\n  app/API: %s (token in %s)\n", d.n.ID(), d.url(), filepath.Join(o.dir, tokenFile))
	for _, a := range st0.Addrs {
		fmt.Fprintf(e.stdout, "  listen: %s\n", a)
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case <-d.n.Done():
		return errors.New("this device's certificate was revoked: store wiped, node stopped")
	case err := <-d.app.Done():
		return fmt.Errorf("local API: %w", err)
	}
}
