package fakenode

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartStop(t *testing.T) {
	n := Start(t, "cluster.liaison-internal")
	if n.Port() == 0 {
		t.Fatal("no port")
	}
}
