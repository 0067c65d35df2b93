package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/atomicfile"
	"github.com/medmesh/medmesh/mesh"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/store"
	"github.com/medmesh/medmesh/web"
)

// Files the running node writes in its device directory.
const (
	tokenFile = "api.token"
	storeDir  = "store"
)

const shutdownGrace = 5 * time.Second

func newRunCmd(e *env) *cobra.Command {
	var dir, api string
	var listen, bootstrap []string
	var noMDNS, anchor bool
	var quota int64
	var ttl, lockAfter time.Duration
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
			pass, err := e.passphrase(envDevicePass, "device", false)
			if err != nil {
				return err
			}
			return runNode(cmd.Context(), e, runOptions{dir: dir, api: api, listen: listen, bootstrap: boot, mdns: !noMDNS,
				anchor: anchor, quota: quota, ttl: ttl, lockAfter: lockAfter}, pass)
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "device directory (from medmesh init, with device.crt)")
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (default: all interfaces, random TCP and QUIC ports)")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "multiaddr of a peer to keep connected, with /p2p/PEER_ID")
	f.StringVar(&api, "api", "127.0.0.1:7070", "address of the local API")
	f.BoolVar(&noMDNS, "no-mdns", false, "turn LAN multicast discovery off")
	f.BoolVar(&anchor, "anchor", false, "store and forward every conversation colleagues offer (ciphertext only)")
	f.Int64Var(&quota, "anchor-quota", 1<<30, "bytes an anchor keeps; oldest dropped first")
	f.DurationVar(&ttl, "anchor-ttl", 30*24*time.Hour, "how long an anchor keeps an envelope")
	f.DurationVar(&lockAfter, "lock-after", web.DefaultLockAfter, "lock the web app after this long without use")
	required(c, "dir")
	return c
}

type runOptions struct {
	dir       string
	api       string
	listen    []string
	bootstrap []peer.AddrInfo
	mdns      bool
	anchor    bool
	quota     int64
	ttl       time.Duration
	lockAfter time.Duration
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

// device is one running device: node, conversations, local API and app.
type device struct {
	dir   string
	n     *node.Node
	svc   *mesh.Service
	st    *store.Store
	srv   *http.Server
	ln    net.Listener
	token string
	log   *slog.Logger
	done  chan error // the API server's end
}

func (e *env) logger() *slog.Logger {
	level := slog.LevelInfo
	if e.getenv("MEDMESH_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

// startDevice opens a device directory and starts everything a device runs.
func startDevice(ctx context.Context, e *env, o runOptions, pass []byte, log *slog.Logger) (_ *device, err error) {
	key, err := identity.LoadDeviceKey(o.dir, pass)
	if err != nil {
		return nil, err
	}
	rawChain, err := os.ReadFile(filepath.Join(o.dir, identity.DeviceCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s: have the CA sign %s first (medmesh ca sign)", identity.DeviceCertFile, o.dir, identity.DeviceCSRFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read device certificate: %w", err)
	}
	chain, err := identity.ParseCertificates(rawChain)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	trust, err := identity.LoadTrust(filepath.Join(o.dir, identity.TrustFile))
	if err != nil {
		return nil, err
	}
	d := &device{dir: o.dir, log: log, done: make(chan error, 1)}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.st, err = store.Open(filepath.Join(o.dir, storeDir), pass, store.WithKDF(e.params())); err != nil {
		return nil, err
	}
	d.n, err = node.New(ctx, node.Config{
		Key: key, Chain: chain, Trust: trust, Store: d.st,
		Listen: o.listen, Bootstrap: o.bootstrap, MDNS: o.mdns,
		OnRevoked: func() {
			if err := d.st.Wipe(); err != nil {
				log.Error("wipe store", "err", err)
			}
			os.Remove(filepath.Join(o.dir, tokenFile))
		},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	d.svc, err = mesh.New(mesh.Config{
		Node:   d.n,
		Device: &chat.Device{Key: key.Identity, ID: key.PeerID(), Prekeys: d.n.Prekeys(), CertKEM: key.KEM},
		Store:  d.st, Anchor: o.anchor, AnchorQuota: o.quota, AnchorTTL: o.ttl, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if d.ln, err = net.Listen("tcp", o.api); err != nil {
		return nil, fmt.Errorf("local API on %s: %w", o.api, err)
	}
	d.token = web.NewToken()
	if err = atomicfile.WriteFile(filepath.Join(o.dir, tokenFile), []byte(d.token+"\n"), 0o600); err != nil {
		return nil, err
	}
	unlock := func(p []byte) bool { _, err := identity.LoadDeviceKey(o.dir, p); return err == nil }
	d.srv = &http.Server{Handler: web.New(d.n, d.token, log, web.WithConversations(d.svc, d.n), web.WithApp(unlock, o.lockAfter)),
		ReadHeaderTimeout: 10 * time.Second}
	go func() { d.done <- d.srv.Serve(d.ln) }()
	return d, nil
}

// url is the app's address.
func (d *device) url() string { return "http://" + d.ln.Addr().String() + "/" }

// close stops the device: API first, then conversations, node and store.
func (d *device) close() {
	if d.srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		d.srv.Shutdown(sctx)
		cancel()
	} else if d.ln != nil {
		d.ln.Close()
	}
	if d.svc != nil {
		d.svc.Close()
	}
	if d.n != nil {
		if err := d.n.Close(); err != nil {
			d.log.Warn("close node", "err", err)
		}
	}
	if d.st != nil {
		d.st.Close()
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
	log.Info("medmesh running", "api", "http://"+d.ln.Addr().String(), "addrs", fmt.Sprint(st0.Addrs))
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
	case err := <-d.done:
		return fmt.Errorf("local API: %w", err)
	}
}
