package agentsvc

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testOpts are the knobs tests turn; newHarnessWith fills in the rest.
type testOpts struct {
	HeartbeatInterval  time.Duration
	MaxPendingCommands int
	MaxCommandAge      time.Duration
	Limits             RegistrationLimits
	// TCP serves on a loopback TCP listener instead of bufconn, with
	// ServerOptions added to the server's.
	TCP           bool
	ServerOptions []grpc.ServerOption
}

type harness struct {
	svc    *Service
	table  *streams.Table
	reg    *registry.Registry
	prom   *prometheus.Registry
	client fodcv1.FODCServiceClient
}

func newHarness(t testing.TB, opts testOpts) *harness {
	t.Helper()
	return newHarnessWith(t, opts, true)
}

// newHarnessWith serves the service registered with Register and
// ServerCodec, or else with the generated registration.
func newHarnessWith(t testing.TB, opts testOpts, raw bool) *harness {
	t.Helper()
	prom := prometheus.NewRegistry()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: 30 * time.Second, CleanupTimeout: 5 * time.Minute, MaxAgents: 100}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	table := streams.NewTable(streams.Limits{SendQueueLen: 64, MaxPending: cmp.Or(opts.MaxPendingCommands, 32), MaxCommandAge: opts.MaxCommandAge})
	svc, err := New(Options{
		Registry:          reg,
		Streams:           table,
		HeartbeatInterval: cmp.Or(opts.HeartbeatInterval, 10*time.Second),
		RegistrationWait:  30 * time.Second,
		Limits:            opts.Limits,
	}, slog.New(slog.DiscardHandler), prom)
	require.NoError(t, err)
	var (
		lis    net.Listener
		target = "passthrough:///bufnet"
		dial   = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	)
	if opts.TCP {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		target = lis.Addr().String()
	} else {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		dial = append(dial, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }))
	}
	var srv *grpc.Server
	if raw {
		srv = grpc.NewServer(append([]grpc.ServerOption{ServerCodec()}, opts.ServerOptions...)...)
		Register(srv, svc)
	} else {
		srv = grpc.NewServer(opts.ServerOptions...)
		fodcv1.RegisterFODCServiceServer(srv, svc)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(target, dial...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		svc.Drain()
		srv.Stop()
		<-served
	})
	return &harness{svc: svc, table: table, reg: reg, prom: prom, client: fodcv1.NewFODCServiceClient(conn)}
}

// register opens a registration stream and returns it with the agent id.
func (h *harness) register(t testing.TB, ctx context.Context, pod string) (fodcv1.FODCService_RegisterAgentClient, string) {
	t.Helper()
	st, err := h.client.RegisterAgent(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod, Labels: map[string]string{"type": "hot"}}))
	resp, err := st.Recv()
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), resp.GetMessage())
	require.NotEmpty(t, resp.GetAgentId())
	return st, resp.GetAgentId()
}

func withID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, protocol.MetadataAgentID, id)
}

func TestRegisterAnswersOnceWithIntervalAndID(t *testing.T) {
	h := newHarness(t, testOpts{HeartbeatInterval: 1500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, id := h.register(t, ctx, "data-0")
	a, ok := h.reg.Get(id)
	require.True(t, ok)
	require.Equal(t, "data-0", a.PodName)
	require.Equal(t, "hot", a.Role.Tier)

	// Heartbeats are not answered; they refresh labels.
	require.NoError(t, st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "data-0", Labels: map[string]string{"type": "warm"}}))
	require.Eventually(t, func() bool { a, _ := h.reg.Get(id); return a.Role.Tier == "warm" }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.heartbeats))

	// Closing the registration stream takes the agent offline; it stays
	// listed.
	require.NoError(t, st.CloseSend())
	_, err := st.Recv()
	require.Error(t, err)
	require.Eventually(t, func() bool { a, _ := h.reg.Get(id); return a.Status == registry.StatusOffline }, 10*time.Second, time.Millisecond)
	a, ok = h.reg.Get(id)
	require.True(t, ok)
	require.Equal(t, "stream ended: OK", a.DisconnectReason)
}

// A registration stream that ends leaves an offline entry with the code it
// ended with; the agent's other streams end, its id is refused with a
// message that says it is offline, and the node's next registration
// replaces the offline entry at once.
func TestEndedRegistrationLeavesOfflineEntry(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	regCtx, regCancel := context.WithCancel(ctx)
	_, oldID := h.register(t, regCtx, "data-0")
	metricsStream, err := h.client.StreamMetrics(withID(ctx, oldID))
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := h.table.Metrics(oldID); return ok }, 10*time.Second, time.Millisecond)

	regCancel() // the agent's side goes away, as when its process dies
	require.Eventually(t, func() bool { a, _ := h.reg.Get(oldID); return a.Status == registry.StatusOffline }, 10*time.Second, time.Millisecond)
	a, _ := h.reg.Get(oldID)
	require.Equal(t, "stream ended: Canceled", a.DisconnectReason)
	require.False(t, a.DisconnectedAt.IsZero())
	_, err = metricsStream.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "offline")

	st, err := h.client.StreamClusterTopology(withID(ctx, oldID))
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "offline")
	c := h.reg.CountByStatus()
	require.Equal(t, registry.StatusCounts{Offline: 1}, c)

	_, newID := h.register(t, ctx, "data-0")
	n, ok := h.reg.Get(newID)
	require.True(t, ok)
	require.Equal(t, oldID, n.PreviousID)
	require.Equal(t, registry.StatusOnline, n.Status)
	_, ok = h.reg.Get(oldID)
	require.False(t, ok, "the offline entry is replaced, not kept beside the new one")
	require.Equal(t, registry.StatusCounts{Online: 1}, h.reg.CountByStatus())
}

func TestHeartbeatIntervalRoundsUp(t *testing.T) {
	h := newHarness(t, testOpts{HeartbeatInterval: 1500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.RegisterAgent(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_LIAISON", PodName: "l-0"}))
	resp, err := st.Recv()
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.GetHeartbeatIntervalSeconds())
}

func TestRegistrationRejected(t *testing.T) {
	h := newHarness(t, testOpts{})
	for _, tc := range []struct {
		name string
		req  *fodcv1.RegisterAgentRequest
	}{
		{"empty role", &fodcv1.RegisterAgentRequest{PodName: "p"}},
		{"no pod and no address", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA"}},
		{"unknown role", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_BOSS", PodName: "p"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := h.client.RegisterAgent(context.Background())
			require.NoError(t, err)
			require.NoError(t, st.Send(tc.req))
			resp, err := st.Recv()
			require.NoError(t, err)
			require.False(t, resp.GetSuccess())
			require.NotEmpty(t, resp.GetMessage())
			_, err = st.Recv()
			require.Equal(t, codes.InvalidArgument, status.Code(err))
		})
	}
	_, total := h.reg.Counts()
	require.Zero(t, total)
}

func TestStreamAttribution(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")

	// Missing id.
	st, err := h.client.StreamClusterTopology(ctx)
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))

	// Unknown id: refused, so that the agent re-registers cleanly (W6).
	st, err = h.client.StreamClusterTopology(withID(ctx, "not-an-agent"))
	require.NoError(t, err)
	_, err = st.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))

	// A second live stream of the same kind is refused (W7).
	first, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := h.table.Metrics(id); return ok }, 10*time.Second, time.Millisecond)
	second, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	_, err = second.Recv()
	require.Equal(t, codes.AlreadyExists, status.Code(err))
	_, ok := h.table.Metrics(id)
	require.True(t, ok, "the first stream is still attached")
	_ = first
}

// answer replies to every metrics command on st with a message whose
// timestamp tells which command it answers, until the stream ends.
func answer(st fodcv1.FODCService_StreamMetricsClient, hang <-chan struct{}) {
	for {
		cmd, err := st.Recv()
		if err != nil {
			return
		}
		if hang != nil {
			select {
			case <-hang:
			default:
				continue // hung: read and never answer
			}
		}
		reply := &fodcv1.StreamMetricsRequest{}
		if cmd.GetStartTime() != nil {
			reply.Timestamp = cmd.GetStartTime()
		}
		reply.Metrics = []*fodcv1.Metric{{Name: "x", Value: 1}}
		if st.Send(reply) != nil {
			return
		}
	}
}

func TestMetricsRequestsMatchTheirReplies(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(map[bool]string{true: "Register", false: "generated registration"}[raw], func(t *testing.T) {
			h := newHarnessWith(t, testOpts{}, raw)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, id := h.register(t, ctx, "data-0")
			st, err := h.client.StreamMetrics(withID(ctx, id))
			require.NoError(t, err)
			done := make(chan struct{})
			go func() { defer close(done); answer(st, nil) }()
			var ms *streams.Metrics
			require.Eventually(t, func() bool { var ok bool; ms, ok = h.table.Metrics(id); return ok }, 10*time.Second, time.Millisecond)

			start := time.Unix(1700000000, 0)
			reply, err := ms.Request(ctx, series.Window{Start: start, End: start.Add(time.Minute)})
			require.NoError(t, err)
			want, err := proto.Marshal(&fodcv1.StreamMetricsRequest{
				Timestamp: timestamppb.New(start),
				Metrics:   []*fodcv1.Metric{{Name: "x", Value: 1}},
			})
			require.NoError(t, err)
			require.Equal(t, want, reply.Bytes, "the reply's wire bytes")
			reply, err = ms.Request(ctx, series.Window{})
			require.NoError(t, err)
			require.Nil(t, decodeReply(t, reply).GetTimestamp(), "a latest command gets the latest reply")
			cancel()
			<-done
		})
	}
}

// TestRawCodecLeavesOtherMessagesAlone checks that the other streams of a
// server built with ServerCodec still decode their messages.
func TestRawCodecLeavesOtherMessagesAlone(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	agent, ok := h.reg.Get(id)
	require.True(t, ok)
	require.Equal(t, "data-0", agent.PodName, "the registration message was decoded")
}

func decodeReply(t *testing.T, r *series.RawMetrics) *fodcv1.StreamMetricsRequest {
	t.Helper()
	var m fodcv1.StreamMetricsRequest
	require.NoError(t, proto.Unmarshal(r.Bytes, &m))
	return &m
}

// A full command queue fails the caller, never the agent: 40 distinct
// requests against a queue of 2 get ErrBusy beyond it while the agent keeps
// its stream, and nothing counts as a slow disconnect (issue: 40 concurrent
// /metrics-windows requests used to disconnect a healthy agent).
func TestFullQueueFailsCallersNotTheAgent(t *testing.T) {
	h := newHarness(t, testOpts{MaxPendingCommands: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); answer(st, release) }()
	var ms *streams.Metrics
	require.Eventually(t, func() bool { var ok bool; ms, ok = h.table.Metrics(id); return ok }, 10*time.Second, time.Millisecond)

	// Two requests fill the queue; the agent holds its answers.
	held := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := ms.Request(ctx, series.Window{Start: time.Unix(int64(i+1), 0)})
			held <- err
		}()
	}
	require.Eventually(t, func() bool { return ms.Pending() == 2 }, 10*time.Second, time.Millisecond)
	for i := range 38 {
		_, err := ms.Request(ctx, series.Window{Start: time.Unix(int64(100+i), 0)})
		require.ErrorIs(t, err, streams.ErrBusy)
	}
	require.NoError(t, ms.Err(), "the agent keeps its stream")
	_, ok := h.table.Metrics(id)
	require.True(t, ok, "still attached")
	close(release) // the agent answers from now on
	// The held commands were read while hung: they stay unanswered, as a
	// real hung agent leaves them, and their callers give up.
	cancel()
	for range 2 {
		require.ErrorIs(t, <-held, context.Canceled)
	}
	require.Zero(t, testutil.ToFloat64(h.svc.metrics.slowDisconnects.WithLabelValues(protocol.KindMetrics.String())))
	<-done
}

func TestLateReplyIsDiscarded(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	var ms *streams.Metrics
	require.Eventually(t, func() bool { var ok bool; ms, ok = h.table.Metrics(id); return ok }, 10*time.Second, time.Millisecond)

	rctx, rcancel := context.WithCancel(ctx)
	got := make(chan error, 1)
	go func() { _, err := ms.Request(rctx, series.Window{Start: time.Unix(5, 0)}); got <- err }()
	_, err = st.Recv() // the window command
	require.NoError(t, err)
	rcancel()
	require.ErrorIs(t, <-got, context.Canceled)
	// The agent answers the window late, then a latest request arrives.
	require.NoError(t, st.Send(&fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "window_reply"}}}))
	latest := make(chan *series.RawMetrics, 1)
	go func() { r, _ := ms.Request(ctx, series.Window{}); latest <- r }()
	_, err = st.Recv() // the latest command
	require.NoError(t, err)
	require.NoError(t, st.Send(&fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "latest_reply"}}}))
	require.Equal(t, "latest_reply", decodeReply(t, <-latest).GetMetrics()[0].GetName())
	require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.repliesDiscarded.WithLabelValues(protocol.KindMetrics.String(), "abandoned")))
}

func TestSupersededAgentStreamsEnd(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	oldReg, oldID := h.register(t, ctx, "data-0")
	oldMetrics, err := h.client.StreamMetrics(withID(ctx, oldID))
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := h.table.Metrics(oldID); return ok }, 10*time.Second, time.Millisecond)

	_, newID := h.register(t, ctx, "data-0")
	require.NotEqual(t, oldID, newID)
	_, err = oldReg.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "superseded")
	_, err = oldMetrics.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))
	_, total := h.reg.Counts()
	require.Equal(t, 1, total)
}

func TestDrainEndsEveryStreamUnavailable(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg, id := h.register(t, ctx, "data-0")
	var opened []func() error
	m, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := m.Recv(); return err })
	tp, err := h.client.StreamClusterTopology(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := tp.Recv(); return err })
	lc, err := h.client.StreamLifecycle(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := lc.Recv(); return err })
	cr, err := h.client.StreamCrashDiagnostics(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := cr.Recv(); return err })
	pp, err := h.client.StreamPressureProfiles(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := pp.Recv(); return err })
	sr, err := h.client.StreamSchemaRegistry(withID(ctx, id))
	require.NoError(t, err)
	opened = append(opened, func() error { _, err := sr.Recv(); return err })
	opened = append(opened, func() error { _, err := reg.Recv(); return err })
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.svc.metrics.streamsOpen.WithLabelValues(protocol.KindSchemaRegistry.String())) == 1 &&
			testutil.ToFloat64(h.svc.metrics.streamsOpen.WithLabelValues(protocol.KindPressure.String())) == 1
	}, 10*time.Second, time.Millisecond)

	h.svc.Drain()
	for _, recv := range opened {
		require.Equal(t, codes.Unavailable, status.Code(recv()))
	}
	require.Eventually(t, func() bool { a, _ := h.reg.Get(id); return a.Status == registry.StatusOffline }, 10*time.Second, time.Millisecond)
	a, _ := h.reg.Get(id)
	require.Equal(t, "proxy shutdown", a.DisconnectReason)
}

// An agent that lost a reply leaves a command at the head of the queue
// forever; once it is older than MaxCommandAge the stream is closed so that
// the agent re-registers instead of every reply going to the wrong caller.
func TestStuckStreamIsClosed(t *testing.T) {
	h := newHarness(t, testOpts{MaxCommandAge: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamMetrics(withID(ctx, id))
	require.NoError(t, err)
	var ms *streams.Metrics
	require.Eventually(t, func() bool { var ok bool; ms, ok = h.table.Metrics(id); return ok }, 10*time.Second, time.Millisecond)

	rctx, rcancel := context.WithTimeout(ctx, 10*time.Millisecond)
	_, err = ms.Request(rctx, series.Window{})
	rcancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer rcancel()
		_, err := ms.Request(rctx, series.Window{Start: time.Unix(1, 0)})
		return errors.Is(err, streams.ErrStuck)
	}, 10*time.Second, 5*time.Millisecond)
	for {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "unanswered")
}

// A registration stream that never sends its registration holds nothing:
// a drain ends it at once.
func TestSilentRegistrationStreamEndsOnDrain(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.RegisterAgent(ctx)
	require.NoError(t, err)
	h.svc.Drain()
	_, err = st.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err))
}
