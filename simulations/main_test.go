package simulations

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/check"
)

// TestMain checks for leaked goroutines. A mocknet stream that gossipsub
// opens in the instant the mocknet closes can be left half made: its
// transport goroutine, and gossipsub's reader and writer on it, stay
// blocked inside the mock stream after every host and the mocknet are
// closed (seen once in CI, after a full-engine run). Goroutines blocked in
// the mock's own stream are the mock's, not ours; any other is a leak.
// The same half-made stream is likelier when a site link's probe closes a
// silenced WAN connection (a cut, site.go) while a protocol opens a
// stream on it: multistream's lazy handshake then leaves a goroutine
// waiting on its read half, which is blocked in the mock's stream.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, check.LeakOptions(
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).transport"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).Read"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).Write"),
		goleak.IgnoreTopFunction("github.com/multiformats/go-multistream.(*once).Do"),
	)...)
}
