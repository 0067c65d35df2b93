package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/identity"
)

func newInitCmd(e *env) *cobra.Command {
	var dir, caPath string
	var d identity.Details
	c := &cobra.Command{
		Use:   "init --dir DEV --name NAME --staff-id ID --ca CA/ca.crt",
		Short: "Make this device's keys and an enrolment request (DEV/device.csr)",
		Long: `Make the device's Ed25519 identity key (its libp2p peer ID) and hybrid
post-quantum KEM key, sealed under MEDMESH_PASSPHRASE in DEV/device.key; copy
the trust roots to DEV/ca.crt; write DEV/device.csr for the CA to sign.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			roots, err := readFile("trust roots", caPath)
			if err != nil {
				return err
			}
			pass, err := e.passphrase(envDevicePass, "device", true)
			if err != nil {
				return err
			}
			k, err := identity.InitDevice(dir, d, roots, pass, e.params())
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "device keys in %s\n  peer ID: %s\n  request: %s (take it to your CA)\n",
				dir, k.PeerID(), filepath.Join(dir, identity.DeviceCSRFile))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "device directory to create")
	f.StringVar(&caPath, "ca", "", "the trust's CA certificate (one or more roots)")
	f.StringVar(&d.Name, "name", "", "staff member's name")
	f.StringVar(&d.StaffID, "staff-id", "", "staff ID")
	f.StringVar(&d.Department, "dept", "", "department")
	f.StringVar(&d.Site, "site", "", "site")
	f.StringVar(&d.Registration, "registration", "", "professional registration (e.g. GMC 1234567)")
	required(c, "dir", "ca", "name", "staff-id")
	return c
}

func newRenewCmd(e *env) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "renew --dir DEV",
		Short: "Write a fresh CSR from the existing keys, for re-issue before expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pass, err := e.passphrase(envDevicePass, "device", false)
			if err != nil {
				return err
			}
			k, err := identity.Renew(dir, pass)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "renewal request %s for peer %s\n", filepath.Join(dir, identity.DeviceCSRFile), k.PeerID())
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "device directory")
	required(c, "dir")
	return c
}
