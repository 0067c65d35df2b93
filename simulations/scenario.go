// Package simulations runs reproducible "what if" experiments on a hospital
// mesh with the real protocol code. A Scenario (JSON file or built-in) and
// a seed make a World: every device's moves (visits from home, random
// waypoint over a floor graph, or a replayed contact trace), partitions,
// revocations and messages. Two engines run a World:
//
//   - the discrete-event engine (des.go) in virtual time, seeded and
//     deterministic (the same seed gives byte-identical outputs): devices
//     hold real crdt DAGs per conversation and every meeting runs the real
//     range-based reconciliation state machine of mesh (recon.go); gossip is
//     a model; signature checks and decryption are charged as a calibrated
//     virtual cost (ReceiveCost, the chat ingest benchmark), not computed;
//   - the full-stack engine (full.go): a real node and mesh service per
//     device on a libp2p mocknet, on the wall clock compressed by a stated
//     scale, protocol timers scaled with it.
//
// Metrics follow The ONE simulator: delivery ratio, latency, overhead ratio
// ((relayed − delivered) / delivered), hop count, duplicates, bytes per
// delivered message, storage per node, convergence after a partition heals
// — and beside each latency the oracle (oracle.go): the earliest arrival
// any protocol could achieve through the contact graph, computed with full
// knowledge of future contacts. Envelope bytes count every envelope
// transfer on the wire, apart from reconciliation and summaries.
//
// Routings (Scenario.Routing): medmesh (members and anchors carry a
// conversation), epidemic (everyone carries everything, DES only) and
// medmesh-carry: admitted non-members also carry envelopes, within a
// quota, a TTL and a per-origin share, by binary spray-and-wait or
// PRoPHET (carry.go); the full engine runs the devices' own carriage
// (spray with mesh's defaults) under medmesh-carry and turns it off under
// medmesh. gentrace.go generates the synthetic hospital
// contact trace shipped in testdata (go generate rewrites it, byte for
// byte).
package simulations

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Scenario is a simulation setup. Files are JSON with these fields; the
// built-ins are listed by Builtins.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Hours: simulated time, at most MaxHours (720 h, 30 days). With a
	// trace, a trace running past it is an error, and 0 means the trace's
	// length.
	Hours float64 `json:"hours"`
	// Places: floor graph nodes (a contact = two devices in one place);
	// not needed with a pairwise contact trace.
	Places   []string `json:"places"`
	Devices  []Group  `json:"devices"`  // device groups; none with a trace: the trace's node IDs are the devices
	Messages int      `json:"messages"` // messages sent, at uniformly random times, by random members
	LinkMS   float64  `json:"link_ms"`  // one-way latency of a link
	// LinkKBps: bandwidth of a link in kilobits per second (1 kbit/s =
	// 125 bytes/s; the built-ins' 16384 is 2,048,000 bytes/s, which is
	// what they had when the code read this field as KiB/s). A trace
	// contact carries what its duration at this rate allows, and at least
	// MinContactSeconds' worth (2 MB, about 1,600 ops, at 16384).
	LinkKBps    float64 `json:"link_kbps"`
	SyncSeconds float64 `json:"sync_seconds"` // anti-entropy period while co-located or in contact
	// A burst: all messages are sent within BurstMinutes from BurstAtHours
	// (0 minutes: spread over the whole run).
	BurstAtHours float64 `json:"burst_at_hours"`
	BurstMinutes float64 `json:"burst_minutes"`
	WANMS        float64 `json:"wan_ms"` // one-way latency between bridges
	// Trace replays a contact trace instead of generated mobility, relative
	// to the scenario file: "seconds,device,place" moves,
	// "up_s,down_s,device_a,device_b" contacts or The ONE's
	// "time CONN a b up|down" lines (trace.go says how they are read).
	// Devices are named as the run names them (group-1, group-2, …) or,
	// with no devices listed, by the trace's node IDs. With a trace the
	// seed drives only the traffic.
	Trace string `json:"trace"`
	// MessagesFile: the traffic, instead of Messages generated ones: rows of
	// "created_s,from,to[,conversation]", relative to the scenario file. A
	// row without a conversation is a one-to-one message; the members of
	// a named conversation are every device its rows name. Conversation
	// fields are then unused (it is an error to set them).
	MessagesFile string `json:"messages_file"`
	// Floor: walkways between places, for waypoint mobility.
	Floor       []Edge  `json:"floor"`
	PassSeconds float64 `json:"pass_seconds"` // time spent passing through a place on a walk (default 10)
	// ConversationSize: members are split into team conversations of this
	// size, each group in turn (0: one conversation of all members).
	ConversationSize int `json:"conversation_size"`
	// Partitions cut places off from the rest for a while.
	Partitions []Partition `json:"partitions"`
	// Revocations revoke a device's certificate; the CRL enters the mesh at
	// every anchor outside a partition.
	Revocations []Revocation `json:"revocations"`
	// Routing: "medmesh" (default: members and anchors carry a
	// conversation; range-based reconciliation), "medmesh-carry" (and
	// admitted non-members carry envelopes within bounds, as Carry says;
	// carry.go; the full engine only as the devices do) or "epidemic" (plain epidemic routing, Vahdat &
	// Becker: every device carries everything, summary vectors of every
	// ID) — for comparison.
	Routing string `json:"routing"`
	// Carry: carriage by non-members under routing medmesh-carry (policy
	// spray or prophet, copies, quota_kib, ttl_s, origin_share,
	// urgent_share, prophet_unit_s; zero fields take the defaults).
	Carry Carry `json:"carry"`
}

// LinkBytesPerSecond is the bandwidth of a link in bytes per second.
func (s Scenario) LinkBytesPerSecond() float64 { return s.LinkKBps * 1000 / 8 }

// Edge is a walkway of the floor graph.
type Edge struct {
	A           string  `json:"a"`
	B           string  `json:"b"`
	WalkSeconds float64 `json:"walk_seconds"`
}

// Partition cuts Places off (no device crosses; WANs of bridges inside are
// down) from FromHours until ToHours.
type Partition struct {
	Places    []string `json:"places"`
	FromHours float64  `json:"from_hours"`
	ToHours   float64  `json:"to_hours"`
}

// Revocation revokes Device (named group-N) at AtHours.
type Revocation struct {
	Device  string  `json:"device"`
	AtHours float64 `json:"at_hours"`
}

// Group is a set of devices with one mobility pattern. By default they
// stay at Home and visit the other places of their site (Visits per hour on
// average, each for VisitMinutes on average); with Mobility "waypoint"
// they follow random waypoint over the floor graph (pause PauseMinutes on
// average, pick a place, walk there). An anchor is not a member of any
// conversation (it carries ciphertext).
type Group struct {
	Mobility     string  `json:"mobility"` // "visits" (default) or "waypoint"
	PauseMinutes float64 `json:"pause_minutes"`
	Name         string  `json:"name"`
	Count        int     `json:"count"`
	Home         string  `json:"home"` // not needed with a trace (which says where devices are)
	Visits       float64 `json:"visits_per_hour"`
	VisitMinutes float64 `json:"visit_minutes"`
	Anchor       bool    `json:"anchor"`
	// JoinAtHours: the group is off site (out of every place) until then,
	// and all its devices arrive at Home at that moment.
	JoinAtHours float64 `json:"join_at_hours"`
	// Bridge: an anchor linked to every other bridge over the WAN (always
	// on, WANMS one-way latency): how sites are joined.
	Bridge bool `json:"bridge"`
	// Conversation names the conversation the group's devices are members
	// of: groups naming the same one share it. Set on one group, it is
	// needed on every group of members (and conversation_size is unused).
	Conversation string `json:"conversation"`
}

// Builtins are the scenarios medmesh ships.
var Builtins = map[string]Scenario{
	"basement": {
		Name:        "basement",
		Description: "two junior doctors working in a radiology basement with no signal, six ward staff and a site anchor upstairs; the doctors come up now and then",
		Hours:       8, Places: []string{"basement", "ward", "corridor"},
		Devices: []Group{
			{Name: "basement-doctor", Count: 2, Home: "basement", Visits: 0.75, VisitMinutes: 8},
			{Name: "ward-staff", Count: 6, Home: "ward", Visits: 1, VisitMinutes: 5},
			{Name: "anchor", Count: 1, Home: "ward", Anchor: true},
		},
		Messages: 120, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30,
	},
	"major-incident": {
		Name:        "major-incident",
		Description: "a major incident: 30 staff called in arrive at once, and 300 urgent messages fly within 20 minutes across the ED, resus and theatres",
		Hours:       2, Places: []string{"ed", "resus", "theatres"},
		Devices: []Group{
			{Name: "ed", Count: 10, Home: "ed", Visits: 3, VisitMinutes: 5},
			{Name: "resus", Count: 6, Home: "resus", Visits: 2, VisitMinutes: 5},
			{Name: "theatres", Count: 6, Home: "theatres", Visits: 1, VisitMinutes: 10},
			{Name: "called-in", Count: 30, Home: "ed", Visits: 4, VisitMinutes: 5, JoinAtHours: 0.25},
			{Name: "anchor", Count: 1, Home: "ed", Anchor: true},
		},
		Messages: 300, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30, BurstAtHours: 0.2, BurstMinutes: 20,
	},
	"two-sites": {
		Name:        "two-sites",
		Description: "two hospitals of one trust, joined only by their site anchors over a WAN link with 40 ms latency",
		Hours:       4, Places: []string{"north-ward", "north-ed", "south-ward", "south-ed"},
		Devices: []Group{
			{Name: "north-ward", Count: 4, Home: "north-ward", Visits: 1, VisitMinutes: 10},
			{Name: "north-ed", Count: 4, Home: "north-ed", Visits: 1, VisitMinutes: 10},
			{Name: "south-ward", Count: 4, Home: "south-ward", Visits: 1, VisitMinutes: 10},
			{Name: "south-ed", Count: 4, Home: "south-ed", Visits: 1, VisitMinutes: 10},
			{Name: "north-anchor", Count: 1, Home: "north-ward", Anchor: true, Bridge: true},
			{Name: "south-anchor", Count: 1, Home: "south-ward", Anchor: true, Bridge: true},
		},
		Messages: 200, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30, WANMS: 40,
	},
	"ward-rounds": {
		Name:        "ward-rounds",
		Description: "two devices walk a ring of four wards (random waypoint over the floor graph) and carry messages between wards that never meet (data mules)",
		Hours:       6, Places: []string{"ward-a", "ward-b", "ward-c", "ward-d"},
		Devices: []Group{
			{Name: "ward-a", Count: 3, Home: "ward-a"}, {Name: "ward-b", Count: 3, Home: "ward-b"},
			{Name: "ward-c", Count: 3, Home: "ward-c"}, {Name: "ward-d", Count: 3, Home: "ward-d"},
			{Name: "mule", Count: 2, Home: "ward-a", Mobility: "waypoint", PauseMinutes: 10},
		},
		Floor:    []Edge{{"ward-a", "ward-b", 90}, {"ward-b", "ward-c", 120}, {"ward-c", "ward-d", 90}, {"ward-d", "ward-a", 150}},
		Messages: 200, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30,
	},
	"revocation-partition": {
		Name:        "revocation-partition",
		Description: "a fire door cuts the ED off from the ward for two hours; meanwhile a lost ED phone is revoked at the ward's anchor and keeps writing",
		Hours:       5, Places: []string{"ward", "corridor", "ed"},
		Devices: []Group{
			{Name: "ward", Count: 6, Home: "ward", Visits: 0.5, VisitMinutes: 5},
			{Name: "ed", Count: 5, Home: "ed", Visits: 1, VisitMinutes: 5},
			{Name: "porter", Count: 2, Home: "corridor", Visits: 3, VisitMinutes: 10},
			{Name: "anchor", Count: 1, Home: "ward", Anchor: true},
		},
		Partitions:  []Partition{{Places: []string{"ed"}, FromHours: 1, ToHours: 3}},
		Revocations: []Revocation{{Device: "ed-2", AtHours: 1.5}},
		Messages:    200, LinkMS: 5, LinkKBps: 16384, SyncSeconds: 30,
	},
}

// Names lists the built-in scenarios, sorted.
func Names() []string {
	var out []string
	for n := range Builtins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Load finds a built-in by name or reads a JSON scenario file; errors name
// the field at fault.
func Load(nameOrFile string) (Scenario, error) {
	if s, ok := Builtins[nameOrFile]; ok {
		return s, nil
	}
	raw, err := os.ReadFile(nameOrFile)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario %q: not a built-in (%s) and not a readable file: %w", nameOrFile, strings.Join(Names(), ", "), err)
	}
	var s Scenario
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		line := func(off int64) int { return 1 + strings.Count(string(raw[:min(off, int64(len(raw)))]), "\n") }
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return Scenario{}, fmt.Errorf("%s: line %d: %v", nameOrFile, line(se.Offset), err)
		case errors.As(err, &te):
			return Scenario{}, fmt.Errorf("%s: line %d: field %s: want %s, got %s", nameOrFile, line(te.Offset), te.Field, te.Type, te.Value)
		}
		return Scenario{}, fmt.Errorf("%s: %w", nameOrFile, err)
	}
	if s.Trace != "" && !filepath.IsAbs(s.Trace) {
		s.Trace = filepath.Join(filepath.Dir(nameOrFile), s.Trace)
	}
	if s.MessagesFile != "" && !filepath.IsAbs(s.MessagesFile) {
		s.MessagesFile = filepath.Join(filepath.Dir(nameOrFile), s.MessagesFile)
	}
	return s, s.check()
}

func (s Scenario) check() error {
	traced := s.Trace != ""
	switch {
	case s.Hours < 0 || s.Hours > MaxHours || (s.Hours == 0 && !traced):
		return fmt.Errorf("scenario %s: field hours must be in (0, %d] (0 with a trace: the trace's length)", s.Name, MaxHours)
	case len(s.Places) == 0 && !traced:
		return fmt.Errorf("scenario %s: field places is empty", s.Name)
	case len(s.Devices) == 0 && !traced:
		return fmt.Errorf("scenario %s: field devices is empty (only a trace's node IDs can stand in for it)", s.Name)
	case s.MessagesFile != "" && (s.Messages != 0 || s.ConversationSize != 0 || slices.ContainsFunc(s.Devices, func(g Group) bool { return g.Conversation != "" })):
		return fmt.Errorf("scenario %s: field messages_file replaces messages, conversation_size and conversation: leave them unset", s.Name)
	case s.Messages < 0 || s.Messages > 10_000_000:
		return fmt.Errorf("scenario %s: field messages out of range", s.Name)
	case s.SyncSeconds <= 0:
		return fmt.Errorf("scenario %s: field sync_seconds must be positive", s.Name)
	}
	anchors, named := 0, slices.ContainsFunc(s.Devices, func(g Group) bool { return g.Conversation != "" })
	for i, g := range s.Devices {
		switch {
		case named && !g.Anchor && g.Conversation == "":
			return fmt.Errorf("scenario %s: devices[%d] (%s): field conversation is needed when another group names one", s.Name, i, g.Name)
		case g.Count <= 0 || g.Count > 1_000_000 || (!contains(s.Places, g.Home) && !(traced && g.Home == "")):
			return fmt.Errorf("scenario %s: devices[%d] (%s): count must be positive and home one of places", s.Name, i, g.Name)
		case g.Mobility != "" && g.Mobility != "visits" && g.Mobility != "waypoint":
			return fmt.Errorf("scenario %s: devices[%d] (%s): field mobility must be visits or waypoint", s.Name, i, g.Name)
		case g.Mobility == "waypoint" && (g.PauseMinutes <= 0 || len(s.Floor) == 0):
			return fmt.Errorf("scenario %s: devices[%d] (%s): waypoint mobility needs pause_minutes and a floor graph", s.Name, i, g.Name)
		}
		if g.Anchor {
			anchors++
		}
	}
	members := map[string]int{}
	for _, g := range s.Devices {
		if !g.Anchor && g.Conversation != "" {
			members[g.Conversation] += g.Count
		}
	}
	for name, n := range members {
		if n < 2 {
			return fmt.Errorf("scenario %s: conversation %q: needs at least two member devices", s.Name, name)
		}
	}
	for i, p := range s.Partitions {
		if p.FromHours < 0 || p.ToHours <= p.FromHours || len(p.Places) == 0 {
			return fmt.Errorf("scenario %s: partitions[%d]: needs places and 0 <= from_hours < to_hours", s.Name, i)
		}
		for _, pl := range p.Places {
			if !contains(s.Places, pl) {
				return fmt.Errorf("scenario %s: partitions[%d]: unknown place %q", s.Name, i, pl)
			}
		}
	}
	switch {
	case len(s.Revocations) > 0 && anchors == 0:
		return fmt.Errorf("scenario %s: field revocations needs an anchor (where the CRL enters the mesh)", s.Name)
	case len(s.Revocations) > 255:
		return fmt.Errorf("scenario %s: field revocations: at most 255", s.Name)
	case s.Routing != "" && s.Routing != "medmesh" && s.Routing != "medmesh-carry" && s.Routing != "epidemic":
		return fmt.Errorf("scenario %s: field routing must be medmesh, medmesh-carry or epidemic", s.Name)
	case s.ConversationSize < 0 || s.ConversationSize == 1:
		return fmt.Errorf("scenario %s: field conversation_size must be 0 or at least 2", s.Name)
	case s.LinkKBps <= 0 || s.LinkMS < 0:
		return fmt.Errorf("scenario %s: fields link_kbps must be positive and link_ms not negative", s.Name)
	}
	return s.Carry.check(s)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// expo draws an exponential with the given mean.
func expo(r *rand.Rand, mean float64) float64 { return r.ExpFloat64() * mean }
