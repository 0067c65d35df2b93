package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/identity"
)

func newCertCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "cert", Short: "Inspect and check device certificates"}
	c.AddCommand(newCertShowCmd(e), newCertVerifyCmd(e))
	return c
}

func newCertShowCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE",
		Short: "Print who a device certificate names, and its peer ID, serial and validity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readFile("certificate", args[0])
			if err != nil {
				return err
			}
			all, err := identity.ParseCertificates(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			certs, cred := identity.SplitBundle(all)
			if len(certs) == 0 {
				return fmt.Errorf("%s: %w: no staff certificate", args[0], identity.ErrNotStaff)
			}
			s, err := identity.StaffFromCert(certs[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
			for _, row := range [][2]string{
				{"name", s.Name},
				{"staff ID", s.StaffID},
				{"roles", orNone(s.Roles)},
				{"department", s.Department},
				{"site", s.Site},
				{"registration", s.Registration},
				{"trust", s.Trust},
				{"peer ID", s.PeerID.String()},
				{"KEM key", "MLKEM768-X25519 " + s.KEMFingerprint()},
				{"issuer", s.Issuer},
				{"serial", identity.SerialHex(s.Serial)},
				{"valid from", s.NotBefore.UTC().Format("2006-01-02 15:04 MST")},
				{"valid until", s.NotAfter.UTC().Format("2006-01-02 15:04 MST")},
			} {
				fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
			}
			if len(certs) > 1 {
				var up []string
				for _, c := range certs[1:] {
					up = append(up, c.Subject.CommonName)
				}
				fmt.Fprintf(w, "chain:\t%s\n", strings.Join(up, " → "))
			}
			if cred != nil {
				fmt.Fprintf(w, "admission credential:\tserial %s (names no one)\n", identity.SerialHex(cred[0].SerialNumber))
			} else {
				fmt.Fprintf(w, "admission credential:\tnone (sign the CSR again to issue one)\n")
			}
			return w.Flush()
		},
	}
}

func newCertVerifyCmd(e *env) *cobra.Command {
	var caPath, crlPath string
	c := &cobra.Command{
		Use:   "verify --ca CA_CERT [--crl CRL] FILE",
		Short: "Exit 0 if a device certificate is admissible now, else say why",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			trust, err := identity.LoadTrust(caPath)
			if err != nil {
				return err
			}
			raw, err := readFile("certificate", args[0])
			if err != nil {
				return err
			}
			all, err := identity.ParseCertificates(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			chain, cred := identity.SplitBundle(all)
			if len(chain) == 0 {
				return fmt.Errorf("not admissible: %w: no staff certificate", identity.ErrNotStaff)
			}
			now := e.time()
			trust.AddIssuers(chain, now)
			if crlPath != "" {
				rawCRL, err := readFile("CRL", crlPath)
				if err != nil {
					return err
				}
				l, err := identity.ParseCRL(rawCRL)
				if err != nil {
					return fmt.Errorf("%s: %w", crlPath, err)
				}
				if _, err := trust.UpdateCRL(l); err != nil {
					return fmt.Errorf("%s: %w", crlPath, err)
				}
			}
			s, err := identity.StaffFromCert(chain[0])
			if err != nil {
				return fmt.Errorf("not admissible: %w", err)
			}
			if _, err := trust.Admit(chain, s.PeerID, now); err != nil {
				return fmt.Errorf("not admissible: %w", err)
			}
			if cred != nil {
				if _, err := trust.AdmitCredential(cred, s.PeerID, now); err != nil {
					return fmt.Errorf("admission credential not admissible: %w", err)
				}
			}
			fmt.Fprintf(e.stdout, "admissible: %s (%s), peer %s, until %s\n", s.Name, s.StaffID, s.PeerID, s.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
			return nil
		},
	}
	c.Flags().StringVar(&caPath, "ca", "", "trusted CA certificate(s), PEM")
	c.Flags().StringVar(&crlPath, "crl", "", "newest CRL of the issuing CA, PEM")
	required(c, "ca")
	return c
}
