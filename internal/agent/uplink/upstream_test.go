package uplink

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/roles"
)

// upstreamProxy imitates what the upstream proxy expects (PROTOCOL.md
// §2.3): it rejects an empty role or pod name, implements only
// RegisterAgent and StreamMetrics, and answers Unimplemented for the rest.
type upstreamProxy struct {
	fodcv1.UnimplementedFODCServiceServer

	mu            sync.Mutex // guards the fields below
	registrations []*fodcv1.RegisterAgentRequest
	heartbeats    int
	replies       []*fodcv1.StreamMetricsRequest
	metricsIDs    []string
	changed       chan struct{} // closed and replaced on every record; nil until first asked for
}

// record changes the recorded state under the lock and wakes waitUntil.
func (p *upstreamProxy) record(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// changes returns a channel that is closed at the next record.
func (p *upstreamProxy) changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// waitUntil blocks until cond, re-checked after every record, holds.
func (p *upstreamProxy) waitUntil(t *testing.T, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		ch := p.changes()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			require.FailNow(t, "condition not met at the upstream proxy", msgAndArgs...)
		}
	}
}

func (p *upstreamProxy) RegisterAgent(st grpc.BidiStreamingServer[fodcv1.RegisterAgentRequest, fodcv1.RegisterAgentResponse]) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	msg := ""
	switch {
	case req.GetNodeRole() == "":
		msg = "node role cannot be empty"
	case req.GetPodName() == "":
		msg = "pod name cannot be empty"
	}
	if msg != "" {
		_ = st.Send(&fodcv1.RegisterAgentResponse{Success: false, Message: msg})
		return status.Error(codes.Unknown, msg)
	}
	p.record(func() { p.registrations = append(p.registrations, req) })
	if err := st.Send(&fodcv1.RegisterAgentResponse{Success: true, Message: "Agent registered successfully", HeartbeatIntervalSeconds: 1, AgentId: uuid.NewString()}); err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
		p.record(func() { p.heartbeats++ })
	}
}

func (p *upstreamProxy) StreamMetrics(st grpc.BidiStreamingServer[fodcv1.StreamMetricsRequest, fodcv1.StreamMetricsResponse]) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	p.record(func() { p.metricsIDs = append(p.metricsIDs, md.Get("agent_id")...) })
	if err := st.Send(&fodcv1.StreamMetricsResponse{}); err != nil {
		return err
	}
	for {
		reply, err := st.Recv()
		if err != nil {
			return nil
		}
		p.record(func() { p.replies = append(p.replies, reply) })
	}
}

func (p *upstreamProxy) snapshot() (regs []*fodcv1.RegisterAgentRequest, heartbeats int, replies []*fodcv1.StreamMetricsRequest, ids []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append(regs, p.registrations...), p.heartbeats, append(replies, p.replies...), append(ids, p.metricsIDs...)
}

// serveFake runs svc on a loopback listener, with opts (grpc-go's default
// keepalive enforcement unless they change it), until the test ends.
func serveFake(t *testing.T, svc fodcv1.FODCServiceServer, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(opts...)
	fodcv1.RegisterFODCServiceServer(srv, svc)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

type fixedSource []*fodcv1.Metric

func (s fixedSource) Latest() []*fodcv1.Metric { return s.clone() }
func (s fixedSource) Window(time.Time, time.Time, bool, bool) []*fodcv1.Metric {
	return s.clone()
}

func (s fixedSource) clone() []*fodcv1.Metric {
	out := make([]*fodcv1.Metric, len(s))
	for i, m := range s {
		out[i] = proto.CloneOf(m)
	}
	return out
}

// Against the upstream proxy's expectations: the registration carries the
// enum role, the tier label and the pod name; the topology stream it does
// not implement is switched off, not a reason to reconnect.
func TestAgainstUpstreamProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for real heartbeats; run without -short")
	}
	up := &upstreamProxy{}
	addr := serveFake(t, up)
	id := Identity{Role: roles.Role{Kind: roles.KindData, Tier: "warm"}, PodName: "data-warm-0"}
	src := fixedSource{{Name: "banyandb_system_cpu_num", Labels: map[string]string{"x": "1"}, Value: 8}}
	c, err := New(Options{ProxyAddr: addr, Identity: func() Identity { return id }, Source: src, HeartbeatInterval: time.Hour})
	require.NoError(t, err)
	startClient(t, c)

	up.waitUntil(t, func() bool {
		_, hb, replies, _ := up.snapshot()
		return hb >= 2 && len(replies) >= 1
	}, "heartbeats at the proxy's 1s interval, not the agent's 1h")
	regs, _, replies, ids := up.snapshot()
	require.Len(t, regs, 1, "no reconnect loop")
	require.Equal(t, "ROLE_DATA", regs[0].GetNodeRole())
	require.Equal(t, "data-warm-0", regs[0].GetPodName())
	require.Equal(t, map[string]string{"type": "warm"}, regs[0].GetLabels())
	st := c.Status()
	require.Equal(t, []string{ids[0]}, []string{st.AgentID}, "streams carry the agent_id metadata")
	require.Equal(t, 1, st.Registrations)
	require.Equal(t, 1, st.Attempts)
	require.Equal(t, []string{protocol.KindTopology.String()}, st.Unimplemented)
	require.Equal(t, 1.0, testutil.ToFloat64(c.m.streamsDisabled.WithLabelValues(protocol.KindTopology.String())))
	require.Zero(t, testutil.ToFloat64(c.m.reconnects))
	require.Len(t, replies[0].GetMetrics(), 1)
	require.Equal(t, map[string]string{"x": "1", "node_role": "ROLE_DATA", "pod_name": "data-warm-0", "node_type": "warm"},
		replies[0].GetMetrics()[0].GetLabels(), "identity labels stamped like a HEAD agent")
}

// A rejected registration is retried with growing, capped waits.
func TestRejectedRegistrationBacksOff(t *testing.T) {
	up := &upstreamProxy{}
	addr := serveFake(t, up)
	waits := make(chan time.Duration)
	after := func(d time.Duration) <-chan time.Time {
		waits <- d
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	}
	c, err := New(Options{
		ProxyAddr: addr, Identity: func() Identity { return Identity{Role: roles.Role{Kind: roles.KindLiaison}} }, Source: fixedSource{},
		ReconnectInterval: time.Second, ReconnectMaxInterval: 4 * time.Second, After: after,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for _, base := range []time.Duration{1, 2, 4, 4, 4} {
		base *= time.Second
		var d time.Duration
		select {
		case d = <-waits:
		case <-time.After(wait):
			t.Fatal("no retry")
		}
		require.GreaterOrEqual(t, d, base)
		require.LessOrEqual(t, d, base+base/2)
	}
	cancel()
	go func() {
		for range waits { // unblock a last wait, if any
		}
	}()
	require.NoError(t, <-done)
	close(waits)
	st := c.Status()
	require.Zero(t, st.Registrations)
	require.GreaterOrEqual(t, st.Attempts, 5)
	require.Contains(t, st.LastError, "registration failed: pod name cannot be empty")
}

// countingListener accepts connections and closes them at once, counting
// them: a proxy that is down but reachable.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) serve() {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		l.n.Add(1)
		_ = conn.Close()
	}
}

// With the proxy down (reachable, but closing every connection), every
// attempt dials and is followed by a wait that doubles up to the cap.
func TestProxyDownBacksOff(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cl := &countingListener{Listener: lis}
	served := make(chan struct{})
	go func() { defer close(served); cl.serve() }()
	defer func() { _ = lis.Close(); <-served }()

	// after hands every wait to the test, which releases it.
	waits := make(chan time.Duration, 1)
	release := make(chan time.Time)
	after := func(d time.Duration) <-chan time.Time {
		waits <- d
		return release
	}
	c, err := New(Options{
		ProxyAddr: lis.Addr().String(), Identity: func() Identity { return Identity{PodName: "p"} }, Source: fixedSource{},
		ReconnectInterval: 100 * time.Millisecond, ReconnectMaxInterval: 400 * time.Millisecond, After: after,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var got []time.Duration
	nextWait := func() {
		t.Helper()
		select {
		case d := <-waits:
			got = append(got, d)
		case <-time.After(wait):
			t.Fatalf("no wait after attempt %d", len(got)+1)
		}
	}
	for i := range 4 {
		nextWait()
		require.Equal(t, i+1, c.Status().Attempts, "no attempt without a wait")
		require.GreaterOrEqual(t, cl.n.Load(), int64(i+1), "every attempt dials")
		release <- time.Time{}
	}
	nextWait()
	cancel()
	require.NoError(t, <-done)
	for i, base := range []time.Duration{100, 200, 400, 400, 400} {
		base *= time.Millisecond
		require.GreaterOrEqual(t, got[i], base, "wait %d", i)
		require.LessOrEqual(t, got[i], base+base/2, "wait %d", i)
	}
	require.Equal(t, 4.0, testutil.ToFloat64(c.m.reconnects))
	require.Zero(t, testutil.ToFloat64(c.m.connected))
}
