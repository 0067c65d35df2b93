package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/node"
	"github.com/medmesh/medmesh/store"
)

// newCAFederateCmd: `medmesh ca federate`.
func newCAFederateCmd(e *env) *cobra.Command {
	var dir, with, policyFile string
	var withdraw bool
	c := &cobra.Command{
		Use:   "federate --dir CA --with OTHER-ca.crt --policy FILE [--withdraw]",
		Short: "Sign a federation record: admit devices of another trust, by policy",
		Long: `Sign, with this root CA's key, a record naming another trust's root certificate
and a policy (JSON: roles, departments, sites of that trust which may be
admitted, and scope "invited"). Devices of that trust whose certificates match
are admitted as federated peers — never as this trust's staff. The record is
written to CA/federation-<fingerprint>.pem; give it to a device (medmesh trust
add, or the local API) and it spreads like a CRL. The newest record per other
trust wins; --withdraw writes a newer record that withdraws the federation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := readFile("other trust's root certificate", with)
			if err != nil {
				return err
			}
			certs, err := identity.ParseCertificates(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", with, err)
			}
			// The other trust's root: the last certificate of its ca.crt.
			other := certs[len(certs)-1]
			p := identity.Policy{Scope: identity.ScopeInvited}
			switch {
			case policyFile != "":
				data, err := readFile("policy", policyFile)
				if err != nil {
					return err
				}
				if p, err = identity.ParsePolicy(data); err != nil {
					return fmt.Errorf("%s: %w", policyFile, err)
				}
			case !withdraw:
				return errors.New("--policy is required (unless --withdraw)")
			}
			pass, err := e.passphrase(envCAPass, "CA", false)
			if err != nil {
				return err
			}
			d, err := identity.OpenCADir(dir, pass)
			if err != nil {
				return err
			}
			path, f, err := d.Federate(other, p, withdraw, e.time())
			if err != nil {
				return err
			}
			state := "admits by policy"
			if f.Withdrawn {
				state = "withdrawn"
			}
			fmt.Fprintf(e.stdout, "federation record %d with %q (%s): %s\n  fingerprint: %s\n  wrote %s\n",
				f.Number, f.RootCert.Subject.CommonName, state, policyJSON(f.Policy), f.Other, path)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "root CA directory")
	c.Flags().StringVar(&with, "with", "", "the other trust's root certificate (its ca.crt)")
	c.Flags().StringVar(&policyFile, "policy", "", "policy file (JSON)")
	c.Flags().BoolVar(&withdraw, "withdraw", false, "withdraw the federation (a newer record)")
	required(c, "dir", "with")
	return c
}

func newTrustCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "trust",
		Short: "The roots and federation records a device applies",
	}
	c.AddCommand(newTrustListCmd(e), newTrustAddCmd(e))
	return c
}

func newTrustListCmd(e *env) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "list --dir DEV",
		Short: "List the trust roots and the federation records a stopped device applies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tr, err := identity.LoadTrust(filepath.Join(dir, identity.TrustFile))
			if err != nil {
				return err
			}
			for _, r := range tr.Roots() {
				fmt.Fprintf(e.stdout, "root %q\n  fingerprint: %s\n", r.Subject.CommonName, identity.KeyOf(r))
			}
			st, err := openDeviceStore(e, dir)
			if errors.Is(err, errNeverRan) {
				fmt.Fprintln(e.stdout, "no federation records (the device has never run)")
				return nil
			}
			if err != nil {
				return err
			}
			defer st.Close()
			raws, err := node.StoredFederations(cmd.Context(), st)
			if err != nil {
				return fmt.Errorf("read federation records: %w", err)
			}
			for _, raw := range raws {
				if _, _, err := tr.InstallFederation(raw); err != nil {
					fmt.Fprintf(e.stdout, "stored record refused: %v\n", err)
				}
			}
			fs := tr.Federations()
			if len(fs) == 0 {
				fmt.Fprintln(e.stdout, "no federation records")
			}
			for _, f := range fs {
				printFederation(e.stdout, f)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "device directory (of a stopped node)")
	required(c, "dir")
	return c
}

func newTrustAddCmd(e *env) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "add --dir DEV FILE",
		Short: "Give a stopped device a federation record (CA/federation-*.pem); it spreads once the device runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readFile("federation record", args[0])
			if err != nil {
				return err
			}
			tr, err := identity.LoadTrust(filepath.Join(dir, identity.TrustFile))
			if err != nil {
				return err
			}
			st, err := openDeviceStore(e, dir)
			if err != nil {
				return err
			}
			defer st.Close()
			f, changed, err := node.AddStoredFederation(cmd.Context(), st, tr, data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if !changed {
				return fmt.Errorf("%s: record %d is not newer than the one held", args[0], f.Number)
			}
			printFederation(e.stdout, f)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "device directory (of a stopped node)")
	required(c, "dir")
	return c
}

var errNeverRan = errors.New("no store (the device has never run)")

// openDeviceStore opens a stopped device's encrypted store.
func openDeviceStore(e *env, dir string) (*store.Store, error) {
	if _, err := os.Stat(filepath.Join(dir, identity.RevokedFile)); err == nil {
		return nil, fmt.Errorf("device %s: %w", dir, device.ErrRevoked)
	}
	sdir := filepath.Join(dir, device.StoreDir)
	if _, err := os.Stat(filepath.Join(sdir, store.KeyFile)); errors.Is(err, os.ErrNotExist) {
		return nil, errNeverRan
	}
	pass, err := e.passphrase(envDevicePass, "device", false)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(sdir, pass)
	if err != nil {
		return nil, fmt.Errorf("open the device's store (is the node still running?): %w", err)
	}
	return st, nil
}

func printFederation(w io.Writer, f *identity.Federation) {
	state := "active"
	if f.Withdrawn {
		state = "withdrawn"
	}
	fmt.Fprintf(w, "federated %q (%s)\n  fingerprint: %s\n  policy:      %s\n  record:      %d, issued %s\n",
		f.RootCert.Subject.CommonName, state, f.Other, policyJSON(f.Policy), f.Number, f.IssuedAt().Format("2006-01-02 15:04 MST"))
}

func policyJSON(p identity.Policy) string {
	for _, l := range []*[]string{&p.Roles, &p.Departments, &p.Sites} {
		if *l == nil {
			*l = []string{}
		}
	}
	b, _ := json.Marshal(p)
	return string(b)
}
