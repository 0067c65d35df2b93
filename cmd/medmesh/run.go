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
	var ttl time.Duration
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
				anchor: anchor, quota: quota, ttl: ttl}, pass)
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

func runNode(ctx context.Context, e *env, o runOptions, pass []byte) error {
	level := slog.LevelInfo
	if e.getenv("MEDMESH_LOG") == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	key, err := identity.LoadDeviceKey(o.dir, pass)
	if err != nil {
		return err
	}
	rawChain, err := os.ReadFile(filepath.Join(o.dir, identity.DeviceCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no %s in %s: have the CA sign %s first (medmesh ca sign)", identity.DeviceCertFile, o.dir, identity.DeviceCSRFile)
	}
	if err != nil {
		return fmt.Errorf("read device certificate: %w", err)
	}
	chain, err := identity.ParseCertificates(rawChain)
	if err != nil {
		return fmt.Errorf("device certificate: %w", err)
	}
	trust, err := identity.LoadTrust(filepath.Join(o.dir, identity.TrustFile))
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(o.dir, storeDir), pass, store.WithKDF(e.params()))
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := node.New(ctx, node.Config{
		Key: key, Chain: chain, Trust: trust, Store: st,
		Listen: o.listen, Bootstrap: o.bootstrap, MDNS: o.mdns,
		OnRevoked: func() {
			if err := st.Wipe(); err != nil {
				log.Error("wipe store", "err", err)
			}
			os.Remove(filepath.Join(o.dir, tokenFile))
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	svc, err := mesh.New(mesh.Config{
		Node:   n,
		Device: &chat.Device{Key: key.Identity, ID: key.PeerID(), Prekeys: n.Prekeys(), CertKEM: key.KEM},
		Store:  st, Anchor: o.anchor, AnchorQuota: o.quota, AnchorTTL: o.ttl, Logger: log,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	ln, err := net.Listen("tcp", o.api)
	if err != nil {
		return fmt.Errorf("local API on %s: %w", o.api, err)
	}
	token := web.NewToken()
	if err := atomicfile.WriteFile(filepath.Join(o.dir, tokenFile), []byte(token+"\n"), 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: web.New(n, token, log, web.WithConversations(svc, n)), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	st0 := n.Status()
	log.Info("medmesh running", "api", "http://"+ln.Addr().String(), "addrs", fmt.Sprint(st0.Addrs))
	fmt.Fprintf(e.stdout, "medmesh node %s\n  API:    http://%s (token in %s)\n", n.ID(), ln.Addr(), filepath.Join(o.dir, tokenFile))
	for _, a := range st0.Addrs {
		fmt.Fprintf(e.stdout, "  listen: %s\n", a)
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-n.Done():
		runErr = errors.New("this device's certificate was revoked: store wiped, node stopped")
	case err := <-served:
		runErr = fmt.Errorf("local API: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	srv.Shutdown(sctx)
	svc.Close()
	if err := n.Close(); err != nil && runErr == nil {
		log.Warn("close node", "err", err)
	}
	return runErr
}
