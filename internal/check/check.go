// Package check holds the two helpers every test package shares and that
// must not pull in the rest of the project (node's and discovery's own
// tests use them): waiting on a condition with a deadline, and the
// goroutine-leak ignore list. Only tests import it.
package check

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Eventually waits until cond holds, failing the test with what if it does
// not within the deadline. It polls: use it for conditions on real
// networks and processes; for timers, inject a clock or use synctest.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

// LeakOptions ignore the goroutines libraries keep for the whole process
// by design (metric sweepers, log writers, transport reuse), for
// goleak.VerifyTestMain.
func LeakOptions(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreTopFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreAnyFunction("github.com/quic-go/quic-go.(*Transport).listen"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		// gossipsub retries a subscription announcement after a random
		// sleep of up to a second, not tied to any context; it ends alone.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-pubsub.(*PubSub).announceRetry"),
	}, extra...)
}
