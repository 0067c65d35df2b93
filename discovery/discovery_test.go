package discovery

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/medmesh/medmesh/internal/check"
)

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

var waitFor = check.Eventually

// TestKeepReconnects: a bootstrap peer is dialled, and redialled after the
// connection drops.
func TestKeepReconnects(t *testing.T) {
	a, b := newHost(t), newHost(t)
	d := NewDialer(context.Background(), a, slog.New(slog.DiscardHandler))
	defer d.Close()
	d.Keep(peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()})
	connected := func() bool { return a.Network().Connectedness(b.ID()) == network.Connected }
	waitFor(t, 5*time.Second, "first dial", connected)
	// b closes the connection once its side has it too (a may count it
	// before b's accept completes, and b would have nothing to close).
	waitFor(t, 5*time.Second, "b has the connection", func() bool { return b.Network().Connectedness(a.ID()) == network.Connected })
	// The drop is seen as an event: the redial may follow too fast for a
	// poll to catch the moment between.
	dropped := make(chan struct{}, 1)
	a.Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == b.ID() {
			select {
			case dropped <- struct{}{}:
			default:
			}
		}
	}})
	b.Network().ClosePeer(a.ID())
	select {
	case <-dropped:
	case <-time.After(5 * time.Second):
		t.Fatal("drop not seen within 5s")
	}
	waitFor(t, 10*time.Second, "redial after drop", connected)
}

// TestTryGivesUp: a learnt peer that cannot be reached is dropped after a
// few attempts, with backoff between them.
func TestTryGivesUp(t *testing.T) {
	a, b := newHost(t), newHost(t)
	addrs := b.Addrs()
	b.Close()
	d := NewDialer(context.Background(), a, slog.New(slog.DiscardHandler))
	defer d.Close()
	d.Try(peer.AddrInfo{ID: b.ID(), Addrs: addrs}, Source{From: "colleague", Loopback: true})
	waitFor(t, 5*time.Second, "first failure recorded", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		tg := d.targets[b.ID()]
		return tg == nil || tg.fails >= 1
	})
	d.mu.Lock()
	tg := d.targets[b.ID()]
	d.mu.Unlock()
	if tg != nil && tg.backoff <= minBackoff {
		t.Fatalf("backoff did not grow: %v", tg.backoff)
	}
}

// TestRelayedPathFromTheFirstSource: an anchor names a peer at a direct
// address it cannot be reached at, then — once the peer reserved a relay
// slot on it — at its relayed address. The second claim comes from the
// same source, yet the relayed path is added and the next dial brought
// forward; a direct address from the same source is still not added.
func TestRelayedPathFromTheFirstSource(t *testing.T) {
	a, b, anchor := newHost(t), newHost(t), newHost(t)
	addrs := b.Addrs()
	b.Close()
	d := NewDialer(context.Background(), a, slog.New(slog.DiscardHandler),
		WithRelays(func(r peer.ID) bool { return r == anchor.ID() }))
	defer d.Close()
	src := Source{From: anchor.ID(), Loopback: true}
	d.Try(peer.AddrInfo{ID: b.ID(), Addrs: addrs}, src)
	waitFor(t, 5*time.Second, "first failure recorded", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		tg := d.targets[b.ID()]
		return tg != nil && tg.fails >= 1
	})
	d.Try(peer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{Circuit(anchor.ID()), ma.StringCast("/ip4/10.9.9.9/tcp/4001")}}, src)
	d.mu.Lock()
	defer d.mu.Unlock()
	tg := d.targets[b.ID()]
	if tg == nil {
		t.Fatal("target dropped")
	}
	if !slices.ContainsFunc(tg.ai.Addrs, Circuit(anchor.ID()).Equal) {
		t.Fatalf("relayed path not taken: %v", tg.ai.Addrs)
	}
	if slices.ContainsFunc(tg.ai.Addrs, ma.StringCast("/ip4/10.9.9.9/tcp/4001").Equal) {
		t.Fatalf("a direct address taken from the same source again: %v", tg.ai.Addrs)
	}
}

// TestRetryNotEatenBySwarmBackoff: a learnt peer whose first dial fails
// (it was not up yet) is reached on a retry once it is. go-libp2p backs
// off an address for 5 s after a failure, longer than this dialer's own
// 1 s and 2 s retries: without clearing it, one transient failure used up
// every try and the peer was never dialled again.
func TestRetryNotEatenBySwarmBackoff(t *testing.T) {
	a := newHost(t)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	// A port nothing listens on yet: take one and let it go.
	probe := newHost(t)
	addr := probe.Addrs()[0]
	probe.Close()

	d := NewDialer(context.Background(), a, slog.New(slog.DiscardHandler))
	defer d.Close()
	d.Try(peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}}, Source{From: "colleague", Loopback: true})
	waitFor(t, 5*time.Second, "first failure recorded", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		tg := d.targets[id]
		return tg != nil && tg.fails >= 1 && !tg.dialing
	})
	b, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrs(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitFor(t, 10*time.Second, "reached on a retry", func() bool { return a.Network().Connectedness(id) == network.Connected })
}
