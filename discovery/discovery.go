// Package discovery finds and keeps in touch with peers: a static bootstrap
// list kept connected with exponential backoff, peers learnt from
// colleagues (peer exchange) or mDNS on the LAN (service _medmesh._udp)
// tried a few times. It only dials; admission is the node's business. Every
// goroutine stops on Close.
//
// Peers learnt from others are claims by a third party, and each dial
// costs a connect to whatever address they name, so they are bounded
// (see Try): only addresses the Policy allows, at most MaxLearntAddrs of
// them per peer, at most SourceQuota peers per source and minute, at most
// maxLearntPending waiting and maxLearntDials dialling at once (at most
// maxSourceDials of one source's), taken in turn from each source so one
// source cannot starve another. A peer already waiting is not replaced or
// restarted by a further claim; the addresses of one other source are
// added. Bootstrap peers (Keep) come from the device's own configuration
// and are dialled outside these bounds.
package discovery

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// Backoff bounds.
const (
	minBackoff  = time.Second
	maxBackoff  = time.Minute
	maxTries    = 3 // for peers learnt from others
	dialTimeout = 10 * time.Second
	tick        = 500 * time.Millisecond
)

// Bounds on peers learnt from others.
const (
	// MaxLearntAddrs is how many addresses of a learnt peer are dialled.
	MaxLearntAddrs = 4
	// SourceQuota is how many peers one source may have us take per
	// sourceWindow.
	SourceQuota  = 64
	sourceWindow = time.Minute
	// maxLearntDials learnt dials run at once, at most maxSourceDials of
	// one source's: a dial that hangs holds its slot for dialTimeout, and
	// one hostile source must not hold them all.
	maxLearntDials = 4
	maxSourceDials = 2
	// maxLearntPending learnt peers wait (or retry) at most.
	maxLearntPending = 256
	// maxSources windows are kept (admitted colleagues, and mDNS).
	maxSources = 1024
	// maxClaims sources' addresses are dialled for one learnt peer, at
	// most MaxLearntAddrs of each.
	maxClaims = 2
	// maxKnownDials dials of known colleagues (WithKnown) run at once, on
	// slots of their own: they go first, and no source of strangers —
	// an outsider answering mDNS with made-up peers — can hold them up.
	maxKnownDials = 4
)

// Source is who told us of a peer.
type Source struct {
	// From is the colleague that exchanged the peer; empty for mDNS.
	From peer.ID
	// Loopback: From reached us over loopback, so its loopback addresses
	// are this machine's too.
	Loopback bool
}

type target struct {
	ai      peer.AddrInfo
	keep    bool      // bootstrap: keep trying forever
	source  peer.ID   // learnt: who told us first ("" for mDNS)
	also    []peer.ID // learnt: later sources whose addresses were added
	slot    peer.ID   // learnt, dialling: the source whose slot the dial holds
	seq     uint64    // learnt: order of arrival
	known   bool      // learnt: a known colleague (WithKnown), dialled first
	next    time.Time
	backoff time.Duration
	fails   int
	dialing bool
}

type window struct {
	start time.Time
	n     int
}

// Stats are the dialer's counters.
type Stats struct {
	Pending  int    // learnt peers waiting to be dialled or retried
	InFlight int    // learnt dials running
	Started  uint64 // dials started, learnt and bootstrap
	Refused  uint64 // learnt peers not taken: no allowed address, source over quota, queue full
}

// Option configures a Dialer.
type Option func(*Dialer)

// WithPublic lets learnt peers be dialled at these public IPs (the node's
// configured bootstrap and listen hosts); see Policy.
func WithPublic(ips ...netip.Addr) Option {
	return func(d *Dialer) { d.public = append(d.public, ips...) }
}

// WithKnown marks the peers this node knows as colleagues (its staff
// directory): a known peer, from any source, skips the sources' quotas,
// the queue's bound and the queue itself, and is dialled on slots of its
// own — so strangers' floods never keep colleagues from finding each other.
func WithKnown(known func(peer.ID) bool) Option {
	return func(d *Dialer) { d.known = known }
}

// WithRelays lets learnt peers be dialled through the relays ok allows
// (see Policy.Relay).
func WithRelays(ok func(peer.ID) bool) Option {
	return func(d *Dialer) { d.relay = ok }
}

// Dialer keeps connections to its targets. One goroutine (loop) owns the
// schedule; mu guards the target table and counters it shares with Keep,
// Try and the dials.
type Dialer struct {
	h       host.Host
	log     *slog.Logger
	public  []netip.Addr
	known   func(peer.ID) bool
	relay   func(peer.ID) bool
	connect func(context.Context, peer.AddrInfo) error // h.Connect; tests replace it
	timeout time.Duration                              // dialTimeout; tests shorten it
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{} // a target was added or a slot freed

	mu       sync.Mutex
	targets  map[peer.ID]*target
	sources  map[peer.ID]window
	inflight map[peer.ID]int // learnt dials running, per source
	pending  int             // learnt targets
	knownRun int             // dials of known colleagues running
	seq      uint64
	stats    Stats
}

// NewDialer starts a dialer on h. It stops when ctx is cancelled or on Close.
func NewDialer(ctx context.Context, h host.Host, log *slog.Logger, opts ...Option) *Dialer {
	d := &Dialer{
		h: h, log: log, connect: h.Connect, timeout: dialTimeout, kick: make(chan struct{}, 1),
		targets: map[peer.ID]*target{}, sources: map[peer.ID]window{}, inflight: map[peer.ID]int{},
	}
	for _, o := range opts {
		o(d)
	}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Add(1)
	go d.loop()
	return d
}

// Keep keeps ai connected: redialled with backoff whenever it drops. Its
// addresses are the device's own configuration and are not filtered.
func (d *Dialer) Keep(ai peer.AddrInfo) {
	if ai.ID == d.h.ID() || len(ai.Addrs) == 0 {
		return
	}
	d.mu.Lock()
	t := d.targets[ai.ID]
	switch {
	case t == nil:
		t = &target{backoff: minBackoff}
		d.targets[ai.ID] = t
	case !t.keep:
		d.pending-- // a learnt target becomes a bootstrap one
	}
	t.ai, t.keep, t.fails, t.next = ai, true, 0, time.Time{}
	d.mu.Unlock()
	d.wake()
}

// Try dials ai, which src told us of, and retries a few times with
// backoff. Only the addresses the Policy allows for src are kept (at most
// MaxLearntAddrs); ai is refused when none is left, when src has had its
// SourceQuota this window or when maxLearntPending peers wait already. A
// peer already waiting keeps its schedule and addresses; another source's
// addresses are added (see mergeLocked). Try reports whether ai waits to
// be dialled.
func (d *Dialer) Try(ai peer.AddrInfo, src Source) bool {
	return d.try(ai, src, 0)
}

func (d *Dialer) try(ai peer.AddrInfo, src Source, delay time.Duration) bool {
	if ai.ID == "" || ai.ID == d.h.ID() {
		return false
	}
	pol := Policy{Loopback: src.Loopback, LinkLocal: src.From == "", Public: d.public, Relay: d.relay}
	ai.Addrs = pol.Filter(ai.Addrs, MaxLearntAddrs)
	known := d.known != nil && d.known(ai.ID) // outside mu: it asks the directory
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.targets[ai.ID]; t != nil {
		d.mergeLocked(t, ai, src.From)
		return true
	}
	now := time.Now()
	if known && len(ai.Addrs) > 0 && d.pending < 2*maxLearntPending {
		d.seq++
		d.targets[ai.ID] = &target{ai: ai, source: src.From, seq: d.seq, backoff: minBackoff, next: now.Add(delay), known: true}
		d.pending++
		if delay == 0 {
			d.wakeLocked()
		}
		return true
	}
	w, ok := d.sources[src.From]
	if !ok && len(d.sources) >= maxSources {
		for s, w := range d.sources {
			if now.Sub(w.start) >= sourceWindow {
				delete(d.sources, s)
			}
		}
	}
	switch {
	case len(ai.Addrs) == 0,
		!ok && len(d.sources) >= maxSources,
		ok && now.Sub(w.start) < sourceWindow && w.n >= SourceQuota,
		d.pending >= maxLearntPending:
		d.stats.Refused++
		return false
	}
	if !ok || now.Sub(w.start) >= sourceWindow {
		w = window{start: now}
	}
	w.n++
	d.sources[src.From] = w
	d.seq++
	d.targets[ai.ID] = &target{ai: ai, source: src.From, seq: d.seq, backoff: minBackoff, next: now.Add(delay)}
	d.pending++
	if delay == 0 {
		d.wakeLocked()
	}
	return true
}

// mergeLocked takes a further claim of a peer that waits already: it
// neither replaces nor restarts it, but the addresses of up to
// maxClaims-1 other sources are added, so a hostile colleague naming a
// peer first, at addresses where it is not, cannot keep us from the
// addresses an honest one names. Callers hold d.mu.
//
// A relayed path (an anchor naming a peer that just reserved a slot on it)
// is taken from any source, the first included, up to MaxLearntAddrs
// addresses in all, and brings the next dial forward: the peer was likely
// named first at direct addresses that cannot be reached.
func (d *Dialer) mergeLocked(t *target, ai peer.AddrInfo, from peer.ID) {
	if !t.keep {
		relayed := false
		for _, a := range ai.Addrs {
			if _, ok := relayOf(a); ok && len(t.ai.Addrs) < MaxLearntAddrs && !slices.ContainsFunc(t.ai.Addrs, a.Equal) {
				t.ai.Addrs = append(slices.Clip(t.ai.Addrs), a)
				relayed = true
			}
		}
		if relayed && t.next.After(time.Now()) {
			t.next, t.backoff = time.Now(), minBackoff
			d.wakeLocked()
		}
	}
	if t.keep || from == t.source || slices.Contains(t.also, from) || len(t.also) >= maxClaims-1 {
		return
	}
	added := false
	for _, a := range ai.Addrs {
		if !slices.ContainsFunc(t.ai.Addrs, a.Equal) {
			t.ai.Addrs = append(slices.Clip(t.ai.Addrs), a)
			added = true
		}
	}
	if added {
		t.also = append(t.also, from)
	}
}

// Stats reports the dialer's counters.
func (d *Dialer) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Pending = d.pending
	return s
}

// Close stops the dialer and waits for its dials.
func (d *Dialer) Close() {
	d.cancel()
	d.wg.Wait()
}

func (d *Dialer) wake() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wakeLocked()
}

func (d *Dialer) wakeLocked() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *Dialer) loop() {
	defer d.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		d.dialDue()
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
	}
}

// dialDue starts the dials that are due: every bootstrap target's, and
// learnt ones while fewer than maxLearntDials run, each time from the
// source with the fewest dials running (the oldest target first), never
// more than maxSourceDials of one source.
func (d *Dialer) dialDue() {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var due []*target
	for id, t := range d.targets {
		if t.dialing || now.Before(t.next) {
			continue
		}
		if d.h.Network().Connectedness(id) == network.Connected {
			t.backoff, t.fails = minBackoff, 0
			if !t.keep {
				d.removeLocked(t)
			}
			continue
		}
		if t.keep {
			d.startLocked(t, false)
			continue
		}
		if t.known {
			if d.knownRun < maxKnownDials {
				d.knownRun++
				d.startLocked(t, false)
			}
			continue
		}
		due = append(due, t)
	}
	for d.stats.InFlight < maxLearntDials && len(due) > 0 {
		best, bestSlot := 0, d.slotLocked(due[0])
		for i, t := range due[1:] {
			slot := d.slotLocked(t)
			if fi, fb := d.inflight[slot], d.inflight[bestSlot]; fi < fb || (fi == fb && t.seq < due[best].seq) {
				best, bestSlot = i+1, slot
			}
		}
		if d.inflight[bestSlot] >= maxSourceDials {
			break // the fewest running are at the cap: every source is
		}
		t := due[best]
		due[best] = due[len(due)-1]
		due = due[:len(due)-1]
		t.slot = bestSlot
		d.inflight[bestSlot]++
		d.stats.InFlight++
		d.startLocked(t, true)
	}
}

// slotLocked is the source among those that named t with the fewest dials
// running: a peer an honest colleague names too is not held back by the
// hostile one that named it first. Callers hold d.mu.
func (d *Dialer) slotLocked(t *target) peer.ID {
	slot := t.source
	for _, s := range t.also {
		if d.inflight[s] < d.inflight[slot] {
			slot = s
		}
	}
	return slot
}

// startLocked starts a dial of t, learnt or bootstrap. Callers hold d.mu.
func (d *Dialer) startLocked(t *target, learnt bool) {
	t.dialing = true
	d.stats.Started++
	d.wg.Add(1)
	go d.dial(t, t.ai, learnt, t.fails > 0) // a copy: Keep may replace t.ai meanwhile
}

// removeLocked drops a learnt target. Callers hold d.mu.
func (d *Dialer) removeLocked(t *target) {
	if d.targets[t.ai.ID] == t {
		delete(d.targets, t.ai.ID)
		d.pending--
	}
}

func (d *Dialer) dial(t *target, ai peer.AddrInfo, learnt, retry bool) {
	defer d.wg.Done()
	if retry {
		d.clearBackoff(ai.ID)
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	err := d.connect(ctx, ai)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	t.dialing = false
	if t.known {
		d.knownRun--
		d.wakeLocked()
	}
	if learnt { // its slot is free, even if Keep took the target over meanwhile
		if n := d.inflight[t.slot] - 1; n > 0 {
			d.inflight[t.slot] = n
		} else {
			delete(d.inflight, t.slot)
		}
		d.stats.InFlight--
		d.wakeLocked()
	}
	if err == nil {
		t.backoff, t.fails = minBackoff, 0
		t.next = time.Now().Add(t.backoff)
		return
	}
	d.log.Debug("dial failed", "remote", ai.ID.String(), "err", err)
	t.fails++
	t.next = time.Now().Add(t.backoff)
	t.backoff = min(2*t.backoff, maxBackoff)
	if !t.keep && t.fails >= maxTries {
		d.removeLocked(t)
	}
}

// clearBackoff forgets go-libp2p's own dial backoff for id before a
// retry: this dialer owns the schedule (1 s, 2 s, … for learnt peers),
// and the swarm's backoff after a failed address (5 s and growing) would
// turn our next tries into instant "dial backoff" failures — one
// transient failure, such as a relayed path named a moment before its
// reservation is in place, would use up every try.
func (d *Dialer) clearBackoff(id peer.ID) {
	if sw, ok := d.h.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(id)
	}
}

// RetryNow forgets backoff and dials every target at the next tick (the
// network came back).
func (d *Dialer) RetryNow() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.targets {
		t.next, t.backoff, t.fails = time.Time{}, minBackoff, 0
	}
	d.wakeLocked()
}
