package simulations

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		// gossipsub retries a subscription announcement after a random
		// sleep of up to a second, not tied to any context; it ends alone.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).announceRetry"),
	)
}
