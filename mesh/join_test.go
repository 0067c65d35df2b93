package mesh_test

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/medmesh/medmesh/chat"
	"github.com/medmesh/medmesh/device"
	"github.com/medmesh/medmesh/internal/testnet"
)

// TestSyncOnTopicJoin: gossip pushes an op only to the peers its publisher
// knows to be subscribed, so what is published between a member's joining a
// conversation and its subscription reaching the publisher misses it. The
// publisher therefore syncs with a peer as soon as it joins one of its
// conversation topics — here with the sync kick and the anti-entropy
// period both an hour, so no timer does it.
func TestSyncOnTopicJoin(t *testing.T) {
	c := testnet.NewCA(t)
	slow := device.WithTimers(time.Hour, time.Hour)
	a := testnet.Start(t, c, c.Enrol(t, "a"), slow)
	b := testnet.Start(t, c, c.Enrol(t, "b"), slow, testnet.Boot(a))
	testnet.Knows(t, a, b)
	testnet.Eventually(t, 10*time.Second, "admitted", func() bool { return a.N.IsAdmitted(b.ID) && b.N.IsAdmitted(a.ID) })
	// The syncs on admission are over: the conversation is new since.
	testnet.Eventually(t, 10*time.Second, "first syncs done", func() bool {
		return !slices.Contains(a.M.DuePeers(false), b.ID) && !slices.Contains(b.M.DuePeers(false), a.ID)
	})
	id, err := a.C.Create("Ward 7", []peer.ID{b.ID})
	if err != nil {
		t.Fatal(err)
	}
	// No message: a member's device answers one with a receipt, which
	// would make b due again at a.
	if !slices.Contains(a.M.DuePeers(false), b.ID) {
		t.Fatal("b not due a sync after a made a conversation")
	}
	b.M.SyncWith(a.ID) // b fetches its welcome and joins: it subscribes to the topic
	testnet.Eventually(t, 10*time.Second, "b joined", func() bool { return testnet.Joined(b, id, 2) })
	testnet.Eventually(t, 10*time.Second, "a synced with b on its joining the topic", func() bool {
		return !slices.Contains(a.M.DuePeers(false), b.ID)
	})
	tag := chat.TagOf(id, a.ID)
	if got, want := len(b.M.IDsOf(tag)), len(a.M.IDsOf(tag)); got != want {
		t.Fatalf("b holds %d ops of a's %d", got, want)
	}
}
