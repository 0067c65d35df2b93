package simulations

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/medmesh/medmesh/internal/check"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, check.LeakOptions()...)
}
