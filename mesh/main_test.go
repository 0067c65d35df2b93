package mesh_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/testnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testnet.LeakOptions()...)
}
