package simulations

import (
	"time"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/crdt"
)

// Message is one message's fate at one recipient.
type Message struct {
	ID        int
	From, To  string
	Sent      float64
	Delivered float64 // -1 if never
	Oracle    float64 // -1 if no path existed
	Hops      int
}

// Result is what a run produced. Both engines fill it the same way.
type Result struct {
	World      *World
	Engine     string
	Messages   []Message
	Relayed    int // ops handed to another device and taken in
	Duplicates int // copies received of ops already held (dropped)
	Bytes      int64
	// EnvelopeBytes: the part of Bytes that is envelopes (ops) themselves,
	// every transfer counted, carriage included (DES).
	EnvelopeBytes int64
	// Carriage, under routing medmesh-carry (DES): per device, what it
	// carried for conversations it is not in.
	Carriage  []CarrierLoad
	ReconMsgs int
	Storage   map[string]int64
	Events    int
	Wall      time.Duration
	// Convergence, when the scenario has a partition: for every member
	// device, the seconds after the last heal at which it held every op of
	// its conversation written before the heal (-1: never).
	Convergence []float64
	Revocations []RevocationOutcome
	// TimeScale: scenario seconds per wall-clock second (full engine);
	// Lag: the most scenario seconds an event ran late (the machine could
	// not keep up with the compression); a message counts as late until
	// its device has written it.
	TimeScale, Lag float64
	// LagBy (full engine): the lag of each of LagParts equal parts of the
	// run, in order — whether the machine fell behind once (devices
	// meeting for the first time at the start) or all along (more work
	// per scenario second than it can do).
	LagBy []float64

	// Failures: what the full engine could not do (a message not written, a
	// CRL not issued or not taken by an anchor).
	Failures []string

	// SyncByFrame (full engine): the sync bytes written by frame kind,
	// and "gossip" the gossip RPC bytes (the parts of Bytes).
	SyncByFrame map[string]int64

	// Full engine, bridges on site links (two or more bridges): each
	// change of a bridge's site link, the bytes each bridge sent on its
	// links, and the conversation gossip messages one bridge sent another
	// (0: gossip does not cross a site link).
	SiteLinks []SiteLinkChange
	SiteBytes map[string]int64
	WANGossip int64

	sentIDs []crdt.OpID // full engine: each message's op ID
	// Full engine, while the events ran (from time 0 to the end): the
	// process's CPU time (user and system, every device together), and
	// the (op, device) pairs taken in — every op (messages, receipts,
	// welcomes) once per device that took it in from a peer.
	cpu       time.Duration
	delivered int
	sessions  int64 // sync sessions the devices opened, the whole run
}

// LagParts is how many equal parts of a run Result.LagBy reports the lag of.
const LagParts = 12

// CarrierLoad is what carriage cost one device: the most envelope bytes
// its bag held, and the envelope bytes it sent from its bag (to members,
// anchors and other carriers) and received into it.
type CarrierLoad struct {
	Device         string
	PeakBytes      int64
	Sent, Received int64
}

// RevocationOutcome is how one revocation spread, and what the revoked
// device managed meanwhile.
type RevocationOutcome struct {
	Device string
	At     float64
	// Learnt: seconds after the revocation at which each other device on
	// site held the CRL (-1: never).
	Learnt []float64
	// Sent: messages the device wrote after its revocation; Shown: the
	// (message, recipient) pairs that arrived before the recipient held
	// the CRL (shown until it arrives); Standing: its messages (of the
	// whole run) that stand once every replica has everything, because an
	// unrevoked member's later op depends on them.
	Sent, Shown, Standing int
}

func newResult(w *World, engine string) *Result {
	return &Result{World: w, Engine: engine, Storage: map[string]int64{}}
}

// outcome fills the per-message rows (with the oracle), convergence and
// revocation outcomes from what each device received: got(dev, key) is
// the arrival of message key (or of revocation r's CRL, key crlKey(r));
// deps are each message's direct dependencies.
func (w *World) outcome(res *Result, got func(dev int, key int32) (arrival, bool), deps [][]int32) {
	revokedAt := map[int]float64{}
	for _, r := range w.Revokes {
		if t, ok := revokedAt[r.Dev]; !ok || r.At < t {
			revokedAt[r.Dev] = r.At
		}
	}
	excluded := func(dev int, t float64) bool {
		at, ok := revokedAt[dev]
		return ok && t >= at
	}
	o := newOracle(w)
	for i, m := range w.Sends {
		if excluded(m.Dev, m.At) {
			continue // counted in the revocation outcome
		}
		rcpt := w.recipients(m)
		arr := o.arrivals(m.Dev, m.At, rcpt)
		for _, r := range rcpt {
			if excluded(r, m.At) {
				continue
			}
			row := Message{ID: i, From: w.Devices[m.Dev].Name, To: w.Devices[r].Name, Sent: m.At, Delivered: -1, Oracle: arr[r]}
			if a, ok := got(r, int32(i)); ok {
				row.Delivered, row.Hops = a.at, int(a.hops)
			}
			res.Messages = append(res.Messages, row)
		}
	}
	if w.Heal >= 0 {
		before := make([][]int32, len(w.Convs)) // per conversation: messages written before the heal
		for i, m := range w.Sends {
			if m.At >= w.Heal {
				break
			}
			before[m.Conv] = append(before[m.Conv], int32(i))
		}
		for c, members := range w.Convs {
			for _, d := range members {
				if _, ok := revokedAt[d]; ok {
					continue
				}
				last := w.Heal
				for _, i := range before[c] {
					a, ok := got(d, i)
					if !ok {
						last = -1
						break
					}
					last = max(last, a.at)
				}
				if last >= 0 {
					last -= w.Heal
				}
				res.Convergence = append(res.Convergence, last)
			}
		}
	}

	children := make([][]int32, len(w.Sends))
	for i, ds := range deps {
		for _, d := range ds {
			children[d] = append(children[d], int32(i))
		}
	}
	childrenOf := func(i int32) []int32 { return children[i] }
	revokedSend := func(i int32) bool { _, r := revokedAt[w.Sends[i].Dev]; return r }
	for r, rv := range w.Revokes {
		out := RevocationOutcome{Device: w.Devices[rv.Dev].Name, At: rv.At}
		learnt := make([]float64, len(w.Devices))
		for d := range w.Devices {
			learnt[d] = -1
			if a, ok := got(d, crlKey(r)); ok {
				learnt[d] = a.at
			}
			if d != rv.Dev {
				l := learnt[d]
				if l >= 0 {
					l -= rv.At
				}
				out.Learnt = append(out.Learnt, l)
			}
		}
		for i, m := range w.Sends {
			if m.Dev != rv.Dev || m.At < rv.At {
				continue
			}
			out.Sent++
			for _, d := range w.recipients(m) {
				if a, ok := got(d, int32(i)); ok && (learnt[d] < 0 || a.at < learnt[d]) {
					out.Shown++
				}
			}
		}
		// A revoked author's op stands if an op of an unrevoked author
		// descends from it: the product's own rule (chat.Endorsed), over
		// the whole DAG.
		for i, m := range w.Sends {
			if m.Dev == rv.Dev && chat.Endorsed(int32(i), childrenOf, func(j int32) bool { return !revokedSend(j) }) {
				out.Standing++
			}
		}
		res.Revocations = append(res.Revocations, out)
	}
}
