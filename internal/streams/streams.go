// Package streams bounds libp2p streams in time.
package streams

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// Bound sets s's deadline d from now and resets s when d has passed or ctx
// ends: the deadline's twin for transports that ignore deadlines (libp2p's
// mocknet), and the way out of a blocked read or write when the stream's
// owner closes. Call the returned release when done with s.
func Bound(ctx context.Context, s network.Stream, d time.Duration) (release func()) {
	s.SetDeadline(time.Now().Add(d))
	ctx, cancel := context.WithTimeout(ctx, d)
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	return func() {
		stop()
		cancel()
	}
}
