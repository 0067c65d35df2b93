package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/internal/attack"
)

// newAttackCmd points the adversarial harness at a running node.
func newAttackCmd(e *env) *cobra.Command {
	var target string
	var only []string
	c := &cobra.Command{
		Use:   "attack --target MULTIADDR/p2p/ID [--only NAME,...]",
		Short: "Try an outsider's attacks on a node on this machine; exit 0 if it kept every bound",
		Long: "Runs the attacks of a host with no certificate (internal/attack) against a node on loopback:\n" +
			"oversized and garbage frames, stream floods, slowloris, fresh identities, other protocols before\n" +
			"admission, and what the node shows an outsider. Only loopback targets are accepted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ai, err := peer.AddrInfoFromString(target)
			if err != nil {
				return fmt.Errorf("--target %q: %w", target, err)
			}
			for _, a := range ai.Addrs {
				if !manet.IsIPLoopback(a) {
					return fmt.Errorf("--target %s: only loopback addresses are attacked", a)
				}
			}
			var attacks []attack.Attack
			for _, a := range attack.Outsider() {
				if len(only) == 0 || slices.Contains(only, a.Name) {
					attacks = append(attacks, a)
				}
			}
			if len(attacks) == 0 {
				return fmt.Errorf("--only %s: no such attack", strings.Join(only, ","))
			}
			w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
			failed := 0
			for _, r := range attack.Run(cmd.Context(), *ai, attacks) {
				verdict := "held"
				if !r.OK {
					verdict, failed = "FAILED", failed+1
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", r.Name, verdict, r.Detail, r.Took.Round(time.Millisecond))
			}
			w.Flush()
			if failed > 0 {
				return errors.New(fmt.Sprint(failed, " attack(s) got past their bound"))
			}
			return nil
		},
	}
	c.Flags().StringVar(&target, "target", "", "the node's address with /p2p/ID (from GET /api/v1/status addrs)")
	c.Flags().StringSliceVar(&only, "only", nil, "attacks to run (default all)")
	required(c, "target")
	return c
}
