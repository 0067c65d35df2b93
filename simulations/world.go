package simulations

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// nowhere is the place of a device off site or walking between places: it
// meets nobody (except over explicit contact links of a trace).
const nowhere = -1

// A World is a scenario made concrete by a seed: every device's moves,
// every contact, every message and its conversation. Both engines run the
// same World, and the oracle reads it with full knowledge of the future.
type World struct {
	S       Scenario
	Seed    uint64
	Devices []Device
	Convs   [][]int // members of each conversation (device indices)
	ConvOf  []int   // a device's conversation; -1 for anchors
	Sends   []Send  // in time order; a message's ID is its index
	Links   []Link  // pairwise contacts of a trace, in time order
	Cuts    []Cut
	Revokes []Revoke
	// Heal is when the last partition heals (-1: no partition).
	Heal float64
	// Notes: what a researcher should know about how the world was read
	// (devices a trace never names).
	Notes []string
}

// Device is one simulated device.
type Device struct {
	Name, Group    string
	Anchor, Bridge bool
	Start          int // place at time 0
	Moves          []Move
	conv           string // the group's named conversation, if any
}

// Move puts a device in a place (nowhere: out of reach) at a time.
type Move struct {
	At    float64
	Place int
}

// Send is one message written by a device into its conversation.
type Send struct {
	At   float64
	Dev  int
	Conv int
}

// Link is a pairwise contact from a trace: a and b (a < b) are in reach
// from Up until Down. A pair's contacts never overlap or touch (trace.go
// merges them), and Down is already stretched to contactEnd.
type Link struct {
	Up, Down float64
	A, B     int
}

// Cut is a partition: the places In are cut off from the rest (no device
// crosses, the WAN of a bridge inside is down) from From until To.
type Cut struct {
	From, To float64
	In       []bool // by place
}

func (c Cut) active(t float64) bool { return t >= c.From && t < c.To }

// Revoke is a certificate revocation: the CRL enters the mesh At, at every
// anchor outside a partition.
type Revoke struct {
	At  float64
	Dev int
}

// Build makes a scenario concrete with a seed. With a trace, the seed
// drives only the traffic (who writes when); the trace is the mobility.
func Build(s Scenario, seed uint64) (*World, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var tr *trace
	if s.Trace != "" {
		var err error
		if tr, err = readTrace(s.Trace); err != nil {
			return nil, err
		}
		switch {
		case s.Hours == 0 && tr.End == 0:
			return nil, fmt.Errorf("scenario %s: trace %s has no time after 0: give hours", s.Name, s.Trace)
		case s.Hours == 0:
			s.Hours = tr.End / 3600
		case tr.End > s.Hours*3600:
			return nil, fmt.Errorf("scenario %s: trace %s runs to %.0f s (%.2f h), beyond the run's hours (%g): raise hours (at most %d, or 0 for the trace's length) or cut the trace",
				s.Name, s.Trace, tr.End, tr.End/3600, s.Hours, MaxHours)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d65646d657368))
	w := &World{S: s, Seed: seed, Heal: -1}
	horizon := s.Hours * 3600
	placeIdx := map[string]int{}
	for i, p := range s.Places {
		placeIdx[p] = i
	}
	floor, err := newFloor(s, placeIdx)
	if err != nil {
		return nil, err
	}
	for _, g := range s.Devices {
		home := placeIdx[g.Home]
		for i := range g.Count {
			d := Device{Name: fmt.Sprintf("%s-%d", g.Name, i+1), Group: g.Name, Anchor: g.Anchor, Bridge: g.Bridge, Start: home, conv: g.Conversation}
			if tr != nil {
				w.Devices = append(w.Devices, d) // the trace moves it
				continue
			}
			t := 0.0
			if g.JoinAtHours > 0 {
				d.Start, t = nowhere, g.JoinAtHours*3600
				d.Moves = append(d.Moves, Move{t, home})
			}
			switch g.Mobility {
			case "waypoint":
				d.Moves = append(d.Moves, floor.waypoint(rng, home, t, horizon, g.PauseMinutes*60)...)
			default:
				d.Moves = append(d.Moves, visits(rng, s, g, placeIdx, t, horizon)...)
			}
			w.Devices = append(w.Devices, d)
		}
	}
	if tr != nil {
		if len(s.Devices) == 0 {
			for _, n := range tr.Nodes { // the trace's own node IDs
				w.Devices = append(w.Devices, Device{Name: n, Group: "trace"})
			}
		}
		if err := w.replayTrace(tr, placeIdx); err != nil {
			return nil, err
		}
	}
	byName := map[string]int{}
	for i, d := range w.Devices {
		byName[d.Name] = i
	}
	for i, p := range s.Partitions {
		c := Cut{From: p.FromHours * 3600, To: p.ToHours * 3600, In: make([]bool, len(s.Places))}
		for _, name := range p.Places {
			c.In[placeIdx[name]] = true
		}
		if i == 0 || c.To > w.Heal {
			w.Heal = c.To
		}
		w.Cuts = append(w.Cuts, c)
		for j := range w.Devices {
			w.Devices[j].Moves = c.apply(w.Devices[j].Start, w.Devices[j].Moves)
		}
	}
	for i, r := range s.Revocations {
		d, ok := byName[r.Device]
		if !ok {
			return nil, fmt.Errorf("scenario %s: revocations[%d]: unknown device %q (devices are named group-1, group-2, …, or by the trace's node IDs)", s.Name, i, r.Device)
		}
		w.Revokes = append(w.Revokes, Revoke{At: r.AtHours * 3600, Dev: d})
	}
	if s.MessagesFile != "" {
		if err := w.readMessages(byName); err != nil {
			return nil, err
		}
		return w, nil
	}
	w.conversations()
	if len(w.Convs) == 0 {
		return nil, fmt.Errorf("scenario %s: needs at least two member devices", s.Name)
	}
	var members []int
	for i, c := range w.ConvOf {
		if c >= 0 {
			members = append(members, i)
		}
	}
	for range s.Messages {
		at := rng.Float64() * horizon
		if s.BurstMinutes > 0 {
			at = s.BurstAtHours*3600 + rng.Float64()*s.BurstMinutes*60
		}
		dev := members[rng.IntN(len(members))]
		w.Sends = append(w.Sends, Send{At: at, Dev: dev, Conv: w.ConvOf[dev]})
	}
	sort.SliceStable(w.Sends, func(i, j int) bool { return w.Sends[i].At < w.Sends[j].At })
	return w, nil
}

// readMessages takes the traffic from the scenario's messages file: each
// row's conversation (one-to-one between from and to when unnamed) has
// every device its rows name as members. A device's ConvOf is the first
// conversation it is in.
func (w *World) readMessages(byName map[string]int) error {
	s := w.S
	fh, err := os.Open(s.MessagesFile)
	if err != nil {
		return fmt.Errorf("scenario %s: messages file: %w", s.Name, err)
	}
	defer fh.Close()
	rows, err := parseMessages(fh)
	if err != nil {
		return fmt.Errorf("messages file %s: %w", s.MessagesFile, err)
	}
	w.ConvOf = make([]int, len(w.Devices))
	for i := range w.ConvOf {
		w.ConvOf[i] = -1
	}
	index := map[string]int{}
	join := func(c, d int) {
		if !slices.Contains(w.Convs[c], d) {
			w.Convs[c] = append(w.Convs[c], d)
			if w.ConvOf[d] < 0 {
				w.ConvOf[d] = c
			}
		}
	}
	for _, m := range rows {
		from, ok := byName[m.From]
		if !ok {
			return fmt.Errorf("messages file %s: line %d: unknown device %q", s.MessagesFile, m.Line, m.From)
		}
		to, ok := byName[m.To]
		if !ok && m.To != "" {
			return fmt.Errorf("messages file %s: line %d: unknown device %q", s.MessagesFile, m.Line, m.To)
		}
		if w.Devices[from].Anchor || (ok && w.Devices[to].Anchor) {
			return fmt.Errorf("messages file %s: line %d: an anchor is in no conversation", s.MessagesFile, m.Line)
		}
		if m.At >= s.Hours*3600 {
			return fmt.Errorf("messages file %s: line %d: written at %.0f s, after the run ends (%g h)", s.MessagesFile, m.Line, m.At, s.Hours)
		}
		key := "conversation " + m.Conversation
		if m.Conversation == "" {
			a, b := min(m.From, m.To), max(m.From, m.To)
			key = "one-to-one " + a + "\x00" + b
		}
		c, seen := index[key]
		if !seen {
			c = len(w.Convs)
			index[key] = c
			w.Convs = append(w.Convs, nil)
		}
		join(c, from)
		if ok {
			join(c, to)
		}
		w.Sends = append(w.Sends, Send{At: m.At, Dev: from, Conv: c})
	}
	for c, ms := range w.Convs {
		if len(ms) < 2 {
			return fmt.Errorf("messages file %s: conversation %d has one member: name a recipient", s.MessagesFile, c)
		}
	}
	if len(w.Sends) == 0 {
		return fmt.Errorf("messages file %s: no messages", s.MessagesFile)
	}
	sort.SliceStable(w.Sends, func(i, j int) bool { return w.Sends[i].At < w.Sends[j].At })
	return nil
}

// MultiConversation reports whether a device is in more than one
// conversation (a messages file with one-to-one messages): the DES runs
// such a world, the full engine does not (one conversation per device).
func (w *World) MultiConversation() bool {
	n := make([]int, len(w.Devices))
	for _, ms := range w.Convs {
		for _, m := range ms {
			if n[m]++; n[m] > 1 {
				return true
			}
		}
	}
	return false
}

// namedConversations forms the conversations groups name, in the order
// first named; it reports false when no group names one.
func (w *World) namedConversations() bool {
	index := map[string]int{}
	for i, d := range w.Devices {
		w.ConvOf[i] = -1
		if d.Anchor || d.conv == "" {
			continue
		}
		c, ok := index[d.conv]
		if !ok {
			c = len(w.Convs)
			index[d.conv] = c
			w.Convs = append(w.Convs, nil)
		}
		w.Convs[c] = append(w.Convs[c], i)
		w.ConvOf[i] = c
	}
	return len(index) > 0
}

// conversations groups the member devices: one conversation of all of
// them, or teams of ConversationSize drawn from each group in turn (a
// remainder of one joins the team before it).
func (w *World) conversations() {
	w.ConvOf = make([]int, len(w.Devices))
	if w.namedConversations() {
		return
	}
	k := w.S.ConversationSize
	var cur []int
	flush := func() {
		switch {
		case len(cur) >= 2:
			w.Convs = append(w.Convs, cur)
		case len(cur) == 1 && len(w.Convs) > 0:
			w.Convs[len(w.Convs)-1] = append(w.Convs[len(w.Convs)-1], cur[0])
		}
		cur = nil
	}
	for i, d := range w.Devices {
		if d.Anchor {
			continue
		}
		if k > 0 && i > 0 && w.Devices[i-1].Group != d.Group {
			flush()
		}
		cur = append(cur, i)
		if k > 0 && len(cur) == k {
			flush()
		}
	}
	flush()
	for i := range w.ConvOf {
		w.ConvOf[i] = -1
	}
	for c, ms := range w.Convs {
		for _, m := range ms {
			w.ConvOf[m] = c
		}
	}
}

// visits is the default mobility: a device stays at home and visits the
// other places of its site (Visits per hour, VisitMinutes each on average).
func visits(rng *rand.Rand, s Scenario, g Group, placeIdx map[string]int, t, horizon float64) []Move {
	home := placeIdx[g.Home]
	var out []Move
	for g.Visits > 0 && len(s.Places) > 1 {
		t += expo(rng, 3600/g.Visits)
		if t >= horizon {
			break
		}
		other := home
		for tries := 0; other == home || (tries < 32 && !sameSite(s.Places[other], g.Home)); tries++ {
			other = rng.IntN(len(s.Places))
		}
		out = append(out, Move{t, other})
		t += expo(rng, g.VisitMinutes*60)
		if t >= horizon {
			break
		}
		out = append(out, Move{t, home})
	}
	return out
}

// floor is the hospital floor graph: walking times between places.
type floor struct {
	n    int
	dist [][]float64 // shortest walking time
	next [][]int     // next hop on a shortest path
	pass float64     // seconds spent passing through a place on the way
}

func newFloor(s Scenario, placeIdx map[string]int) (*floor, error) {
	n := len(s.Places)
	f := &floor{n: n, dist: make([][]float64, n), next: make([][]int, n), pass: s.PassSeconds}
	if f.pass == 0 {
		f.pass = 10
	}
	for i := range n {
		f.dist[i], f.next[i] = make([]float64, n), make([]int, n)
		for j := range n {
			f.dist[i][j], f.next[i][j] = math.Inf(1), -1
		}
		f.dist[i][i], f.next[i][i] = 0, i
	}
	for i, e := range s.Floor {
		a, okA := placeIdx[e.A]
		b, okB := placeIdx[e.B]
		if !okA || !okB || e.WalkSeconds <= 0 {
			return nil, fmt.Errorf("scenario %s: floor[%d]: a and b must be places and walk_seconds positive", s.Name, i)
		}
		f.dist[a][b], f.dist[b][a] = e.WalkSeconds, e.WalkSeconds
		f.next[a][b], f.next[b][a] = b, a
	}
	for k := range n { // Floyd–Warshall: floors have tens of places
		for i := range n {
			for j := range n {
				if d := f.dist[i][k] + f.dist[k][j]; d < f.dist[i][j] {
					f.dist[i][j], f.next[i][j] = d, f.next[i][k]
				}
			}
		}
	}
	for i, g := range s.Devices {
		if g.Mobility != "waypoint" {
			continue
		}
		h := placeIdx[g.Home]
		for j := range n {
			if math.IsInf(f.dist[h][j], 1) {
				return nil, fmt.Errorf("scenario %s: devices[%d] (%s): waypoint mobility needs a floor graph joining %s to %s", s.Name, i, g.Name, g.Home, s.Places[j])
			}
		}
	}
	return f, nil
}

// waypoint is random waypoint mobility over the floor graph: pause, pick a
// destination uniformly, walk the shortest path (out of reach on a
// walkway, passing through each place on the way), repeat.
func (f *floor) waypoint(rng *rand.Rand, at int, t, horizon, pause float64) []Move {
	var out []Move
	for f.n > 1 {
		t += expo(rng, pause)
		dest := rng.IntN(f.n - 1)
		if dest >= at {
			dest++
		}
		for at != dest {
			hop := f.next[at][dest]
			out = append(out, Move{t, nowhere})
			t += f.dist[at][hop]
			if t >= horizon {
				return out
			}
			out = append(out, Move{t, hop})
			at = hop
			if at != dest {
				t += f.pass
			}
		}
		if t >= horizon {
			return out
		}
	}
	return out
}

// apply holds back every crossing of the cut while it is active: the
// device waits until it heals (on a walkway: at the fire door), and its
// later moves shift with it.
func (c Cut) apply(start int, moves []Move) []Move {
	out := make([]Move, 0, len(moves))
	shift, last := 0.0, start // last: the last real place
	for _, m := range moves {
		m.At += shift
		if m.Place != nowhere {
			if c.active(m.At) && last != nowhere && c.In[last] != c.In[m.Place] {
				shift += c.To - m.At
				m.At = c.To
			}
			last = m.Place
		}
		out = append(out, m)
	}
	return out
}

// sameSite reports whether two places share a site prefix ("north-ward" and
// "north-ed"); places without a prefix are all one site.
func sameSite(a, b string) bool {
	pa, _, okA := strings.Cut(a, "-")
	pb, _, okB := strings.Cut(b, "-")
	return !okA || !okB || pa == pb
}

// readTrace opens and parses a trace file.
func readTrace(path string) (*trace, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	defer fh.Close()
	tr, err := parseTrace(fh)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return tr, nil
}

// replayTrace replaces generated mobility with a parsed contact trace (see
// trace.go): every device starts out of reach and moves only as its rows
// say; pairwise contacts become Links, ending at the run's end at the
// latest. Devices in no row are noted: they meet nobody.
func (w *World) replayTrace(tr *trace, placeIdx map[string]int) error {
	s := w.S
	byName := map[string]int{}
	for i := range w.Devices {
		byName[w.Devices[i].Name] = i
		w.Devices[i].Moves, w.Devices[i].Start = nil, nowhere
	}
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("trace %s: line %d: %s", s.Trace, line, fmt.Sprintf(format, args...))
	}
	in := make([]bool, len(w.Devices))
	for _, m := range tr.Moves {
		d, okD := byName[m.Dev]
		p, okP := placeIdx[m.Place]
		switch {
		case !okD:
			return bad(m.Line, "unknown device %q", m.Dev)
		case !okP:
			return bad(m.Line, "unknown place %q", m.Place)
		}
		w.Devices[d].Moves = append(w.Devices[d].Moves, Move{m.At, p})
		in[d] = true
	}
	horizon := s.Hours * 3600
	for _, c := range tr.Contacts {
		a, okA := byName[c.A]
		b, okB := byName[c.B]
		if !okA || !okB {
			return bad(c.Line, "unknown device %q or %q", c.A, c.B)
		}
		if c.Up >= horizon {
			continue
		}
		w.Links = append(w.Links, Link{Up: c.Up, Down: min(c.Down, horizon), A: min(a, b), B: max(a, b)})
		in[a], in[b] = true, true
	}
	var absent []string
	for i, ok := range in {
		if !ok {
			absent = append(absent, w.Devices[i].Name)
		}
	}
	if len(absent) > 0 {
		more := ""
		if len(absent) > 5 {
			more, absent = fmt.Sprintf(" and %d more", len(absent)-5), absent[:5]
		}
		verb := "appear in no row: they meet"
		if len(absent) == 1 {
			verb = "appears in no row: it meets"
		}
		w.Notes = append(w.Notes, fmt.Sprintf("trace %s: %s%s %s nobody", s.Trace, strings.Join(absent, ", "), more, verb))
	}
	return nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// recipients are the members of a message's conversation but its sender.
func (w *World) recipients(send Send) []int {
	return slices.DeleteFunc(slices.Clone(w.Convs[send.Conv]), func(d int) bool { return d == send.Dev })
}

// wanUp reports whether a bridge's WAN link works at t (no cut around it).
func (w *World) wanUp(place int, t float64) bool {
	for _, c := range w.Cuts {
		if place != nowhere && c.active(t) && c.In[place] {
			return false
		}
	}
	return true
}
