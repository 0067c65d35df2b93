package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/medmesh/medmesh/simulations"
)

func newSimCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "sim", Short: "Reproducible mesh simulations on the real protocol code"}
	c.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the built-in scenarios",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, n := range simulations.Names() {
				fmt.Fprintf(e.stdout, "%-14s %s\n", n, simulations.Builtins[n].Description)
			}
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "show SCENARIO",
		Short: "Print a built-in scenario as a JSON file to edit and run (every field, unset ones too)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, ok := simulations.Builtins[args[0]]
			if !ok {
				return fmt.Errorf("no built-in scenario %q (have %s)", args[0], strings.Join(simulations.Names(), ", "))
			}
			// Lists print as [] rather than null: a file to fill in.
			sc.Floor, sc.Partitions, sc.Revocations = orEmpty(sc.Floor), orEmpty(sc.Partitions), orEmpty(sc.Revocations)
			js, err := json.MarshalIndent(sc, "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s\n", js)
			return nil
		},
	})
	var engine, out string
	var seed uint64
	var scale float64
	var elastic bool
	run := &cobra.Command{
		Use:   "run SCENARIO|FILE [--engine des|full] [--seed N] [--out DIR]",
		Short: "Run a scenario; write summary.csv, messages.csv, summary.json and plots to --out",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if engine != "des" && engine != "full" {
				return fmt.Errorf("--engine %q: want des or full", engine)
			}
			sc, err := simulations.Load(args[0])
			if err != nil {
				return err
			}
			w, err := simulations.Build(sc, seed)
			if err != nil {
				return err
			}
			for _, n := range w.Notes {
				fmt.Fprintln(e.stderr, "note:", n)
			}
			if engine == "full" && w.MultiConversation() {
				return fmt.Errorf("scenario %s: a device is in more than one conversation (one-to-one messages): the full engine runs one conversation per device; use --engine des", sc.Name)
			}
			bar := progressbar.NewOptions(100, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription(sc.Name+" ("+engine+")"),
				progressbar.OptionClearOnFinish())
			progress := func(done, total int) { bar.Set(done * 100 / max(1, total)) }
			var res *simulations.Result
			if engine == "full" {
				res, err = w.RunFull(simulations.FullOptions{Scale: scale, Elastic: elastic}, progress)
			} else {
				res = w.RunDES(progress)
			}
			bar.Finish()
			if err != nil {
				return err
			}
			sum := simulations.Summarise(res)
			if out == "" {
				out = filepath.Join("sim-out", fmt.Sprintf("%s-%s-seed%d", sc.Name, engine, seed))
			}
			if err := simulations.Write(out, res, sum); err != nil {
				return err
			}
			simulations.Table(e.stdout, sum)
			for i, msg := range res.Failures {
				if i == 5 {
					fmt.Fprintf(e.stderr, "… and %d more failures\n", len(res.Failures)-5)
					break
				}
				fmt.Fprintln(e.stderr, "failure:", msg)
			}
			fmt.Fprintf(e.stdout, "wrote %s (summary.csv, messages.csv, summary.json and plots) in %v\n", out, res.Wall.Round(1e6))
			return nil
		},
	}
	run.Flags().StringVar(&engine, "engine", "des", "des (discrete event, virtual time) or full (real nodes on a libp2p mocknet, compressed wall-clock time)")
	run.Flags().Float64Var(&scale, "scale", 0, "full engine: scenario seconds per wall-clock second (default: the run takes about 30 s)")
	run.Flags().BoolVar(&elastic, "elastic", false, "full engine: the scenario clock waits for a machine too busy to apply an event on time (outcomes independent of the machine's speed; the lag no longer measures it)")
	run.Flags().Uint64Var(&seed, "seed", 1, "seed of traffic, mobility and contacts (with a trace: of the traffic only)")
	run.Flags().StringVar(&out, "out", "", "output directory (default sim-out/SCENARIO-seedN)")
	c.AddCommand(run)
	return c
}

func orEmpty[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}
