// Package discovery finds and keeps in touch with peers: a static bootstrap
// list kept connected with exponential backoff, peers learnt from colleagues
// tried a few times, and mDNS on the LAN (service _medmesh._udp). It only
// dials; admission is the node's business. Every goroutine stops on Close.
package discovery

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Backoff bounds.
const (
	minBackoff  = time.Second
	maxBackoff  = time.Minute
	maxTries    = 5 // for peers learnt from others
	dialTimeout = 10 * time.Second
	tick        = 500 * time.Millisecond
)

type target struct {
	ai      peer.AddrInfo
	keep    bool // bootstrap: keep trying forever
	next    time.Time
	backoff time.Duration
	fails   int
	dialing bool
}

// Dialer keeps connections to its targets. One goroutine (loop) owns the
// schedule; mu guards the target table it shares with Keep and Try.
type Dialer struct {
	h      host.Host
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	targets map[peer.ID]*target
}

// NewDialer starts a dialer on h. It stops when ctx is cancelled or on Close.
func NewDialer(ctx context.Context, h host.Host, log *slog.Logger) *Dialer {
	d := &Dialer{h: h, log: log, targets: map[peer.ID]*target{}}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.wg.Add(1)
	go d.loop()
	return d
}

// Keep keeps ai connected: redialled with backoff whenever it drops.
func (d *Dialer) Keep(ai peer.AddrInfo) { d.add(ai, true) }

// Try dials ai now and retries a few times with backoff.
func (d *Dialer) Try(ai peer.AddrInfo) { d.add(ai, false) }

func (d *Dialer) add(ai peer.AddrInfo, keep bool) {
	if ai.ID == d.h.ID() || len(ai.Addrs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.targets[ai.ID]
	if t == nil {
		t = &target{backoff: minBackoff}
		d.targets[ai.ID] = t
	}
	t.ai, t.keep, t.fails, t.next = ai, t.keep || keep, 0, time.Time{}
}

// Close stops the dialer and waits for its dials.
func (d *Dialer) Close() {
	d.cancel()
	d.wg.Wait()
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
		}
	}
}

func (d *Dialer) dialDue() {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, t := range d.targets {
		if t.dialing || now.Before(t.next) {
			continue
		}
		if d.h.Network().Connectedness(id) == network.Connected {
			t.backoff, t.fails = minBackoff, 0
			if !t.keep {
				delete(d.targets, id)
			}
			continue
		}
		t.dialing = true
		d.wg.Add(1)
		go d.dial(t, t.ai) // a copy: Keep and Try may replace t.ai meanwhile
	}
}

func (d *Dialer) dial(t *target, ai peer.AddrInfo) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	err := d.h.Connect(ctx, ai)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	t.dialing = false
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
		delete(d.targets, t.ai.ID)
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
}
