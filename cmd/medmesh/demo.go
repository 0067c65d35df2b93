package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/keywrap"
)

const demoPassphrase = "demo"

type demoPerson struct {
	dir     string
	details identity.Details
	roles   []string
	anchor  bool
}

func newDemoCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run a throwaway trust and four devices in one process, with a web app for each",
		Long: `Create a throwaway CA and four staff devices — a junior doctor in the
radiology basement, a registrar and a nurse on the ward, and a site anchor —
all on 127.0.0.1 with no multicast. Each prints its app URL; unlock with the
passphrase shown. Everything is deleted when you stop the demo (Ctrl-C).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), e) },
	}
}

func runDemo(ctx context.Context, e *env) error {
	root, err := os.MkdirTemp("", "medmesh-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	cheap := keywrap.Params{Time: 1, MemoryKiB: 8 * 1024, Threads: 1} // throwaway keys: fast to unlock
	de := *e
	de.kdf = &cheap
	now := time.Now()
	ca, err := identity.InitRootCA(filepath.Join(root, "ca"), "Demo General Hospital", []byte("demo-ca"), cheap, false, now)
	if err != nil {
		return err
	}
	rootPEM, err := os.ReadFile(filepath.Join(root, "ca", identity.CACertFile))
	if err != nil {
		return err
	}
	people := []demoPerson{
		{dir: "anchor", details: identity.Details{Name: "Site anchor", StaffID: "ANCHOR-1", Site: "Main site"}, roles: []string{"anchor"}, anchor: true},
		{dir: "amira", details: identity.Details{Name: "Dr Amira Shah", StaffID: "D1001", Department: "Radiology (basement)", Registration: "GMC 7000001"}, roles: []string{"doctor"}},
		{dir: "ben", details: identity.Details{Name: "Dr Ben Okafor", StaffID: "D2002", Department: "Ward 7", Registration: "GMC 7000002"}, roles: []string{"doctor", "registrar"}},
		{dir: "chloe", details: identity.Details{Name: "Nurse Chloe Evans", StaffID: "N3003", Department: "Ward 7", Registration: "NMC 70A0003"}, roles: []string{"nurse"}},
	}
	log := e.logger()
	if e.getenv("MEDMESH_LOG") == "" { // four nodes' routine logs would bury the URLs
		log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	var devices []*running
	defer func() {
		for _, d := range devices {
			d.close()
		}
	}()
	for i, p := range people {
		dir := filepath.Join(root, p.dir)
		if _, err := identity.InitDevice(dir, p.details, rootPEM, []byte(demoPassphrase), cheap); err != nil {
			return err
		}
		csr, err := os.ReadFile(filepath.Join(dir, identity.DeviceCSRFile))
		if err != nil {
			return err
		}
		chain, _, err := ca.Sign(csr, identity.SignOptions{Roles: p.roles}, now)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, identity.DeviceCertFile), chain, 0o644); err != nil {
			return err
		}
		o := runOptions{dir: dir, api: "127.0.0.1:0", listen: []string{"/ip4/127.0.0.1/tcp/0"}, anchor: p.anchor}
		if i > 0 {
			a := devices[0].n
			o.bootstrap = []peer.AddrInfo{{ID: a.ID(), Addrs: a.Host().Addrs()}}
		}
		d, err := startDevice(ctx, &de, o, []byte(demoPassphrase), log.With("device", p.dir))
		if err != nil {
			return fmt.Errorf("start %s: %w", p.dir, err)
		}
		devices = append(devices, d)
	}
	fmt.Fprintf(e.stdout, "medmesh demo — a throwaway trust with four devices on this machine.\n")
	fmt.Fprintf(e.stdout, "Open each in its own browser window; unlock with the passphrase %q.\n\n", demoPassphrase)
	for i, p := range people {
		fmt.Fprintf(e.stdout, "%-20s %s\n", p.details.Name, devices[i].url())
	}
	control, stop, err := demoControl(people, devices)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(e.stdout, "\nDemo control (take the basement offline and back): %s\n", control)
	fmt.Fprintf(e.stdout, "Ctrl-C stops the demo and deletes everything.\n")
	// Tools and the start-up script test wait for this file: every device
	// is up and every URL printed.
	if err := os.WriteFile(filepath.Join(root, "ready"), nil, 0o600); err != nil {
		return err
	}
	seeded := make(chan struct{})
	go func() {
		defer close(seeded)
		seedDemo(ctx, devices)
	}()
	<-ctx.Done()
	<-seeded // before the deferred closes take the devices away
	return nil
}

// seedDemo starts a ward handover conversation once the colleagues know
// each other, so the demo opens on something to read.
func seedDemo(ctx context.Context, ds []*running) {
	ben, amira, chloe := ds[2], ds[1], ds[3]
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		_, e1 := ben.n.Recipient(amira.n.ID(), time.Now())
		_, e2 := ben.n.Recipient(chloe.n.ID(), time.Now())
		if e1 == nil && e2 == nil {
			id, err := ben.svc.Create("Ward 7 handover", []peer.ID{amira.n.ID(), chloe.n.ID()})
			if err == nil {
				ben.svc.Send(id, "Bay 3, bed 4: CT head requested, please review when back from the basement.", chat.SendOptions{Urgent: true})
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
