package simulations

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
)

//go:generate go run ./gentrace -o testdata/hospital-trace.csv

// TraceGen describes a synthetic hospital contact trace (GenerateTrace).
// The model: Devices staff phones, named 0 … Devices−1 (the trace's own
// node IDs), each based on ward i mod Wards. Each phone works a rota over
// Days days — a day shift (07:00–19:30) or a night shift (19:00–07:30),
// the rota fixed per phone, each day worked with probability 5/7 — and is
// off site (in reach of nobody) otherwise. On shift it stays on its ward
// and now and then goes elsewhere: the gap between outings is Pareto
// distributed (scale 20 min, shape 1.3: mostly short, sometimes the whole
// shift), an outing goes to a shared place (ED, radiology, theatres,
// pharmacy, canteen: 80%) or another ward (20%), lasts a Pareto time
// (scale 3 min, shape 1.5, at most 2 h), and each walk takes 1–3 minutes
// out of reach. Two phones are in contact while in one place; a trace row
// is one contact (up_s,down_s,a,b, whole seconds).
//
// Real human contact traces show heavy-tailed inter-contact times
// (Chaintreau et al., "Impact of human mobility on opportunistic
// forwarding algorithms", 2007: a power law over minutes to about half a
// day); here they come from the Pareto outings and from shifts and days
// off. TestGeneratedTraceHeavyTail checks the tail.
type TraceGen struct {
	Devices, Wards, Days int
	Seed                 uint64
}

// DefaultTraceGen is the trace shipped in testdata/hospital-trace.csv.
var DefaultTraceGen = TraceGen{Devices: 24, Wards: 4, Days: 5, Seed: 1}

var sharedPlaces = []string{"ed", "radiology", "theatres", "pharmacy", "canteen"}

// stay is a phone in a place from one time to another.
type stay struct {
	dev, place int
	from, to   float64
}

// GenerateTrace writes the trace g describes: a header comment saying how
// it was made, a header row, and the contacts ordered by up, a, b. The same
// TraceGen gives byte-identical output.
func GenerateTrace(out io.Writer, g TraceGen) error {
	if g.Devices < 2 || g.Wards < 1 || g.Days < 1 || g.Days*24 > MaxHours {
		return fmt.Errorf("trace generator: need at least 2 devices, 1 ward and 1 day, at most %d h", MaxHours)
	}
	rng := rand.New(rand.NewPCG(g.Seed, 0x7472616365))
	nPlaces := g.Wards + len(sharedPlaces)
	pareto := func(scale, shape float64) float64 { return scale / math.Pow(1-rng.Float64(), 1/shape) }
	var stays []stay
	for d := range g.Devices {
		ward := d % g.Wards
		night := rng.IntN(3) == 0
		for day := range g.Days {
			if rng.Float64() >= 5.0/7 {
				continue
			}
			start := float64(day)*86400 + 7*3600
			if night {
				start += 12 * 3600
			}
			end := start + 12.5*3600
			start += rng.Float64() * 900 // arrives within a quarter of an hour
			t := start
			for t < end {
				gap := pareto(15*60, 1.2)
				stays = append(stays, stay{d, ward, t, min(end, t+gap)})
				t += gap + 60 + rng.Float64()*120
				if t >= end {
					break
				}
				p := g.Wards + rng.IntN(len(sharedPlaces))
				if rng.Float64() < 0.3 && g.Wards > 1 {
					if p = rng.IntN(g.Wards - 1); p >= ward {
						p++
					}
				}
				dur := min(pareto(3*60, 1.5), 2*3600)
				stays = append(stays, stay{d, p, t, min(end, t+dur)})
				t += dur + 60 + rng.Float64()*120
			}
		}
	}
	// Contacts: stays of two phones in one place that overlap, in whole
	// seconds; a pair's contacts that touch are one.
	type row struct{ up, down, a, b int }
	byPlace := make([][]stay, nPlaces)
	for _, s := range stays {
		byPlace[s.place] = append(byPlace[s.place], s)
	}
	var rows []row
	for _, ss := range byPlace {
		slices.SortFunc(ss, func(x, y stay) int { return cmpFloat(x.from, y.from) })
		for i, s := range ss {
			for _, o := range ss[i+1:] {
				if o.from >= s.to {
					break
				}
				if o.dev == s.dev {
					continue
				}
				up, down := int(math.Ceil(o.from)), int(math.Floor(min(s.to, o.to)))
				if down > up {
					rows = append(rows, row{up, down, min(s.dev, o.dev), max(s.dev, o.dev)})
				}
			}
		}
	}
	slices.SortFunc(rows, func(x, y row) int {
		if x.a != y.a {
			return x.a - y.a
		}
		if x.b != y.b {
			return x.b - y.b
		}
		return x.up - y.up
	})
	merged := rows[:0]
	for _, r := range rows {
		if n := len(merged); n > 0 && merged[n-1].a == r.a && merged[n-1].b == r.b && r.up <= merged[n-1].down {
			merged[n-1].down = max(merged[n-1].down, r.down)
			continue
		}
		merged = append(merged, r)
	}
	slices.SortFunc(merged, func(x, y row) int {
		if x.up != y.up {
			return x.up - y.up
		}
		if x.a != y.a {
			return x.a - y.a
		}
		return x.b - y.b
	})
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, "# Synthetic hospital contact trace: medmesh simulations.GenerateTrace(%+v)\n", g)
	fmt.Fprintf(w, "# (simulations/gentrace.go describes the model). No real people: free to use, no licence needed.\n")
	fmt.Fprintf(w, "# Regenerate: cd simulations && go generate (go run ./gentrace -o testdata/hospital-trace.csv)\n")
	fmt.Fprintf(w, "up_s,down_s,a,b\n")
	for _, r := range merged {
		fmt.Fprintf(w, "%d,%d,%d,%d\n", r.up, r.down, r.a, r.b)
	}
	return w.Flush()
}
