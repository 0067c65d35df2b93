package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// Site links: an anchor's connections to the other sites' anchors
// (Config.SitePeers, `run --anchor --site-peers FILE`).
//
//   - Kept: one goroutine (keepSites) owns the links' schedule; a link that
//     is down is dialled again with exponential backoff (siteBackoffMin to
//     siteBackoffMax) and ±20% jitter, so the anchors of several sites do
//     not redial in step after a WAN cut. Connections to site peers are
//     protected in the connection manager. A link that is up is probed
//     (libp2p ping, served to admitted peers only) every siteProbeEvery;
//     a probe unanswered within siteProbeTimeout closes the connection, so
//     a cut WAN shows as down in seconds, not after yamux's keepalive.
//     (Every period here is Config.SiteTiming's: the product's constants
//     by default, shortened by a simulation's compressed clock.)
//   - Not trusted: a site peer is admitted exactly like any other peer
//     (certificate, CRL); until it is, nothing but admission reaches it.
//     Being listed only means we dial it, keep it, and pace what we send it.
//   - Paced: every frame the mesh sends a site peer in sync (offers, wants
//     and envelopes) waits for the link's budget (SiteBudget bytes per
//     second; a token bucket with one second of burst and no debt).
//     Waiting frames are served urgent first, then in arrival order. LAN
//     peers are never paced.
//   - Conversation gossip does not cross a site link (the pubsub peer
//     filter): it could not be paced or put in order. The mesh syncs with
//     its site peers as soon as it takes in something new instead, so a
//     message crosses in one sync session, within the budget.
//   - Not forwarded (sitesPX): peer exchange never names a site peer to
//     anyone, names no peer to a site peer, takes no peer a site peer
//     names, and forwards no address of a peer reached only through a
//     site peer nor any relay path through one. Otherwise this site's
//     devices would dial the other site directly, gossiping and syncing
//     across the WAN outside the link's filter and budget. Directory
//     entries (certificates, prekeys) still cross: they carry no address.
//   - Dialled at the configured addresses whatever they are (a public WAN
//     address, a DNS name): a site peer, like a bootstrap peer, is a peer
//     the operator named (dialPolicy, dialAllowedTo).
//   - Listed on both sides: only the side that lists a peer paces what it
//     sends and filters gossip. An anchor listed by another but not
//     listing it back gossips and syncs with it as with a LAN peer; list
//     each link at both ends (the gossip filter of the listing side alone
//     keeps conversation topics off the link, since it announces none).

// Site link timing and defaults.
const (
	// DefaultSiteBudget is a WAN link's budget when none is configured:
	// 256 KiB/s, a fifth of a 10 Mbit/s inter-site line.
	DefaultSiteBudget = 256 << 10
	// MinSiteBudget is the least budget `run --site-budget` takes: 8 KiB/s
	// moves a 1 MiB envelope (e2e.MaxEnvelope) in about two minutes.
	MinSiteBudget     = 8 << 10
	siteBackoffMin    = time.Second
	siteBackoffMax    = time.Minute
	siteCheck         = time.Second
	siteProbeEvery    = 5 * time.Second
	siteProbeTimeout  = 5 * time.Second
	siteDialTimeout   = 10 * time.Second
	siteFirstDialWait = 3 * time.Second
	siteBurst         = time.Second
	maxSitePeers      = 64
	maxSiteFileBytes  = 1 << 20
)

// SiteTiming is the site links' timing (Config.SiteTiming). A zero field
// takes the product's default (in brackets); simulations on a compressed
// clock shorten them by their scale.
type SiteTiming struct {
	Check         time.Duration // how often the links' schedule runs [1 s]
	ProbeEvery    time.Duration // ping period of a link that is up [5 s]
	ProbeTimeout  time.Duration // silence that takes a link down [5 s]
	BackoffMin    time.Duration // first redial backoff [1 s]
	BackoffMax    time.Duration // longest redial backoff [1 min]
	DialTimeout   time.Duration // one dial [10 s]
	FirstDialWait time.Duration // the higher peer ID's wait before its first dial [3 s]
	DirEvery      time.Duration // least time between directory forwards to a site peer [5 s]
	Burst         time.Duration // the budget's bucket holds this much of the rate [1 s]
}

// withDefaults fills the zero fields with the product's timing.
func (t SiteTiming) withDefaults() SiteTiming {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Check, siteCheck)
	def(&t.ProbeEvery, siteProbeEvery)
	def(&t.ProbeTimeout, siteProbeTimeout)
	def(&t.BackoffMin, siteBackoffMin)
	def(&t.BackoffMax, siteBackoffMax)
	def(&t.DialTimeout, siteDialTimeout)
	def(&t.FirstDialWait, siteFirstDialWait)
	def(&t.DirEvery, siteDirEvery)
	def(&t.Burst, siteBurst)
	return t
}

// ParseSitePeers reads a site-peers file: one multiaddr with /p2p/PEER_ID
// per line; '#' starts a comment; blank lines are ignored. An error names
// the line.
func ParseSitePeers(r io.Reader) ([]peer.AddrInfo, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxSiteFileBytes))
	byID := map[peer.ID]int{}
	var out []peer.AddrInfo
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w: %v", line, ErrSitePeer, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil || len(ai.Addrs) == 0 {
			return nil, fmt.Errorf("line %d: %w: needs an address and /p2p/PEER_ID", line, ErrSitePeer)
		}
		if i, ok := byID[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		if len(out) >= maxSitePeers {
			return nil, fmt.Errorf("line %d: %w: more than %d site peers", line, ErrSitePeer, maxSitePeers)
		}
		byID[ai.ID] = len(out)
		out = append(out, *ai)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read site peers: %w", err)
	}
	return out, nil
}

// SiteLink is one site link's state (GET /api/v1/sites).
type SiteLink struct {
	Peer          string    `json:"peer"`
	Addrs         []string  `json:"addrs"`
	Up            bool      `json:"up"`
	Since         time.Time `json:"since"`
	QueuedBytes   int64     `json:"queued_bytes"`
	SentBytes     int64     `json:"sent_bytes"`
	ReceivedBytes int64     `json:"received_bytes"`
	LastSync      time.Time `json:"last_sync"`
}

// siteLink is one link; its fields are guarded by sites.mu, the pacer's
// by its own mutex.
type siteLink struct {
	ai       peer.AddrInfo
	up       bool
	since    time.Time
	lastSync time.Time
	received int64
	next     time.Time // next dial
	backoff  time.Duration
	dialing  bool
	probing  bool
	probed   time.Time
	pace     *pacer
	dirBusy  bool // a directory forward runs (forwardSite)
	dirAgain bool // and another is due after it
}

// sites is the node's site links. mu guards the links' fields; the set of
// links is fixed at start.
type sites struct {
	mu    sync.Mutex
	links map[peer.ID]*siteLink
	order []peer.ID
	t     SiteTiming // fixed at start
}

func newSites(self peer.ID, peers []peer.AddrInfo, budget int64, t SiteTiming, now time.Time) *sites {
	if budget <= 0 {
		budget = DefaultSiteBudget
	}
	t = t.withDefaults()
	s := &sites{links: map[peer.ID]*siteLink{}, t: t}
	for _, ai := range peers {
		if _, ok := s.links[ai.ID]; ok {
			continue
		}
		l := &siteLink{ai: ai, since: now, backoff: t.BackoffMin, pace: newPacer(float64(budget), t.Burst.Seconds()*float64(budget), now)}
		if self > ai.ID {
			// Two anchors that list each other start together: the lower
			// ID dials first, so their dials do not meet as one
			// simultaneous-open TCP connection (REFERENCES, pitfalls).
			l.next = time.Now().Add(t.FirstDialWait)
		}
		s.links[ai.ID] = l
		s.order = append(s.order, ai.ID)
	}
	return s
}

// IsSitePeer reports whether p is one of this anchor's site peers (listed,
// not necessarily admitted), or an anchor that announced a site link to
// this node (sitelink.go; not paced here: the listing side paces).
func (n *Node) IsSitePeer(p peer.ID) bool {
	if n.sites != nil {
		if _, ok := n.sites.links[p]; ok {
			return true
		}
	}
	return n.announcedSite(p)
}

// PaceSite waits until size bytes may be sent to site peer p (urgent ones
// first), or ctx ends. For any other peer it returns at once.
func (n *Node) PaceSite(ctx context.Context, p peer.ID, size int, urgent bool) error {
	if n.sites == nil {
		return nil
	}
	l := n.sites.links[p]
	if l == nil {
		return nil
	}
	return l.pace.wait(ctx, size, urgent)
}

// SiteReceived counts bytes received from site peer p.
func (n *Node) SiteReceived(p peer.ID, size int) {
	if l := n.siteLink(p); l != nil {
		n.sites.mu.Lock()
		l.received += int64(size)
		n.sites.mu.Unlock()
	}
}

// SiteSynced records a complete sync session with site peer p.
func (n *Node) SiteSynced(p peer.ID) {
	if l := n.siteLink(p); l != nil {
		n.sites.mu.Lock()
		l.lastSync = n.cfg.Now()
		n.sites.mu.Unlock()
	}
}

func (n *Node) siteLink(p peer.ID) *siteLink {
	if n.sites == nil {
		return nil
	}
	return n.sites.links[p]
}

// SiteLinks reports every site link, in the order configured (empty on a
// node with none).
func (n *Node) SiteLinks() []SiteLink {
	out := []SiteLink{}
	if n.sites == nil {
		return out
	}
	n.sites.mu.Lock()
	defer n.sites.mu.Unlock()
	for _, id := range n.sites.order {
		l := n.sites.links[id]
		queued, sent := l.pace.stats()
		v := SiteLink{Peer: id.String(), Up: l.up, Since: l.since, QueuedBytes: queued, SentBytes: sent,
			ReceivedBytes: l.received, LastSync: l.lastSync, Addrs: []string{}}
		for _, a := range l.ai.Addrs {
			v.Addrs = append(v.Addrs, a.String())
		}
		out = append(out, v)
	}
	return out
}

// startSites serves ping to admitted peers on an anchor (the probe of the
// site links other anchors keep to it), and on one with site peers
// protects their connections and starts keepSites.
func (n *Node) startSites() {
	n.words.init()
	n.host.SetStreamHandler(ProtoSiteLink, n.owned(n.gate(n.handleSiteLink)))
	if n.sites == nil && !n.cfg.Relay {
		return
	}
	ps := &ping.PingService{Host: n.host}
	n.host.SetStreamHandler(ping.ID, n.owned(n.gate(ps.PingHandler)))
	if n.sites == nil {
		return
	}
	for _, id := range n.sites.order {
		n.host.ConnManager().Protect(id, "medmesh-site")
	}
	n.goOwned(n.keepSites)
}

// siteConnected and siteDisconnected follow the links' state (network
// notifications).
func (n *Node) siteConnected(p peer.ID) {
	l := n.siteLink(p)
	if l == nil {
		return
	}
	n.sites.mu.Lock()
	if !l.up {
		l.up, l.since = true, n.cfg.Now()
		l.backoff = n.sites.t.BackoffMin
		l.probed = time.Now()
	}
	n.sites.mu.Unlock()
}

func (n *Node) siteDisconnected(p peer.ID) {
	l := n.siteLink(p)
	if l == nil || n.host.Network().Connectedness(p) == network.Connected {
		return
	}
	n.sites.mu.Lock()
	if l.up {
		l.up, l.since = false, n.cfg.Now()
		l.next = time.Now() // redial at once, then back off
	}
	n.sites.mu.Unlock()
}

// keepSites owns the links' schedule until the node stops: dial the links
// that are down when due, probe the ones that are up.
func (n *Node) keepSites() {
	t := time.NewTicker(n.sites.t.Check)
	defer t.Stop()
	for {
		n.siteTick(time.Now())
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) siteTick(now time.Time) {
	n.sites.mu.Lock()
	defer n.sites.mu.Unlock()
	for _, id := range n.sites.order {
		l := n.sites.links[id]
		connected := n.host.Network().Connectedness(id) == network.Connected
		switch {
		case connected && !l.up:
			l.up, l.since, l.backoff, l.probed = true, n.cfg.Now(), n.sites.t.BackoffMin, now
		case !connected && l.up:
			l.up, l.since, l.next = false, n.cfg.Now(), now
		}
		if connected {
			if !l.probing && now.Sub(l.probed) >= n.sites.t.ProbeEvery && n.isAdmitted(id) {
				l.probing = true
				n.goOwned(func() { n.probeSite(id, l) })
			}
			continue
		}
		if l.dialing || now.Before(l.next) {
			continue
		}
		l.dialing = true
		ai := l.ai
		n.goOwned(func() { n.dialSite(ai, l) })
	}
}

// dialSite dials a link that is down and schedules the next try.
func (n *Node) dialSite(ai peer.AddrInfo, l *siteLink) {
	ctx, cancel := context.WithTimeout(n.ctx, n.sites.t.DialTimeout)
	err := n.host.Connect(ctx, ai)
	cancel()
	n.sites.mu.Lock()
	defer n.sites.mu.Unlock()
	l.dialing = false
	if err == nil {
		l.backoff = n.sites.t.BackoffMin
		return
	}
	n.log.Debug("site peer dial failed", "remote", ai.ID.String(), "err", err)
	l.next = time.Now().Add(jitter(l.backoff))
	l.backoff = min(2*l.backoff, n.sites.t.BackoffMax)
}

// jitter is d ±20%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

// probeSite pings a link that is up; no answer closes its connections
// (the link shows down and is dialled again).
func (n *Node) probeSite(id peer.ID, l *siteLink) {
	ctx, cancel := context.WithTimeout(n.ctx, n.sites.t.ProbeTimeout)
	results := ping.Ping(ctx, n.host, id)
	// Any answer within the timeout — a pong, or a refusal (a peer that
	// does not serve ping to us) — shows the link carries; only silence
	// means it is down.
	var ok bool
	select {
	case <-results:
		ok = ctx.Err() == nil
	case <-ctx.Done():
	}
	cancel()
	for range results { // ping's goroutine ends, and closes it
	}
	n.sites.mu.Lock()
	l.probing, l.probed = false, time.Now()
	n.sites.mu.Unlock()
	if !ok && n.ctx.Err() == nil {
		n.log.Info("site peer unanswered: link down", "remote", id.String())
		n.host.Network().ClosePeer(id)
	}
}

// gossipsWith is the pubsub peer filter: admitted peers only, and with a
// site peer the trust topic only (conversation gossip does not cross a
// site link).
func (n *Node) gossipsWith(id peer.ID, topic string) bool {
	return n.isAdmitted(id) && (!n.IsSitePeer(id) || topic == TrustTopic)
}

// viaSitePeer reports whether a is a relay path through a site peer
// (…/p2p/SITE_PEER/p2p-circuit…).
func (n *Node) viaSitePeer(a ma.Multiaddr) bool {
	if n.sites == nil {
		return false
	}
	for i, c := range a {
		if c.Code() == ma.P_CIRCUIT && i > 0 && a[i-1].Code() == ma.P_P2P {
			r, err := peer.IDFromBytes(a[i-1].RawValue())
			return err == nil && n.IsSitePeer(r)
		}
	}
	return false
}

// acrossSite reports whether every connection to id is relayed through a
// site peer: id is at the other site, reached across the site link.
func (n *Node) acrossSite(id peer.ID) bool {
	if n.sites == nil {
		return false
	}
	conns := n.host.Network().ConnsToPeer(id)
	for _, c := range conns {
		if !n.viaSitePeer(c.RemoteMultiaddr()) {
			return false
		}
	}
	return len(conns) > 0
}

// bridgeDirectory carries directory entries across a site link: entries
// new to this anchor that a site peer sent go to every other admitted
// peer, and ones a peer of this site sent go to the site peers — each a
// sync of what changed since that peer last took our directory. Without
// it a colleague at the other site stays unknown (no prekey to seal a
// welcome to) to the devices admitted before the link came up. fresh is
// what the exchange changed in our directory (verified entries only), and
// a site peer gets at most one forward at a time and one per
// siteDirEvery: what arrives meanwhile goes in the next (forwardSite).
func (n *Node) bridgeDirectory(from peer.ID, fresh int) {
	if n.sites == nil || fresh == 0 {
		return
	}
	site := n.IsSitePeer(from)
	for _, o := range n.adm.admittedPeers(from) {
		if l := n.siteLink(o); l != nil {
			n.forwardSite(o, l)
		} else if site {
			n.goOwned(func() { n.sendDirectory(o) })
		}
	}
}

// siteDirEvery is the least time between two directory forwards to one
// site peer.
const siteDirEvery = 5 * time.Second

// forwardSite syncs our directory to site peer o now, or, if a forward to
// it is running or was sent less than siteDirEvery ago, once more after.
func (n *Node) forwardSite(o peer.ID, l *siteLink) {
	n.sites.mu.Lock()
	if l.dirBusy {
		l.dirAgain = true
		n.sites.mu.Unlock()
		return
	}
	l.dirBusy = true
	n.sites.mu.Unlock()
	n.goOwned(func() {
		every := n.sites.t.DirEvery
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			n.sendDirectory(o)
			select {
			case <-t.C:
			case <-n.ctx.Done():
				return
			}
			n.sites.mu.Lock()
			again := l.dirAgain
			l.dirAgain, l.dirBusy = false, again
			n.sites.mu.Unlock()
			if !again {
				return
			}
			t.Reset(every)
		}
	})
}

// pacer is a token bucket whose waiters are served urgent first, then in
// arrival order. mu guards every field.
type pacer struct {
	mu      sync.Mutex
	rate    float64 // bytes per second
	burst   float64
	tokens  float64
	last    time.Time
	queue   []*paceWaiter
	queued  int64
	sent    int64
	changed chan struct{} // closed and replaced when the queue changes
	now     func() time.Time
}

type paceWaiter struct {
	n      int
	urgent bool
}

func newPacer(rate, burst float64, now time.Time) *pacer {
	return &pacer{rate: rate, burst: burst, tokens: burst, last: now, changed: make(chan struct{}), now: time.Now}
}

func (p *pacer) stats() (queued, sent int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued, p.sent
}

// wait takes n bytes of the budget, waiting its turn: behind the urgent
// waiters when urgent, behind every waiter otherwise. A frame larger than
// the burst takes it a burst at a time.
func (p *pacer) wait(ctx context.Context, n int, urgent bool) error {
	w := &paceWaiter{n: n, urgent: urgent}
	left := float64(n)
	p.mu.Lock()
	at := len(p.queue)
	if urgent {
		at = 0
		for at < len(p.queue) && p.queue[at].urgent {
			at++
		}
	}
	p.queue = append(p.queue, nil)
	copy(p.queue[at+1:], p.queue[at:])
	p.queue[at] = w
	p.queued += int64(n)
	p.notifyLocked()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var delay time.Duration = -1
		if p.queue[0] == w {
			now := p.now()
			p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
			p.last = now
			// A frame larger than the burst is taken a burst at a time
			// (at the head of the queue, but for urgent ones arriving), so
			// the bucket never goes into debt: what has gone out is never
			// more than one burst plus the rate times the time elapsed.
			need := min(left, p.burst)
			if p.tokens >= need {
				p.tokens -= need
				if left -= need; left > 0 {
					continue
				}
				p.removeLocked(w)
				p.sent += int64(n)
				p.mu.Unlock()
				return nil
			}
			delay = time.Duration((need - p.tokens) / p.rate * float64(time.Second))
		}
		ch := p.changed
		p.mu.Unlock()
		var tc <-chan time.Time
		if delay >= 0 {
			if timer == nil {
				timer = time.NewTimer(delay)
			} else {
				timer.Reset(delay)
			}
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.removeLocked(w)
			p.mu.Unlock()
			return ctx.Err()
		case <-ch:
		case <-tc:
		}
		p.mu.Lock()
	}
}

// removeLocked takes w off the queue and wakes the others.
func (p *pacer) removeLocked(w *paceWaiter) {
	for i, x := range p.queue {
		if x == w {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			p.queued -= int64(w.n)
			break
		}
	}
	p.notifyLocked()
}

func (p *pacer) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}
