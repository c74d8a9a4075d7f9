package render

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines (the promtool test runs a process).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
