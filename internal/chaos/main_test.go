package chaos

import (
	"testing"

	"go.uber.org/goleak"
)

// The workers run as processes; what could leak here is the harness's own goroutines
// (sandbox server, producers, pollers).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
