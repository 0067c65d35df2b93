// Command gentrace writes the synthetic hospital contact trace of
// simulations.GenerateTrace (the model is documented there). With no flags
// it writes the trace shipped in simulations/testdata/hospital-trace.csv,
// byte for byte:
//
//	cd simulations && go generate
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/medmesh/medmesh/simulations"
)

func main() {
	g := simulations.DefaultTraceGen
	flag.IntVar(&g.Devices, "devices", g.Devices, "staff phones (node IDs 0 … devices−1)")
	flag.IntVar(&g.Wards, "wards", g.Wards, "wards the phones are based on (phone i on ward i mod wards)")
	flag.IntVar(&g.Days, "days", g.Days, "days of the trace")
	flag.Uint64Var(&g.Seed, "seed", g.Seed, "seed")
	out := flag.String("o", "", "output file (default: standard output)")
	flag.Parse()
	var b bytes.Buffer
	if err := simulations.GenerateTrace(&b, g); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *out == "" {
		os.Stdout.Write(b.Bytes())
		return
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
