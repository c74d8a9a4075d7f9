package diagnostics

import (
	"cmp"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is the generous bound of every event-based wait in these tests.
const wait = proxytest.Wait

// env is a real agentsvc.Service on a loopback TCP port, with a Cache
// wired to it the way the proxy wires them.
type env struct {
	reg  *registry.Registry
	svc  *agentsvc.Service
	prom *prometheus.Registry
	c    *Cache
	addr string
	pt   *proxytest.Env
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{prom: prometheus.NewRegistry()}
	e.pt = proxytest.Start(t, nil, agentsvc.Options{OnCrashRecord: func(id string, rec *fodcv1.StreamCrashDiagnosticsRequest) { e.c.OnRecord(id, rec) }}, streams.Limits{})
	e.reg, e.svc, e.addr = e.pt.Registry, e.pt.Service, e.pt.Addr
	opts.Registry = e.reg
	opts.Streams = e.pt.Streams
	var err error
	e.c, err = New(withDefaults(opts), slog.New(slog.DiscardHandler), e.prom)
	require.NoError(t, err)
	return e
}

// withDefaults fills the zero fields of opts with the proxy's defaults.
func withDefaults(opts Options) Options {
	opts.Window = cmp.Or(opts.Window, time.Second)
	opts.MaxRecords = cmp.Or(opts.MaxRecords, 1000)
	opts.MaxAge = cmp.Or(opts.MaxAge, 24*time.Hour)
	opts.MaxRecordBytes = cmp.Or(opts.MaxRecordBytes, 1<<20)
	opts.MaxBytes = cmp.Or(opts.MaxBytes, 64<<20)
	return opts
}

// offer hands rec to c as the agent's answer to a request c just sent.
func offer(c *Cache, agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest) {
	c.mu.Lock()
	c.asked[agentID] = c.now()
	c.mu.Unlock()
	c.OnRecord(agentID, rec)
}

// agent is a running simulated agent.
type agent = proxytest.Agent

// start runs a simulated agent until the test ends (or stop) and waits
// until its stream is attached.
func (e *env) start(t *testing.T, cfg agentsim.Config) (*agent, string) {
	t.Helper()
	return e.pt.StartAgent(t, cfg, protocol.KindCrash)
}

// waitAttached waits for the n-th registration of a and its stream.
func (e *env) waitAttached(t *testing.T, a *agentsim.Agent, n int) string {
	t.Helper()
	return e.pt.WaitAttached(t, a, n, protocol.KindCrash)
}
