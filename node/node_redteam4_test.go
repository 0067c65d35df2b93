package node

// Red-team round 4: admission on /medmesh/admit/2 against outsiders.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
)

// TestRedteam4RefusedIdentitiesNeverForgotten: attack — an outsider on the
// LAN with no certificate connects under a fresh libp2p identity (a key
// pair costs microseconds), sends one malformed credential frame and goes.
// Each refusal puts the identity on the block list for intruderBlock; an
// entry is only ever removed when that same identity is looked up again
// after its block ran out, which a fresh identity never is. So the block
// list (and with it the node's heap) grows by one entry per identity
// forever: an unadmitted peer makes the node's memory grow without bound
// at the rate it can complete handshakes, and the growth survives the
// attacker leaving. Impact: memory exhaustion of devices and anchors by
// anyone on the hospital network, no certificate needed.
func TestRedteam4RefusedIdentitiesNeverForgotten(t *testing.T) {
	c := newCA(t, "General Hospital")
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	d := c.enrol(t, "victim", now)
	priv, err := crypto.UnmarshalEd25519PrivateKey(d.key.Identity)
	if err != nil {
		t.Fatal(err)
	}
	mn, _ := mocknetNodes(t, c)
	h, err := mn.AddPeer(priv, ma.StringCast("/ip4/100.64.0.1/tcp/4242"))
	if err != nil {
		t.Fatal(err)
	}
	victim := startNode(t, c, d, func(cfg *Config) { cfg.Host = h; cfg.Now = clock })

	intrude := func(i int) {
		t.Helper()
		in, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mn.LinkPeers(in.ID(), victim.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := mn.ConnectPeers(in.ID(), victim.ID()); err != nil {
			t.Fatal(err)
		}
		s, err := in.NewStream(context.Background(), victim.ID(), ProtoAdmit)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte{5, 0xff, 0xff, 0xff, 0xff, 0xff}) // a "credential" that is not CBOR
		s.Close()
		eventually(t, 10*time.Second, fmt.Sprintf("intruder %d refused", i), func() bool { return victim.isBlocked(in.ID()) })
		in.Close()
	}
	const flood = 200
	for i := range flood {
		intrude(i)
	}
	// The attacker stops; a day passes; one more stranger knocks.
	mu.Lock()
	now = now.Add(24 * time.Hour)
	mu.Unlock()
	intrude(flood)

	victim.adm.mu.Lock()
	n := len(victim.adm.blocked)
	victim.adm.mu.Unlock()
	if n > 1 {
		t.Fatalf("a day after the flood the block list still holds %d entries (%d of them long expired): it grows by one per fresh identity, never shrinking", n, n-1)
	}
}
