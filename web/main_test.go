package web

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/testnet"
)

// TestMain fails the package if a test leaves goroutines behind: devices,
// API servers, event streams and browsers all stop when their test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testnet.LeakOptions()...)
}
