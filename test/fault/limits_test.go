package fault

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
)

// dial opens a hand-made client connection to the proxy, from the local
// address src when not empty (127.0.0.0/8 is all loopback on Linux, so a
// test can be several peers).
func dial(t *testing.T, addr, src string) fodcv1.FODCServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if src != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", a)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return fodcv1.NewFODCServiceClient(conn)
}

// register sends one registration and returns the answer and the code the
// stream then ends with (codes.OK while it stays open, until ctx ends).
func register(t *testing.T, ctx context.Context, c fodcv1.FODCServiceClient, req *fodcv1.RegisterAgentRequest) (*fodcv1.RegisterAgentResponse, codes.Code) {
	t.Helper()
	st, err := c.RegisterAgent(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(req))
	resp, err := st.Recv()
	if err != nil {
		return nil, status.Code(err)
	}
	if resp.GetSuccess() {
		return resp, codes.OK
	}
	_, err = st.Recv()
	require.Error(t, err)
	return resp, status.Code(err)
}

// Registrations over a limit are refused with success=false, a message
// naming the limit, a stream ended with InvalidArgument, and a counter
// per reason; the agents already registered keep answering whole.
func TestOversizeRegistrations(t *testing.T) {
	p := startProxy(t)
	perAgent := healthy(t, p)
	base := p.usage(t)
	peak := p.peak(t)
	many := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("l%d", i)] = "v"
		}
		return m
	}
	containers := make([]string, 17)
	for i := range containers {
		containers[i] = fmt.Sprintf("c%d", i)
	}
	c := dial(t, p.grpcAddr, "")
	for _, tc := range []struct {
		name, reason string
		req          *fodcv1.RegisterAgentRequest
	}{
		{"10000 labels", "labels", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "big-0", Labels: many(10000)}},
		{"100 KB pod name", "name_length", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: strings.Repeat("p", 100_000)}},
		{"1 MiB label name", "name_length", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "big-0", Labels: map[string]string{strings.Repeat("k", 1<<20): "v"}}},
		{"1 MiB label value", "value_length", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "big-0", Labels: map[string]string{"k": strings.Repeat("v", 1<<20)}}},
		{"17 containers", "containers", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "big-0", ContainerNames: containers}},
	} {
		before := p.counter(t, "fodc_proxy_registrations_rejected_total", "reason", tc.reason)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		resp, code := register(t, ctx, c, tc.req)
		cancel()
		require.NotNil(t, resp, tc.name)
		require.False(t, resp.GetSuccess(), tc.name)
		require.NotEmpty(t, resp.GetMessage(), tc.name)
		require.Less(t, len(resp.GetMessage()), 1024, "%s: the message does not echo the oversize input", tc.name)
		require.Equal(t, codes.InvalidArgument, code, tc.name)
		require.Equal(t, before+1, p.counter(t, "fodc_proxy_registrations_rejected_total", "reason", tc.reason), tc.name)
		t.Logf("%s: %q", tc.name, resp.GetMessage())
	}
	require.NotContains(t, clusterStatus(t, p.base()), "big-0")
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)
	top := peak()
	settle, u := p.settle(t, base)
	figure(t, "5 oversize registrations refused (InvalidArgument); baseline %s, peak RSS %.1f MiB, after %s (settled in %s)",
		base, float64(top)/(1<<20), u, settle.Round(time.Millisecond))
}

// badReply builds a metrics reply that breaks one limit.
func badReply(reason string) *fodcv1.StreamMetricsRequest {
	now := timestamppb.Now()
	metric := func(name string, labels map[string]string) *fodcv1.Metric {
		return &fodcv1.Metric{Name: name, Labels: labels, Value: 1, Timestamp: now}
	}
	var ms []*fodcv1.Metric
	switch reason {
	case "label_name_length":
		ms = append(ms, metric("bad_metric", map[string]string{strings.Repeat("k", 1<<20): "v"}))
	case "label_value_length":
		ms = append(ms, metric("bad_metric", map[string]string{"k": strings.Repeat("v", 1<<20)}))
	case "labels_per_series":
		labels := make(map[string]string, 100_000)
		for i := range 100_000 {
			labels[fmt.Sprintf("l%d", i)] = "v"
		}
		ms = append(ms, metric("bad_metric", labels))
	case "metric_name_length":
		ms = append(ms, metric(strings.Repeat("m", 1<<20), nil))
	case "series_per_reply":
		for i := range 10_001 {
			ms = append(ms, metric("bad_metric", map[string]string{"i": fmt.Sprint(i)}))
		}
	case "timestamp_out_of_range":
		ms = append(ms, metric("good_metric", nil), &fodcv1.Metric{Name: "bad_metric", Value: 1, Timestamp: timestamppb.New(time.Date(1970, 1, 1, 0, 0, 1, 0, time.UTC))},
			&fodcv1.Metric{Name: "bad_metric", Labels: map[string]string{"far": "1"}, Value: 1, Timestamp: timestamppb.New(time.Now().Add(48 * time.Hour))})
	case "oversize_message":
		ms = append(ms, metric("bad_metric", map[string]string{"k": strings.Repeat("v", 3<<20)}))
	case "undecodable":
		ms = append(ms, metric("bad metric{", map[string]string{"0bad label": "\xff\xfe"}))
	}
	return &fodcv1.StreamMetricsRequest{Metrics: ms, Timestamp: now}
}

// Replies over each limit are refused whole and counted by reason; the
// agent that sent one is reported down for that scrape but keeps its
// stream, the other agents' data is complete, and memory comes back. A
// message over --grpc-max-msg-size ends the agent's stream
// (ResourceExhausted) and it registers again.
func TestOversizeAndMalformedReplies(t *testing.T) {
	p := startProxy(t, "--max-series-per-reply", "10000", "--grpc-max-msg-size", "2097152")
	perAgent := healthy(t, p)
	base := p.usage(t)
	peak := p.peak(t)
	var lines []string
	for _, reason := range []string{"label_name_length", "label_value_length", "labels_per_series", "metric_name_length", "series_per_reply", "timestamp_out_of_range", "oversize_message", "undecodable"} {
		t.Run(reason, func(t *testing.T) {
			reply := badReply(reason)
			pod := "bad-" + strings.ReplaceAll(reason, "_", "-")
			a, stop := runSim(t, agentsim.Config{
				ProxyAddr: p.grpcAddr, Register: dataNode(pod), CloseGrace: -1,
				Metrics: func(*fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest { return reply },
			})
			defer stop()
			require.Eventually(t, func() bool { return clusterStatus(t, p.base())[pod] == "online" }, wait, poll)
			mfs := p.self(t)
			rejected := value(mfs, "fodc_proxy_agent_replies_rejected_total", "reason", reason)
			samples := value(mfs, "fodc_proxy_samples_rejected_total", "reason", reason)
			timeouts := value(mfs, "fodc_proxy_agent_requests_total", "result", "timeout")
			decodeErrors := value(mfs, "fodc_proxy_agent_reply_decode_errors_total")

			r := get(t, p.base()+"/metrics?role=data")
			complete(t, r, perAgent)
			mfs = p.self(t)
			switch reason {
			case "timestamp_out_of_range":
				require.Equal(t, 1.0, upMap(t, r.body)[pod])
				require.Contains(t, r.body, "\ngood_metric{")
				require.NotContains(t, r.body, "\nbad_metric{")
				require.GreaterOrEqual(t, value(mfs, "fodc_proxy_samples_rejected_total", "reason", reason), samples+2)
			case "oversize_message":
				require.Equal(t, 0.0, upMap(t, r.body)[pod])
				// gRPC ends the stream (RST_STREAM RESOURCE_EXHAUSTED to
				// the agent): the refusal is counted and the failed
				// request is an error, not a timeout.
				require.Eventually(t, func() bool {
					return value(p.self(t), "fodc_proxy_agent_messages_too_large_total", "stream", "metrics") >= 1
				}, wait, poll)
				require.Equal(t, timeouts, value(mfs, "fodc_proxy_agent_requests_total", "result", "timeout"))
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				_, err := a.WaitRegistered(ctx, 2)
				require.NoError(t, err, "the agent registers again after its stream was ended")
			case "undecodable":
				// Names and label values are strings on the wire: the
				// proxy either drops or escapes them; the answer must
				// still parse (families() fails otherwise).
				up := upMap(t, r.body)[pod]
				t.Logf("malformed names: fodc_agent_up=%g, decode errors %g -> %g", up, decodeErrors, value(mfs, "fodc_proxy_agent_reply_decode_errors_total"))
			default:
				require.Equal(t, 0.0, upMap(t, r.body)[pod], "a refused reply reports the agent down")
				require.Greater(t, value(mfs, "fodc_proxy_agent_replies_rejected_total", "reason", reason), rejected)
				require.Equal(t, 1, a.Registrations(), "a refused reply does not disconnect the agent")
			}
			lines = append(lines, reason)
		})
	}
	top := peak()
	settle, u := p.settle(t, base)
	figure(t, "%d kinds refused and counted (%s); baseline %s, peak RSS %.1f MiB, after %s (settled in %s)",
		len(lines), strings.Join(lines, ", "), base, float64(top)/(1<<20), u, settle.Round(time.Millisecond))
}

// crashRecords returns n records of size bytes each under distinct
// artifact directories.
func crashRecords(n, size int, tag string) []*fodcv1.StreamCrashDiagnosticsRequest {
	stack := strings.Repeat("x", size)
	out := make([]*fodcv1.StreamCrashDiagnosticsRequest, n)
	for i := range out {
		out[i] = &fodcv1.StreamCrashDiagnosticsRequest{
			FetchedAt: timestamppb.Now(), SourceEndpoint: "file:///crash", ArtifactDir: fmt.Sprintf("/crash/%s-%d", tag, i),
			Files:       []string{"panic.json"},
			PanicRecord: &fodcv1.CrashPanicRecord{OccurredAt: timestamppb.Now(), Component: "fault", PanicValue: "boom", GoroutineStack: stack},
		}
	}
	return out
}

// A crash-record flood: 40 records of 8 MiB each are dropped on arrival
// (record_size), 40 of 512 KiB are kept only up to --max-crash-bytes, and
// records nobody asked for are dropped (unsolicited). /diagnostics answers,
// memory stays bounded and comes back.
func TestCrashRecordFlood(t *testing.T) {
	long(t)
	p := startProxy(t, "--max-crash-bytes", "4194304", "--diagnostics-window", "1s")
	perAgent := healthy(t, p)
	base := p.usage(t)
	peak := p.peak(t)

	huge := crashRecords(40, 8<<20, "huge")
	_, stopHuge := runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode("crash-huge"), CloseGrace: -1,
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest { return huge }})
	many := crashRecords(40, 512<<10, "many")
	_, stopMany := runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode("crash-many"), CloseGrace: -1,
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest { return many }})
	start := time.Now()
	r := get(t, p.base()+"/diagnostics")
	took := time.Since(start)
	require.Equal(t, http.StatusOK, r.code)
	// An agent's crash stream may open after the first request reached
	// the others: ask again until both floods have arrived.
	require.Eventually(t, func() bool {
		mfs := p.self(t)
		if value(mfs, "fodc_proxy_crash_records_rejected_total", "reason", "record_size") >= 40 &&
			value(mfs, "fodc_proxy_crash_records_evicted_total") > 0 {
			return true
		}
		require.Equal(t, http.StatusOK, get(t, p.base()+"/diagnostics").code)
		return false
	}, 2*wait, 100*time.Millisecond, "the 8 MiB records were not all dropped or the 512 KiB ones never filled --max-crash-bytes")
	cached := p.counter(t, "fodc_proxy_crash_record_bytes")
	require.LessOrEqual(t, cached, 4194304.0)
	require.Greater(t, cached, 0.0)
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)

	// Unsolicited: a hand-made agent sends a record without being asked.
	c := dial(t, p.grpcAddr, "")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, code := register(t, ctx, c, dataNode("crash-rogue"))
	require.Equal(t, codes.OK, code)
	st, err := c.StreamCrashDiagnostics(metadata.AppendToOutgoingContext(ctx, protocol.MetadataAgentID, resp.GetAgentId()))
	require.NoError(t, err)
	for _, rec := range crashRecords(3, 1024, "rogue") {
		require.NoError(t, st.Send(rec))
	}
	p.waitCounter(t, 3, "fodc_proxy_crash_records_rejected_total", "reason", "unsolicited")
	cancel()

	stopHuge()
	stopMany()
	top := peak()
	// Hundreds of MiB passed through: the heap's garbage goes back to the
	// kernel only after a collection and the scavenger, hence the margin.
	settle, u := p.settle(t, base, 96<<20)
	figure(t, "/diagnostics answered in %s; 40x8 MiB dropped (record_size), cache held %.1f MiB of 20 MiB offered (limit 4 MiB); peak RSS %.1f MiB (baseline %s), after %s (settled in %s)",
		took.Round(time.Millisecond), cached/(1<<20), float64(top)/(1<<20), base, u, settle.Round(time.Millisecond))
}
