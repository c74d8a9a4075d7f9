package pressure

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is the generous bound of every event-based wait in these tests.
const wait = 10 * time.Second

// env is a real agentsvc.Service on a loopback TCP port, with a Collector
// wired to it the way the proxy wires them.
type env struct {
	reg  *registry.Registry
	svc  *agentsvc.Service
	prom *prometheus.Registry
	c    *Collector
	addr string
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: 30 * time.Second, CleanupTimeout: 5 * time.Minute, MaxAgents: 100, Now: opts.Now})
	require.NoError(t, err)
	e := &env{reg: reg, prom: prometheus.NewRegistry()}
	opts.Registry = reg
	opts.Registerer = e.prom
	opts.Streams = func(id string) (*agentsvc.PressureStream, bool) { return e.svc.Pressure(id) }
	e.c, err = New(opts)
	require.NoError(t, err)
	e.svc, err = agentsvc.New(agentsvc.Options{
		Registry: reg,
		// Agents heartbeat rarely, so that tests decide who is online.
		HeartbeatInterval: time.Hour,
		Registerer:        prometheus.NewRegistry(),
	})
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.addr = lis.Addr().String()
	srv := grpc.NewServer()
	fodcv1.RegisterFODCServiceServer(srv, e.svc)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		e.svc.Drain()
		srv.Stop()
		<-served
	})
	return e
}

// agent is a running simulated agent.
type agent struct {
	*agentsim.Agent
	stop func() // stops it and waits; idempotent
}

// start runs a simulated agent until the test ends (or stop) and waits
// until its pressure stream is attached.
func (e *env) start(t *testing.T, cfg agentsim.Config) (*agent, string) {
	t.Helper()
	cfg.ProxyAddr = e.addr
	a, err := agentsim.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	id := e.waitAttached(t, a, 1)
	return &agent{Agent: a, stop: stop}, id
}

// waitAttached waits for the n-th registration of a and its pressure stream.
func (e *env) waitAttached(t *testing.T, a *agentsim.Agent, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	id, err := a.WaitRegistered(ctx, n)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.svc.HasStream(id, agentsvc.KindPressure) }, wait, time.Millisecond)
	return id
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}
