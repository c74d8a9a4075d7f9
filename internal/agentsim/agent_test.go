package agentsim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewValidates(t *testing.T) {
	reg := &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p"}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{Register: reg}, "proxy address is empty"},
		{"no registration", Config{ProxyAddr: "127.0.0.1:1"}, "registration request is nil"},
		{"bad version", Config{ProxyAddr: "127.0.0.1:1", Register: reg, Release: protocol.Release(9)}, "unknown agent version 9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.EqualError(t, err, tc.want)
		})
	}
	a, err := New(Config{ProxyAddr: "127.0.0.1:1", Register: reg})
	require.NoError(t, err)
	require.Equal(t, DefaultHeartbeatInterval, a.cfg.HeartbeatInterval)
	require.Equal(t, DefaultReconnectInterval, a.cfg.ReconnectInterval)
	require.Empty(t, a.AgentID())
}

// TestOpenOrder checks the registration handshake and the stream opening
// order and metadata of every version (PROTOCOL.md §2.2), as seen on the
// wire by the proxy's transport.
func TestOpenOrder(t *testing.T) {
	const (
		reg   = fixture.MethodRegisterAgent
		met   = fixture.MethodStreamMetrics
		topo  = fixture.MethodStreamClusterTopology
		life  = fixture.MethodStreamLifecycle
		sch   = fixture.MethodStreamSchemaRegistry
		crash = fixture.MethodStreamCrashDiagnostics
		pres  = fixture.MethodStreamPressureProfiles
	)
	tests := []struct {
		name   string
		adjust func(*Config)
		want   []string
	}{
		{"HEAD", func(*Config) {}, []string{reg, met, topo, life, sch, crash, pres}},
		{"v0.10.3", func(c *Config) { c.Release = protocol.ReleaseV0103 }, []string{reg, met, topo, life}},
		{"v0.10.0", func(c *Config) { c.Release = protocol.ReleaseV0100 }, []string{reg, met, topo}},
		{"HEAD lifecycle port 0", func(c *Config) { c.NoLifecycle = true }, []string{reg, met, topo, crash, pres}},
		{"HEAD no pressure profiler", func(c *Config) { c.NoPressureProfiles = true }, []string{reg, met, topo, life, sch, crash}},
		{"v0.10.3 lifecycle port 0", func(c *Config) { c.Release, c.NoLifecycle = protocol.ReleaseV0103, true }, []string{reg, met, topo}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, &fakeProxy{hbSeconds: 2})
			cfg := baseConfig(p)
			cfg.Register.Labels = map[string]string{"type": "hot"}
			cfg.Register.ContainerNames = []string{"data"}
			tc.adjust(&cfg)
			a, err := New(cfg)
			require.NoError(t, err)
			cancel, wait := runAgent(t, a)

			id := waitRegistered(t, a, 1)
			require.Equal(t, "agent-1", id)
			require.Equal(t, id, a.AgentID())
			rs := next(t, p.regs)
			require.True(t, proto.Equal(cfg.Register, rs.req), "registration request: %v", rs.req)
			require.Equal(t, 2*time.Second, a.heartbeatInterval(), "proxy interval adopted")
			p.streamsOf(t, id, len(tc.want)-1) // every stream reached its handler

			cancel()
			require.NoError(t, wait())
			var got []string
			for len(p.opens) > 0 {
				ev := <-p.opens
				got = append(got, ev.method)
				if ev.method == reg {
					require.Empty(t, ev.agentID, "registration carries no agent_id")
				} else {
					require.Equal(t, []string{id}, ev.agentID, "metadata of %s", ev.method)
				}
			}
			require.Equal(t, tc.want, got)
			require.Empty(t, a.AgentID(), "not registered after Run returned")
		})
	}
}

// TestHeartbeats checks that heartbeats are the registration request re-sent
// on the registration stream, need no answer, and use the agent's own
// interval when the proxy sends 0.
func TestHeartbeats(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 0})
	cfg := baseConfig(p)
	cfg.HeartbeatInterval = 5 * time.Millisecond
	cfg.Register.Labels = map[string]string{"type": "warm"}
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)

	rs := next(t, p.regs)
	for range 3 {
		hb := next(t, rs.heartbeats)
		require.True(t, proto.Equal(cfg.Register, hb), "heartbeat: %v", hb)
	}
	require.Equal(t, 5*time.Millisecond, a.heartbeatInterval(), "fallback interval")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, a.WaitHeartbeats(ctx, 3))
	require.Equal(t, 1, a.Registrations(), "unanswered heartbeats keep the session")
	require.Zero(t, a.Reconnects())
	require.NoError(t, a.LastStreamError())
}

// metricsProbe is a Metrics callback that numbers its replies and records
// whether the command was a window.
func metricsProbe(calls *atomic.Int64, nilOn int64) func(*fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
	return func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
		n := calls.Add(1)
		if n == nilOn {
			return nil
		}
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{
			Name:   "reply",
			Value:  float64(n),
			Labels: map[string]string{"window": strconv.FormatBool(cmd.GetStartTime() != nil)},
		}}}
	}
}

func windowCmd(start, end int64) *fodcv1.StreamMetricsResponse {
	return &fodcv1.StreamMetricsResponse{StartTime: &timestamppb.Timestamp{Seconds: start}, EndTime: &timestamppb.Timestamp{Seconds: end}}
}

// TestMetricsInOrder sends five commands back to back and expects exactly
// five replies in command order, the empty one included.
func TestMetricsInOrder(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	cfg := baseConfig(p)
	var calls atomic.Int64
	cfg.Metrics = metricsProbe(&calls, 3)
	cfg.ReplyDelay = func(kind protocol.Kind) time.Duration {
		if kind == protocol.KindMetrics {
			return time.Millisecond // let commands queue up behind each other
		}
		return 0
	}
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	id := waitRegistered(t, a, 1)
	ms := p.streamsOf(t, id, 6)[fixture.MethodStreamMetrics]

	cmds := []*fodcv1.StreamMetricsResponse{{}, windowCmd(100, 130), {}, windowCmd(200, 230), {}}
	for _, c := range cmds {
		ms.out <- c
	}
	for i, c := range cmds {
		reply := nextMsg[*fodcv1.StreamMetricsRequest](t, ms)
		if i == 2 {
			require.Empty(t, reply.GetMetrics(), "a nil callback result is sent as an empty reply")
			require.NotNil(t, reply.GetTimestamp())
			continue
		}
		require.Len(t, reply.GetMetrics(), 1)
		m := reply.GetMetrics()[0]
		require.Equal(t, float64(i+1), m.GetValue(), "reply %d out of order", i)
		require.Equal(t, strconv.FormatBool(c.GetStartTime() != nil), m.GetLabels()["window"])
	}
	require.Equal(t, 5, a.Commands(protocol.KindMetrics))
	require.Zero(t, a.Commands(protocol.KindTopology))
}

// TestHang checks that a hung stream reads commands and never answers them,
// and that it answers again once released.
func TestHang(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	cfg := baseConfig(p)
	var calls atomic.Int64
	cfg.Metrics = metricsProbe(&calls, 0)
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	id := waitRegistered(t, a, 1)
	streams := p.streamsOf(t, id, 6)
	ms, ts := streams[fixture.MethodStreamMetrics], streams[fixture.MethodStreamClusterTopology]

	a.SetHang(protocol.KindMetrics, true)
	ms.out <- &fodcv1.StreamMetricsResponse{}
	ms.out <- &fodcv1.StreamMetricsResponse{}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, a.WaitCommands(ctx, protocol.KindMetrics, 2))
	require.Equal(t, 2, a.Commands(protocol.KindMetrics))
	// Other streams are independent of the hung one.
	ts.out <- &fodcv1.StreamClusterTopologyResponse{RequestTopology: true}
	nextMsg[*fodcv1.StreamClusterTopologyRequest](t, ts)

	a.SetHang(protocol.KindMetrics, false)
	ms.out <- &fodcv1.StreamMetricsResponse{}
	reply := nextMsg[*fodcv1.StreamMetricsRequest](t, ms)
	require.Equal(t, float64(1), reply.GetMetrics()[0].GetValue(), "the first reply is for the third command")
	require.Equal(t, int64(1), calls.Load(), "hung commands never reached the callback")
	require.Equal(t, 3, a.Commands(protocol.KindMetrics))
}

// TestUnimplementedReconnects: a proxy that ends one stream with
// Unimplemented makes the agent half-close everything and register again
// under a new id at once (the reconnect interval is an hour).
func TestUnimplementedReconnects(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1, reject: func(method, agentID string) error {
		if method == fixture.MethodStreamCrashDiagnostics && agentID == "agent-1" {
			return status.Error(codes.Unimplemented, "method StreamCrashDiagnostics not implemented")
		}
		return nil
	}})
	cfg := baseConfig(p)
	cfg.ReconnectInterval = time.Hour
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)

	first := waitRegistered(t, a, 1)
	second := waitRegistered(t, a, 2)
	require.Equal(t, "agent-1", first)
	require.Equal(t, "agent-2", second)
	require.Equal(t, 1, a.Reconnects())
	lastErr := a.LastStreamError()
	require.Equal(t, codes.Unimplemented, status.Code(lastErr), "last error: %v", lastErr)
	require.ErrorContains(t, lastErr, "crash stream")

	old := p.streamsOf(t, first, 5) // all but the rejected crash stream
	for method, ps := range old {
		waitClosed(t, ps.ended, method)
		require.ErrorIs(t, ps.endErr, io.EOF, "%s was half-closed", method)
	}
	fresh := p.streamsOf(t, second, 6)
	require.Contains(t, fresh, fixture.MethodStreamCrashDiagnostics)
	rs1, rs2 := next(t, p.regs), next(t, p.regs)
	require.True(t, proto.Equal(rs1.req, rs2.req), "re-registration sends the same request")
}

// TestNoReconnect checks that Run returns the error that ended the first
// session or attempt when NoReconnect is set.
func TestNoReconnect(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := lis.Addr().String()
	require.NoError(t, lis.Close())

	tests := []struct {
		name     string
		proxy    *fakeProxy
		addr     string
		wantCode codes.Code
		wantText string
	}{
		{
			name: "stream unimplemented",
			proxy: &fakeProxy{hbSeconds: 1, reject: func(method, _ string) error {
				if method == fixture.MethodStreamMetrics {
					return status.Error(codes.Unimplemented, "method StreamMetrics not implemented")
				}
				return nil
			}},
			wantCode: codes.Unimplemented,
			wantText: "metrics stream",
		},
		{
			name: "registration rejected",
			proxy: &fakeProxy{regReply: func(int, string) *fodcv1.RegisterAgentResponse {
				return &fodcv1.RegisterAgentResponse{Message: "pod name cannot be empty"}
			}},
			wantCode: codes.Unknown,
			wantText: "registration failed: pod name cannot be empty",
		},
		{
			name: "registration without id",
			proxy: &fakeProxy{regReply: func(int, string) *fodcv1.RegisterAgentResponse {
				return &fodcv1.RegisterAgentResponse{Success: true, HeartbeatIntervalSeconds: 1}
			}},
			wantCode: codes.Unknown,
			wantText: "registration response missing agent ID",
		},
		{name: "proxy down", addr: deadAddr, wantCode: codes.Unavailable, wantText: "registration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{
				ProxyAddr:   tc.addr,
				Register:    &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "banyand-data-0"},
				NoReconnect: true,
			}
			if tc.proxy != nil {
				cfg.ProxyAddr = startProxy(t, tc.proxy).addr
			}
			a, err := New(cfg)
			require.NoError(t, err)
			_, wait := runAgent(t, a)
			err = wait()
			require.Error(t, err)
			require.ErrorContains(t, err, tc.wantText)
			require.Equal(t, tc.wantCode, status.Code(err), "error: %v", err)
			require.Equal(t, err, a.LastStreamError())
			require.Zero(t, a.Reconnects())
		})
	}
}

// TestRetryAfterFailedAttempt: a rejected registration is retried after the
// reconnect interval and the retry registers.
func TestRetryAfterFailedAttempt(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1, regReply: func(n int, _ string) *fodcv1.RegisterAgentResponse {
		if n == 1 {
			return &fodcv1.RegisterAgentResponse{Message: "maximum number of agents (1) reached"}
		}
		return nil
	}})
	cfg := baseConfig(p)
	cfg.ReconnectInterval = time.Millisecond
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	require.Equal(t, "agent-2", waitRegistered(t, a, 1))
	require.Equal(t, 1, a.Registrations())
	require.Equal(t, 1, a.Reconnects())
	require.ErrorContains(t, a.LastStreamError(), "maximum number of agents (1) reached")
}

// TestCancelHalfClosesAndLeaksNothing: cancelling Run half-closes every
// stream (the proxy sees io.EOF), returns nil and leaves no goroutine.
func TestCancelHalfClosesAndLeaksNothing(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	before := goleak.IgnoreCurrent()
	a, err := New(baseConfig(p))
	require.NoError(t, err)
	cancel, wait := runAgent(t, a)
	id := waitRegistered(t, a, 1)
	streams := p.streamsOf(t, id, 6)
	ms := streams[fixture.MethodStreamMetrics]
	ms.out <- &fodcv1.StreamMetricsResponse{} // a live, answered stream
	nextMsg[*fodcv1.StreamMetricsRequest](t, ms)

	cancel()
	require.NoError(t, wait())
	for method, ps := range streams {
		waitClosed(t, ps.ended, method)
		require.ErrorIs(t, ps.endErr, io.EOF, "%s was half-closed", method)
	}
	require.Zero(t, a.Reconnects(), "cancellation is not a reconnect")
	require.NoError(t, a.LastStreamError())
	goleak.VerifyNone(t, before)
}

// TestReplies covers the reply rules of the streams other than metrics. A
// command that must get no reply is followed by one that gets a reply, and
// the first message that arrives must belong to the second.
func TestReplies(t *testing.T) {
	topo := &fodcv1.StreamClusterTopologyRequest{Topology: &fodcv1.Topology{Calls: []*fodcv1.Call{{Id: "a-b", Source: "a", Target: "b"}}}}
	life := &fodcv1.StreamLifecycleRequest{PodName: "banyand-data-0", LifecycleData: &fodcv1.LifecycleData{
		Reports: []*fodcv1.LifecycleReport{{Filename: "20260101_000000.json", ReportJson: "{}"}},
	}}
	schema := []*fodcv1.StreamSchemaRegistryRequest{
		{Group: &fodcv1.SchemaRegistryGroup{Group: "sw_metric", Objects: []*fodcv1.SchemaObjectFingerprint{{Kind: "measure", Name: "m", Fingerprint: 7}}}},
		{Group: &fodcv1.SchemaRegistryGroup{Group: "sw_record", Error: "list groups: boom"}},
	}
	crash := []*fodcv1.StreamCrashDiagnosticsRequest{{ArtifactDir: "/a"}, {ArtifactDir: "/b"}}
	records := []*fodcv1.PressureProfileRecord{{ProfileId: "p1"}, {ProfileId: "p2"}}
	profile := bytes.Repeat([]byte("0123456789"), (5<<20)/20) // 2.5 MiB

	var lifeCalls, crashCalls atomic.Int64
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	cfg := baseConfig(p)
	cfg.Topology = func() *fodcv1.StreamClusterTopologyRequest { return topo }
	cfg.Lifecycle = func() *fodcv1.StreamLifecycleRequest {
		if lifeCalls.Add(1) == 1 {
			return nil // the collection failed: no reply
		}
		return life
	}
	cfg.SchemaRegistry = func() []*fodcv1.StreamSchemaRegistryRequest { return schema }
	cfg.Crash = func() []*fodcv1.StreamCrashDiagnosticsRequest {
		if crashCalls.Add(1) == 1 {
			return nil
		}
		return crash
	}
	cfg.PressureRecords = func() []*fodcv1.PressureProfileRecord { return records }
	cfg.PressureFile = func(profileID, typ string) ([]byte, error) {
		if profileID == "p1" && typ == "heap" {
			return profile, nil
		}
		return nil, errors.New("open profile: no such file or directory")
	}
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	id := waitRegistered(t, a, 1)
	s := p.streamsOf(t, id, 6)

	t.Run("topology only when requested", func(t *testing.T) {
		ts := s[fixture.MethodStreamClusterTopology]
		ts.out <- &fodcv1.StreamClusterTopologyResponse{}
		ts.out <- &fodcv1.StreamClusterTopologyResponse{RequestTopology: true}
		require.True(t, proto.Equal(topo, nextMsg[*fodcv1.StreamClusterTopologyRequest](t, ts)))
		require.Equal(t, 2, a.Commands(protocol.KindTopology))
	})
	t.Run("lifecycle sends nothing when the callback returns nil", func(t *testing.T) {
		ls := s[fixture.MethodStreamLifecycle]
		ls.out <- &fodcv1.StreamLifecycleResponse{RequestLifecycle: true}
		ls.out <- &fodcv1.StreamLifecycleResponse{RequestLifecycle: true}
		require.True(t, proto.Equal(life, nextMsg[*fodcv1.StreamLifecycleRequest](t, ls)))
		require.Equal(t, int64(2), lifeCalls.Load())
	})
	t.Run("schema registry chunks then done", func(t *testing.T) {
		ss := s[fixture.MethodStreamSchemaRegistry]
		ss.out <- &fodcv1.StreamSchemaRegistryResponse{RequestRegistry: true}
		for _, want := range schema {
			require.True(t, proto.Equal(want, nextMsg[*fodcv1.StreamSchemaRegistryRequest](t, ss)))
		}
		done := nextMsg[*fodcv1.StreamSchemaRegistryRequest](t, ss)
		require.True(t, done.GetDone())
		require.Nil(t, done.GetGroup())
	})
	t.Run("crash one message per record and nothing for none", func(t *testing.T) {
		cs := s[fixture.MethodStreamCrashDiagnostics]
		cs.out <- &fodcv1.StreamCrashDiagnosticsResponse{RequestDiagnostics: true}
		cs.out <- &fodcv1.StreamCrashDiagnosticsResponse{RequestDiagnostics: true}
		for _, want := range crash {
			require.True(t, proto.Equal(want, nextMsg[*fodcv1.StreamCrashDiagnosticsRequest](t, cs)))
		}
		require.Equal(t, int64(2), crashCalls.Load())
	})
	ps := s[fixture.MethodStreamPressureProfiles]
	t.Run("pressure list", func(t *testing.T) {
		ps.out <- &fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_ListProfiles{
			ListProfiles: &fodcv1.ListProfiles{RequestId: "list-1"},
		}}
		for _, want := range records {
			got := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps)
			require.True(t, proto.Equal(want, got.GetRecord()), "record: %v", got)
		}
		done := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps)
		require.Equal(t, "list-1", done.GetListComplete().GetRequestId())
	})
	fetch := func(reqID, profileID, typ string) *fodcv1.StreamPressureProfilesResponse {
		return &fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_FetchProfile{
			FetchProfile: &fodcv1.FetchPressureProfile{RequestId: reqID, ProfileId: profileID, Type: typ, Filepath: "/x/" + profileID},
		}}
	}
	t.Run("pressure fetch in 1 MiB chunks", func(t *testing.T) {
		ps.out <- fetch("f-1", "p1", "heap")
		var got []byte
		var sizes []int
		for {
			c := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps).GetChunk()
			require.NotNil(t, c)
			require.Equal(t, []string{"f-1", "p1", "heap", ""}, []string{c.GetRequestId(), c.GetProfileId(), c.GetType(), c.GetError()})
			if c.GetLast() {
				require.Empty(t, c.GetData())
				break
			}
			sizes = append(sizes, len(c.GetData()))
			got = append(got, c.GetData()...)
		}
		require.Equal(t, []int{1 << 20, 1 << 20, 1 << 19}, sizes)
		require.Equal(t, profile, got)
	})
	t.Run("pressure fetch error", func(t *testing.T) {
		ps.out <- fetch("f-2", "p2", "goroutine")
		c := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps).GetChunk()
		require.Equal(t, "f-2", c.GetRequestId())
		require.Equal(t, "p2", c.GetProfileId())
		require.Equal(t, "goroutine", c.GetType())
		require.True(t, c.GetLast())
		require.Equal(t, "open profile: no such file or directory", c.GetError())
	})
}

// TestDefaults checks the replies an agent gives when the callbacks are nil.
func TestDefaults(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	cfg := baseConfig(p)
	cfg.Register = &fodcv1.RegisterAgentRequest{
		NodeRole: "ROLE_LIAISON", PodName: "banyand-liaison-0",
		Labels: map[string]string{"type": "hot"}, ContainerNames: []string{"liaison"},
	}
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)
	id := waitRegistered(t, a, 1)
	s := p.streamsOf(t, id, 6)

	ms := s[fixture.MethodStreamMetrics]
	ms.out <- &fodcv1.StreamMetricsResponse{}
	m := nextMsg[*fodcv1.StreamMetricsRequest](t, ms)
	require.Len(t, m.GetMetrics(), defaultSyntheticSeries)
	for _, metric := range m.GetMetrics() {
		require.Equal(t, "ROLE_LIAISON", metric.GetLabels()["node_role"])
		require.Equal(t, "banyand-liaison-0", metric.GetLabels()["pod_name"])
		require.Equal(t, "liaison", metric.GetLabels()["container_name"])
		require.Equal(t, "hot", metric.GetLabels()["node_type"])
	}

	ts := s[fixture.MethodStreamClusterTopology]
	ts.out <- &fodcv1.StreamClusterTopologyResponse{RequestTopology: true}
	topo := nextMsg[*fodcv1.StreamClusterTopologyRequest](t, ts)
	require.NotNil(t, topo.GetTopology())
	require.Empty(t, topo.GetTopology().GetNodes())

	ls := s[fixture.MethodStreamLifecycle]
	ls.out <- &fodcv1.StreamLifecycleResponse{RequestLifecycle: true}
	life := nextMsg[*fodcv1.StreamLifecycleRequest](t, ls)
	require.Equal(t, "banyand-liaison-0", life.GetPodName())
	require.NotNil(t, life.GetLifecycleData(), "lifecycle_data is empty but present")

	ss := s[fixture.MethodStreamSchemaRegistry]
	ss.out <- &fodcv1.StreamSchemaRegistryResponse{RequestRegistry: true}
	require.True(t, nextMsg[*fodcv1.StreamSchemaRegistryRequest](t, ss).GetDone())

	ps := s[fixture.MethodStreamPressureProfiles]
	ps.out <- &fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_ListProfiles{
		ListProfiles: &fodcv1.ListProfiles{RequestId: "r"},
	}}
	require.Equal(t, "r", nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps).GetListComplete().GetRequestId())
	ps.out <- &fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_FetchProfile{
		FetchProfile: &fodcv1.FetchPressureProfile{RequestId: "f", ProfileId: "x", Type: "heap"},
	}}
	c := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps).GetChunk()
	require.True(t, c.GetLast())
	require.NotEmpty(t, c.GetError())
}

func TestRunTwice(t *testing.T) {
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	a, err := New(baseConfig(p))
	require.NoError(t, err)
	runAgent(t, a)
	waitRegistered(t, a, 1)
	require.EqualError(t, a.Run(context.Background()), "agent already running")
}
