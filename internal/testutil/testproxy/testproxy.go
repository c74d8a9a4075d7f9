// Package testproxy runs a whole in-process proxy (proxy.New and Run) on
// loopback ports for tests of what talks to it: our agent, the load tool
// and the end-to-end tests. Tests of the proxy's own components use
// proxytest, which runs the gRPC service alone (and which those components'
// tests can import without an import cycle).
package testproxy

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/proxy"
)

// Start runs a proxy with the default configuration on 127.0.0.1:0 until
// the test ends, with agents told to heartbeat every second (and marked
// unconnected after ten without one), after mutate, when not nil, has
// changed the configuration. It returns the proxy and the registry of its
// own metrics.
func Start(t testing.TB, mutate func(*proxy.Config)) (*proxy.Proxy, *prometheus.Registry) {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.GRPCListenAddr = "127.0.0.1:0"
	cfg.HTTPListenAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = time.Second
	cfg.AgentHeartbeatTimeout = 10 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler), reg, reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return p, reg
}
