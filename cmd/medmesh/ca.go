package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/identity"
	"github.com/medmesh/medmesh/internal/atomicfile"
)

func newCACmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "ca",
		Short: "Run the trust's certificate authority: create it, sign devices, revoke",
	}
	c.AddCommand(newCAInitCmd(e), newCASignCmd(e), newCARevokeCmd(e), newCAFederateCmd(e))
	return c
}

func newCAInitCmd(e *env) *cobra.Command {
	var dir, name, parent, site string
	var force bool
	c := &cobra.Command{
		Use:   "init --dir CA --name NAME | --dir SITE --parent CA --site NAME",
		Short: "Create a root CA, or a site issuing CA under a root",
		Long: `Create a trust's Ed25519 root CA in DIR (ca.crt, ca.key sealed under
MEDMESH_CA_PASSPHRASE). With --parent and --site, create an issuing CA for one
site, signed by the root in --parent; devices it signs chain device → site → root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (parent == "") != (site == "") {
				return errors.New("--parent and --site go together")
			}
			if parent == "" && name == "" {
				return errors.New("--name is required for a root CA")
			}
			pass, err := e.passphrase(envCAPass, "CA", parent == "")
			if err != nil {
				return err
			}
			var d *identity.CADir
			if parent == "" {
				d, err = identity.InitRootCA(dir, name, pass, e.params(), force, e.time())
			} else {
				var p *identity.CADir
				if p, err = identity.OpenCADir(parent, pass); err != nil {
					return err
				}
				d, err = identity.InitSiteCA(dir, p, site, pass, e.params(), force, e.time())
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "created CA %q in %s\n  certificate: %s\n  valid until: %s\n",
				d.CA.Cert.Subject.CommonName, dir, filepath.Join(dir, identity.CACertFile), d.CA.Cert.NotAfter.UTC().Format("2006-01-02"))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "CA directory to create")
	c.Flags().StringVar(&name, "name", "", "trust name, e.g. \"General Hospital\" (root CA)")
	c.Flags().StringVar(&parent, "parent", "", "root CA directory that signs this site CA")
	c.Flags().StringVar(&site, "site", "", "site name of a site issuing CA")
	c.Flags().BoolVar(&force, "force", false, "replace an existing CA (its devices will no longer verify)")
	required(c, "dir")
	return c
}

func newCASignCmd(e *env) *cobra.Command {
	var dir, csr, out string
	var days int
	var roles []string
	c := &cobra.Command{
		Use:   "sign --dir CA --csr FILE --out FILE [--days 30] [--roles a,b]",
		Short: "Issue a device certificate for a CSR, once you have checked the person",
		Long: `Verify a device's CSR and issue its certificate (PEM chain, device first).
Check the person's identity and staff details before you sign: nothing is
trusted on first use. Without --roles, a renewing device keeps its roles.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := readFile("CSR", csr)
			if err != nil {
				return err
			}
			pass, err := e.passphrase(envCAPass, "CA", false)
			if err != nil {
				return err
			}
			d, err := identity.OpenCADir(dir, pass)
			if err != nil {
				return err
			}
			o := identity.SignOptions{Days: days}
			if cmd.Flags().Changed("roles") {
				o.Roles = cleanList(roles)
			}
			chain, s, err := d.Sign(req, o, e.time())
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out, chain, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "issued %s to %s (%s)\n  peer ID: %s\n  roles:   %s\n  valid:   until %s\n  written: %s\n",
				identity.SerialHex(s.Serial), s.Name, s.StaffID, s.PeerID, orNone(s.Roles), s.NotAfter.UTC().Format("2006-01-02 15:04 MST"), out)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "CA directory")
	c.Flags().StringVar(&csr, "csr", "", "the device's CSR (DEV/device.csr)")
	c.Flags().StringVar(&out, "out", "", "where to write the certificate chain (DEV/device.crt)")
	c.Flags().IntVar(&days, "days", identity.DefaultDays, "validity in days")
	c.Flags().StringSliceVar(&roles, "roles", nil, "roles granted, comma separated (e.g. doctor,admin)")
	required(c, "dir", "csr", "out")
	return c
}

func newCARevokeCmd(e *env) *cobra.Command {
	var dir, serial, peerText, reason string
	c := &cobra.Command{
		Use:   "revoke --dir CA (--serial N | --peer PEER_ID) --reason TEXT",
		Short: "Revoke a certificate, or every certificate of a lost device, and write crl.pem",
		Long: `Revoke one certificate by serial (hex as openssl prints it, or decimal), or
with --peer every certificate issued to that device. Writes CA/crl.pem with
the next CRL number; nodes spread it over the mesh.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (serial == "") == (peerText == "") {
				return errors.New("give exactly one of --serial or --peer")
			}
			var id peer.ID
			if peerText != "" {
				var err error
				if id, err = peer.Decode(peerText); err != nil {
					return fmt.Errorf("--peer %q is not a peer ID: %w", peerText, err)
				}
			}
			pass, err := e.passphrase(envCAPass, "CA", false)
			if err != nil {
				return err
			}
			d, err := identity.OpenCADir(dir, pass)
			if err != nil {
				return err
			}
			hit, n, err := d.Revoke(serial, id, reason, e.time())
			if err != nil {
				return err
			}
			for _, is := range hit {
				fmt.Fprintf(e.stdout, "revoked %s  %s (%s)  peer %s\n", is.Serial, is.Name, is.StaffID, is.PeerID)
			}
			fmt.Fprintf(e.stdout, "wrote %s (CRL number %d)\n", filepath.Join(dir, identity.CRLFile), n)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "CA directory")
	c.Flags().StringVar(&serial, "serial", "", "certificate serial (hex or decimal)")
	c.Flags().StringVar(&peerText, "peer", "", "revoke every certificate issued to this peer ID")
	c.Flags().StringVar(&reason, "reason", "", "why (kept in the CA's record)")
	required(c, "dir", "reason")
	return c
}

func cleanList(v []string) []string {
	out := []string{}
	for _, s := range v {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func orNone(v []string) string {
	if len(v) == 0 {
		return "(none)"
	}
	return strings.Join(v, ", ")
}
