package uplink

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/stats"

	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/netrelay"
)

// A proxy that vanishes without closing the connection (a frozen relay:
// both ends stay open, nothing gets through) is left within about two
// heartbeat intervals, not after the 6 min keepalive; once the path heals
// the agent registers again.
func TestFrozenPathEndsSessionAfterTwoUnansweredHeartbeats(t *testing.T) {
	p := startProxy(t) // tells agents to heartbeat every second
	r := netrelay.Start(t, p.GRPCAddr())
	id := Identity{Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, PodName: "data-hot-0"}
	c, err := New(Options{ProxyAddr: r.Addr(), Identity: func() Identity { return id }, Source: fixedSource{}})
	require.NoError(t, err)
	startClient(t, c)
	waitStatus(t, c, func(st Status) bool { return st.Connected && st.Probes >= 2 })
	require.Zero(t, c.Status().ProbeFailures, "a live proxy answers every probe")
	first := c.Status().AgentID

	r.Freeze()
	frozenAt := time.Now()
	waitStatus(t, c, func(st Status) bool { return !st.Connected })
	detected := time.Since(frozenAt)
	waitStatus(t, c, func(st Status) bool { return st.LastError != "" })
	t.Logf("session ended %s after the path froze (heartbeat interval 1s)", detected.Round(time.Millisecond))
	// The probe after the next heartbeat (or one in flight at the freeze)
	// misses its 1 s deadline, and so does the one after it: two intervals
	// after the first unanswered heartbeat, at most three after the
	// freeze, plus scheduling slack.
	require.GreaterOrEqual(t, detected, time.Second)
	require.Less(t, detected, 5*time.Second)
	st := c.Status()
	require.Equal(t, 2, st.ProbeFailures)
	require.Contains(t, st.LastError, "liveness probes")
	require.Equal(t, 2.0, testutil.ToFloat64(c.m.probeFailures))

	r.Thaw()
	waitStatus(t, c, func(st Status) bool { return st.Registrations >= 2 && st.Connected })
	second := c.Status().AgentID
	require.NotEqual(t, first, second)
	require.Eventually(t, func() bool { return p.Streams.Has(second, "metrics") }, wait, 5*time.Millisecond)
	waitStatus(t, c, func(st Status) bool { return st.Probes >= st.ProbeFailures+2 })
	require.Equal(t, 2, c.Status().ProbeFailures, "the healed path answers again")
}

// probeCounter counts the liveness probes a server receives.
type probeCounter struct{ n atomic.Int64 }

func (h *probeCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if info.FullMethodName == "/"+healthpb.Health_ServiceDesc.ServiceName+"/Check" {
		h.n.Add(1)
	}
	return ctx
}
func (*probeCounter) HandleRPC(context.Context, stats.RPCStats) {}
func (*probeCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (*probeCounter) HandleConn(context.Context, stats.ConnStats) {}

// Against an upstream-like proxy (no health service, grpc-go's default
// keepalive enforcement) the probes are answered Unimplemented, which
// counts as alive: five heartbeats later the first session still stands,
// with no GOAWAY and no reconnect.
func TestProbeKeepsHealthyUpstreamSession(t *testing.T) {
	up := &upstreamProxy{}
	probes := &probeCounter{}
	addr := serveFake(t, up, grpc.StatsHandler(probes))
	id := Identity{Role: roles.Role{Kind: roles.KindLiaison}, PodName: "liaison-0"}
	c, err := New(Options{ProxyAddr: addr, Identity: func() Identity { return id }, Source: fixedSource{}})
	require.NoError(t, err)
	startClient(t, c)

	up.waitUntil(t, func() bool { _, hb, _, _ := up.snapshot(); return hb >= 6 }, "six heartbeats at 1s")
	waitStatus(t, c, func(st Status) bool { return st.Probes >= 5 })
	st := c.Status()
	require.True(t, st.Connected)
	require.Zero(t, st.ProbeFailures)
	require.Equal(t, 1, st.Attempts)
	require.Equal(t, 1, st.Registrations)
	require.GreaterOrEqual(t, probes.n.Load(), int64(5), "the probes reach the proxy")
	regs, _, _, _ := up.snapshot()
	require.Len(t, regs, 1)
	require.Zero(t, testutil.ToFloat64(c.m.probeFailures))
	require.GreaterOrEqual(t, testutil.ToFloat64(c.m.probes), 5.0)
}
