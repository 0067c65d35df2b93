package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// withConnect replaces the dial (h.Connect) with f.
func withConnect(f func(context.Context, peer.AddrInfo) error) Option {
	return func(d *Dialer) { d.connect = f }
}

func withTimeout(d time.Duration) Option { return func(dl *Dialer) { dl.timeout = d } }

// hangingDials records every dial and holds it until its context ends,
// release is closed or the test frees one dial through free; dials of the
// peers in pass succeed at once.
type hangingDials struct {
	release chan struct{}
	free    chan struct{} // nil: no dial is freed one at a time
	mu      sync.Mutex
	dialled []peer.AddrInfo
	running int
	most    int
	pass    map[peer.ID]bool
}

func (h *hangingDials) connect(ctx context.Context, ai peer.AddrInfo) error {
	h.mu.Lock()
	h.dialled = append(h.dialled, ai)
	h.running++
	h.most = max(h.most, h.running)
	ok := h.pass[ai.ID]
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running--
		h.mu.Unlock()
	}()
	if ok {
		return nil
	}
	select {
	case <-ctx.Done():
	case <-h.release:
	case <-h.free:
	}
	return context.DeadlineExceeded
}

func (h *hangingDials) dialledPeer(id peer.ID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ai := range h.dialled {
		if ai.ID == id {
			return true
		}
	}
	return false
}

// fakePeer is a learnt peer with hostile and private addresses mixed.
func fakePeer(i int) peer.AddrInfo {
	ai := peer.AddrInfo{ID: peer.ID(fmt.Sprintf("fake-%d", i))}
	for j := range 8 {
		for _, s := range []string{
			fmt.Sprintf("/ip4/8.8.%d.%d/tcp/53", i%256, j),
			fmt.Sprintf("/dns4/victim-%d.example/tcp/80", j),
			"/ip4/224.0.0.1/tcp/4001",
			fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i/256, i%256, j),
		} {
			ai.Addrs = append(ai.Addrs, ma.StringCast(s))
		}
	}
	return ai
}

// TestTryBounds: a colleague naming 4,096 peers of 32 addresses each,
// whose dials all hang, gets SourceQuota of them taken, never more than
// maxLearntDials dialled at once, at most MaxLearntAddrs private addresses
// from each of two sources and nothing the policy refuses; a further claim
// of a waiting peer does not replace it; and a peer another colleague names is dialled while
// the flood's dials hang. A hung dial holds its slot until the test frees
// it (as the dial timeout would), so no step depends on how fast the
// machine runs the flood.
func TestTryBounds(t *testing.T) {
	h := newHost(t)
	hd := &hangingDials{release: make(chan struct{}), free: make(chan struct{}), pass: map[peer.ID]bool{"honest": true}}
	d := NewDialer(context.Background(), h, slog.New(slog.DiscardHandler), withConnect(hd.connect), withTimeout(time.Hour))
	t.Cleanup(func() { close(hd.release); d.Close() })

	goroutines := runtime.NumGoroutine()
	attacker := Source{From: "attacker"}
	taken := 0
	for i := range 4096 {
		if d.Try(fakePeer(i), attacker) {
			taken++
		}
	}
	if taken != SourceQuota {
		t.Fatalf("took %d peers from one source, want its quota %d", taken, SourceQuota)
	}
	waitFor(t, 5*time.Second, "the source's dial slots filled", func() bool { return d.Stats().InFlight == maxSourceDials })
	// Further claims of a waiting peer keep its schedule and its first
	// source's addresses; one other source's addresses are added (a
	// hostile colleague naming a peer first cannot hide where an honest
	// one says it is), the same source's and a third source's are not.
	d.mu.Lock()
	waiting := *d.targets["fake-10"]
	d.mu.Unlock()
	for _, c := range []struct {
		addr string
		src  peer.ID
	}{{"/ip4/10.99.99.1/tcp/1", "attacker"}, {"/ip4/10.99.99.2/tcp/1", "other"}, {"/ip4/10.99.99.3/tcp/1", "third"}} {
		if !d.Try(peer.AddrInfo{ID: "fake-10", Addrs: []ma.Multiaddr{ma.StringCast(c.addr)}}, Source{From: c.src}) {
			t.Fatal("a peer waiting already was refused")
		}
	}
	d.mu.Lock()
	again := *d.targets["fake-10"]
	d.mu.Unlock()
	if again.seq != waiting.seq || again.source != "attacker" || len(again.ai.Addrs) != len(waiting.ai.Addrs)+1 ||
		!again.ai.Addrs[0].Equal(waiting.ai.Addrs[0]) || again.ai.Addrs[len(again.ai.Addrs)-1].String() != "/ip4/10.99.99.2/tcp/1" {
		t.Fatalf("further claims made %v of %v", again.ai.Addrs, waiting.ai.Addrs)
	}
	st := d.Stats()
	if st.Pending != SourceQuota || st.Refused != 4096-SourceQuota || st.Started != maxSourceDials {
		t.Fatalf("stats after the flood: %+v", st)
	}
	if g := runtime.NumGoroutine() - goroutines; g > maxLearntDials+8 {
		t.Fatalf("%d goroutines more after the flood", g)
	}

	// An honest colleague names a peer: one hostile source holds at most
	// maxSourceDials slots, so it is dialled at once.
	honest := peer.AddrInfo{ID: "honest", Addrs: []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.7/tcp/4001")}}
	if !d.Try(honest, Source{From: "colleague"}) {
		t.Fatal("honest peer refused")
	}
	waitFor(t, 5*time.Second, "honest peer dialled while the flood's dials hang", func() bool { return hd.dialledPeer("honest") })

	// Two hostile sources hold every slot; a peer an honest colleague names
	// is dialled when the first slot frees, before their next peers.
	for i := range 8 {
		d.Try(fakePeer(10000+i), Source{From: "accomplice"})
	}
	waitFor(t, 5*time.Second, "every learnt dial slot filled", func() bool { return d.Stats().InFlight == maxLearntDials })
	hd.mu.Lock()
	before := len(hd.dialled)
	hd.mu.Unlock()
	second := peer.AddrInfo{ID: "honest-2", Addrs: []ma.Multiaddr{ma.StringCast("/ip4/192.168.1.8/tcp/4001")}}
	hd.mu.Lock()
	hd.pass["honest-2"] = true
	hd.mu.Unlock()
	d.Try(second, Source{From: "colleague"})
	if hd.dialledPeer("honest-2") {
		t.Fatal("second honest peer dialled while every slot was held")
	}
	for freed := 0; !hd.dialledPeer("honest-2"); freed++ {
		if freed == maxLearntDials {
			t.Fatalf("second honest peer not dialled after %d slots freed", freed)
		}
		started := d.Stats().Started
		hd.free <- struct{}{} // one hung dial ends, as at its timeout
		waitFor(t, 5*time.Second, "a dial started in the freed slot", func() bool { return d.Stats().Started > started })
	}
	hd.mu.Lock()
	defer hd.mu.Unlock()
	for _, ai := range hd.dialled[before:] {
		if ai.ID == "honest-2" {
			break
		}
		if ai.ID != "honest" { // the first honest peer is redialled: this fake dial connects nothing
			t.Fatalf("hostile %s dialled before the honest peer in a freed slot", ai.ID)
		}
	}
	if hd.most > maxLearntDials {
		t.Fatalf("%d learnt dials at once, cap %d", hd.most, maxLearntDials)
	}
	for _, ai := range hd.dialled {
		if len(ai.Addrs) > maxClaims*MaxLearntAddrs {
			t.Fatalf("%d addresses dialled for %s", len(ai.Addrs), ai.ID)
		}
		for _, a := range ai.Addrs {
			ip, _ := a.ValueForProtocol(ma.P_IP4)
			if ip == "" || (ip[:3] != "10." && ip[:8] != "192.168.") {
				t.Fatalf("dialled %s, outside the policy", a)
			}
		}
	}
}

// TestPendingBounded: many sources, each within its quota, cannot make
// more than maxLearntPending peers wait.
func TestPendingBounded(t *testing.T) {
	h := newHost(t)
	hd := &hangingDials{release: make(chan struct{})}
	d := NewDialer(context.Background(), h, slog.New(slog.DiscardHandler), withConnect(hd.connect))
	t.Cleanup(func() { close(hd.release); d.Close() })
	n := 0
	for s := range 20 {
		src := Source{From: peer.ID(fmt.Sprintf("colleague-%d", s))}
		for range SourceQuota {
			d.Try(fakePeer(n), src)
			n++
		}
	}
	if st := d.Stats(); st.Pending != maxLearntPending || st.Refused != uint64(n-maxLearntPending) {
		t.Fatalf("stats: %+v, want %d pending", st, maxLearntPending)
	}
	// More sources than the table holds: refused, not remembered.
	for s := range maxSources + 10 {
		d.Try(fakePeer(n), Source{From: peer.ID(fmt.Sprintf("other-%d", s))})
		n++
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.sources) > maxSources {
		t.Fatalf("%d source windows kept, cap %d", len(d.sources), maxSources)
	}
}
