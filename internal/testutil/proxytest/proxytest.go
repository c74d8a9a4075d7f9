// Package proxytest runs the proxy's agent-facing gRPC service on a real
// loopback port for tests of the components that sit behind it, with
// simulated upstream agents connected to it.
package proxytest

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Wait is the generous bound of every event-based wait.
const Wait = 10 * time.Second

// Env is a registry, a stream table and an agentsvc.Service serving on
// 127.0.0.1.
type Env struct {
	Registry *registry.Registry
	Streams  *streams.Table
	Service  *agentsvc.Service
	// Addr is the gRPC address agents dial.
	Addr string
}

// Start builds the registry (with now as its clock when non-nil), a stream
// table with the given limits (zero fields get small test values) and the
// service from svc, serves it until the test ends, and returns the Env.
// svc.Registry and svc.Streams are filled in; unless svc says otherwise,
// agents are told to heartbeat hourly, so that tests decide who is online.
func Start(t *testing.T, now func() time.Time, svc agentsvc.Options, limits streams.Limits) *Env {
	t.Helper()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: 30 * time.Second, CleanupTimeout: 5 * time.Minute, MaxAgents: 100, Now: now}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	limits.SendQueueLen = cmp.Or(limits.SendQueueLen, 64)
	limits.MaxPending = cmp.Or(limits.MaxPending, 32)
	table := streams.NewTable(limits)
	svc.Registry = reg
	svc.Streams = table
	svc.HeartbeatInterval = cmp.Or(svc.HeartbeatInterval, time.Hour)
	svc.RegistrationWait = cmp.Or(svc.RegistrationWait, 30*time.Second)
	s, err := agentsvc.New(svc, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(agentsvc.ServerCodec())
	agentsvc.Register(srv, s)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		s.Drain()
		srv.Stop()
		<-served
	})
	return &Env{Registry: reg, Streams: table, Service: s, Addr: lis.Addr().String()}
}

// Agent is a running simulated agent.
type Agent struct {
	*agentsim.Agent
	// Stop stops the agent and waits for it; it is idempotent.
	Stop func()
}

// RunAgent runs a simulated agent until stop is called or the test ends,
// reconnecting every 200 ms unless cfg sets an interval. It does not wait
// for anything. stop is idempotent; it fails the test if the agent ends
// with an error or does not stop within Wait.
func RunAgent(t testing.TB, cfg agentsim.Config) (a *agentsim.Agent, stop func()) {
	t.Helper()
	if cfg.ReconnectInterval == 0 {
		cfg.ReconnectInterval = 200 * time.Millisecond
	}
	a, err := agentsim.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(Wait):
				t.Errorf("agent %s did not stop", cfg.Register.GetPodName())
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// StartAgent runs a simulated agent until the test ends (or Stop) and
// waits until its stream of the given kind is attached. It returns the
// agent and its id.
func (e *Env) StartAgent(t *testing.T, cfg agentsim.Config, kind protocol.Kind) (*Agent, string) {
	t.Helper()
	cfg.ProxyAddr = e.Addr
	a, stop := RunAgent(t, cfg)
	id := e.WaitAttached(t, a, 1, kind)
	return &Agent{Agent: a, Stop: stop}, id
}

// WaitAttached waits for the n-th registration of a and its stream of the
// given kind, and returns the agent id of that registration.
func (e *Env) WaitAttached(t *testing.T, a *agentsim.Agent, n int, kind protocol.Kind) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	id, err := a.WaitRegistered(ctx, n)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.Streams.Has(id, kind) }, Wait, time.Millisecond)
	return id
}

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
