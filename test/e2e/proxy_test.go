package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
)

// An upstream HEAD agent opens all seven streams; it must stay connected
// through several heartbeats without a single reconnect (PROTOCOL.md §2.7).
func TestUpstreamAgentStaysConnectedThroughHeartbeats(t *testing.T) {
	slow(t)
	p, reg := startProxy(t, nil)
	a := connect(t, p, agentsim.Config{Register: dataNode("data-0", "hot")})
	require.Eventually(t, func() bool { return a.Heartbeats() >= 3 }, wait, 10*time.Millisecond)
	require.Equal(t, 1, a.Registrations())
	require.Zero(t, a.Reconnects())
	require.NoError(t, a.LastStreamError())
	for _, kind := range []string{"register", "metrics", "topology", "lifecycle", "crash", "pressure", "schema_registry"} {
		require.Eventually(t, func() bool {
			return gaugeValue(t, reg, "fodc_proxy_agent_streams_open", "stream", kind) == 1
		}, wait, 10*time.Millisecond, "stream %s", kind)
	}
	h := getHealth(t, "http://"+p.HTTPAddr())
	require.Equal(t, health{Status: "healthy", AgentsOnline: 1, AgentsTotal: 1}, h)
}

// gaugeValue reads the series of a gauge family with label=value.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// counterValue sums a counter family.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// Older upstream releases open fewer streams; they work all the same.
func TestOlderUpstreamReleases(t *testing.T) {
	slow(t)
	p, _ := startProxy(t, nil)
	for i, v := range []protocol.Release{protocol.ReleaseV0100, protocol.ReleaseV0103} {
		a := connect(t, p, agentsim.Config{Release: v, Register: dataNode(fmt.Sprintf("old-%d", i), "warm")})
		require.Eventually(t, func() bool { return a.Heartbeats() >= 2 }, wait, 10*time.Millisecond)
		require.Zero(t, a.Reconnects(), v.String())
	}
	r := get(t, "http://"+p.HTTPAddr()+"/metrics")
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, r.body, `pod_name="old-0"`)
	require.Contains(t, r.body, `pod_name="old-1"`)
}

// markers answers latest and window commands with different series, after
// a delay that makes the two requests overlap on every agent.
func markers(pod string) func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
	return func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
		labels := map[string]string{"pod_name": pod, "node_role": "ROLE_DATA"}
		if cmd.GetStartTime() == nil && cmd.GetEndTime() == nil {
			return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "latest_marker", Value: 1, Labels: labels, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE}}}
		}
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "window_marker", Value: 2, Labels: labels,
			Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Timestamp: cmd.GetStartTime()}}}
	}
}

// A latest and a window request in parallel on three agents each get their
// own answer (upstream weakness W1).
func TestConcurrentLatestAndWindowGetTheirOwnAnswers(t *testing.T) {
	p, _ := startProxy(t, nil)
	for i := range 3 {
		pod := fmt.Sprintf("data-%d", i)
		connect(t, p, agentsim.Config{Register: dataNode(pod, "hot"), Metrics: markers(pod),
			ReplyDelay: func(protocol.Kind) time.Duration { return 100 * time.Millisecond }})
	}
	base := "http://" + p.HTTPAddr()
	start := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	q := url.Values{"start_time": {start.Format(time.RFC3339)}, "end_time": {start.Add(time.Minute).Format(time.RFC3339)}}
	for round := range 3 {
		var latest, window response
		var wg sync.WaitGroup
		wg.Go(func() { latest = get(t, base+"/metrics") })
		wg.Go(func() { window = get(t, base+"/metrics-windows?"+q.Encode()) })
		wg.Wait()
		require.Equal(t, http.StatusOK, latest.code)
		require.Equal(t, http.StatusOK, window.code)
		require.NotContains(t, latest.body, "window_marker", "round %d", round)
		require.Equal(t, 3, strings.Count(latest.body, "\nlatest_marker{"), latest.body)
		var series []struct {
			Name    string `json:"name"`
			PodName string `json:"pod_name"`
			Data    []struct {
				Timestamp time.Time `json:"timestamp"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal([]byte(window.body), &series))
		require.Len(t, series, 3)
		for i, s := range series {
			require.Equal(t, "window_marker", s.Name)
			require.Equal(t, fmt.Sprintf("data-%d", i), s.PodName)
			require.True(t, s.Data[0].Timestamp.Equal(start))
		}
	}
}

// A hung agent costs one deadline: /metrics returns the other agents and
// marks the hung one down.
func TestHungAgentIsMarkedDownAndOthersReturned(t *testing.T) {
	slow(t)
	p, _ := startProxy(t, func(c *proxy.Config) { c.AgentReplyTimeout = 3 * time.Second })
	var agents []*agentsim.Agent
	for i := range 3 {
		agents = append(agents, connect(t, p, agentsim.Config{Register: dataNode(fmt.Sprintf("data-%d", i), "hot")}))
	}
	agents[1].SetHang(protocol.KindMetrics, true)
	r := get(t, "http://"+p.HTTPAddr()+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "2")
	require.Equal(t, http.StatusOK, r.code)
	require.Equal(t, "3", r.header.Get("X-Fodc-Agents-Selected"))
	require.Equal(t, "2", r.header.Get("X-Fodc-Agents-Answered"))
	upLine := regexp.MustCompile(`(?m)^fodc_agent_up\{[^}]*pod_name="(data-\d)"\} (\d)$`)
	ups := map[string]string{}
	for _, m := range upLine.FindAllStringSubmatch(r.body, -1) {
		ups[m[1]] = m[2]
	}
	require.Equal(t, map[string]string{"data-0": "1", "data-1": "0", "data-2": "1"}, ups)
	require.Contains(t, r.body, `pod_name="data-0"`)
	require.Contains(t, r.body, `banyandb_system_cpu_num{`)
	require.NotRegexp(t, `(?m)^banyandb_system_cpu_num\{[^}]*pod_name="data-1"`, r.body)

	// The simulated agent dropped the commands it saw while hung, so its
	// stream is misaligned: the proxy notices the stale command, closes the
	// stream, and the agent re-registers and answers again.
	agents[1].SetHang(protocol.KindMetrics, false)
	require.Eventually(t, func() bool {
		r := get(t, "http://"+p.HTTPAddr()+"/metrics")
		return r.header.Get("X-Fodc-Agents-Answered") == "3"
	}, wait, 50*time.Millisecond)
}

// One pod re-registering a thousand times leaves one agent. (The per-peer
// registration rate is off here: this is about supersession; the rate
// limit has its own test in test/fault.)
func TestRegistrationStormLeavesOneAgent(t *testing.T) {
	p, reg := startProxy(t, func(c *proxy.Config) { c.MaxAgents = 10; c.RegistrationsPerSecond = 0 })
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := fodcv1.NewFODCServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last fodcv1.FODCService_RegisterAgentClient
	for range 1000 {
		st, err := client.RegisterAgent(ctx)
		require.NoError(t, err)
		require.NoError(t, st.Send(dataNode("storm-0", "hot")))
		resp, err := st.Recv()
		require.NoError(t, err)
		require.True(t, resp.GetSuccess(), resp.GetMessage())
		last = st
	}
	require.NotNil(t, last)
	h := getHealth(t, "http://"+p.HTTPAddr())
	require.Equal(t, 1, h.AgentsTotal)
	require.Equal(t, 1, h.AgentsOnline)
	require.Equal(t, 999.0, counterValue(t, reg, "fodc_proxy_agent_supersessions_total"))
}

// Every recorded upstream session replays through the proxy: it registers,
// and its recorded metrics come out of /metrics enriched.
func TestFixtureReplay(t *testing.T) {
	slow(t)
	promtool := requireTool(t, "promtool") // before any work, not half-way
	names, err := fixture.Names()
	require.NoError(t, err)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			rec, err := fixture.Load(name)
			require.NoError(t, err)
			cfg, err := agentsim.FromRecording(rec)
			require.NoError(t, err)
			p, _ := startProxy(t, nil)
			a := connect(t, p, cfg)
			base := "http://" + p.HTTPAddr()
			pod := cfg.Register.GetPodName()

			r := get(t, base+"/metrics?pod_name="+pod)
			require.Equal(t, http.StatusOK, r.code)
			require.Equal(t, "1", r.header.Get("X-Fodc-Agents-Answered"))
			require.Contains(t, r.body, `fodc_agent_up{agent_id="`+a.AgentID()+`",node_role="`+cfg.Register.GetNodeRole()+`",pod_name="`+pod+`"} 1`)
			if cfg.Metrics != nil {
				reply := cfg.Metrics(&fodcv1.StreamMetricsResponse{})
				require.NotEmpty(t, reply.GetMetrics())
				for _, m := range reply.GetMetrics()[:min(20, len(reply.GetMetrics()))] {
					require.Contains(t, r.body, "\n"+m.GetName()+"{", "series %s of the recording", m.GetName())
				}
				for k, v := range cfg.Register.GetLabels() {
					require.Contains(t, r.body, fmt.Sprintf(`node_%s="%s"`, k, v))
				}
				require.NoError(t, promtoolCheck(promtool, r.body))
			}

			// The recorded window reply comes back with its own timestamps.
			w := get(t, base+"/metrics-windows?start_time=2026-11-26T00:00:00Z&end_time=2026-11-27T00:00:00Z")
			require.Equal(t, http.StatusOK, w.code)
			require.True(t, json.Valid([]byte(w.body)))

			var cl struct {
				Nodes []struct {
					PodName  string `json:"pod_name"`
					RoleName string `json:"role_name"`
					Status   string `json:"status"`
				} `json:"nodes"`
			}
			c := get(t, base+"/cluster")
			require.NoError(t, json.Unmarshal([]byte(c.body), &cl))
			require.Len(t, cl.Nodes, 1)
			require.Equal(t, pod, cl.Nodes[0].PodName)
			require.Equal(t, cfg.Register.GetNodeRole(), cl.Nodes[0].RoleName)
			require.Equal(t, "online", cl.Nodes[0].Status)
		})
	}
}

// promtoolCheck runs `promtool check metrics` and fails on format errors;
// lint findings (naming conventions of the agents' metrics) are allowed.
func promtoolCheck(bin, body string) error {
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Lint findings are "<metric> <problem>"; a format error is
		// "error while linting: ..." and stops the check.
		if strings.Contains(line, "error while linting") || strings.Contains(line, "text format parsing error") {
			return fmt.Errorf("promtool: %s", out)
		}
	}
	return nil
}

// The binary stops promptly and cleanly on SIGTERM with agents connected
// (upstream's proxy hangs, W8), and the agents see the proxy go away.
func TestProxyBinaryStopsOnSIGTERM(t *testing.T) {
	pp := startProxyProcess(t, "--heartbeat-interval", "1s", "--agent-heartbeat-timeout", "5s")
	a := startAgent(t, agentsim.Config{ProxyAddr: pp.grpcAddr, Register: dataNode("data-0", "hot"), ReconnectInterval: time.Hour})
	require.Eventually(t, func() bool { return a.Heartbeats() >= 1 }, wait, 10*time.Millisecond)
	require.Equal(t, 1, getHealth(t, "http://"+pp.httpAddr).AgentsTotal)
	require.NoError(t, pp.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-pp.exited:
	case <-time.After(wait):
		t.Fatalf("fodc-proxy did not stop on SIGTERM\n%s", pp.stderr.String())
	}
	require.NoError(t, pp.exitErr, pp.stderr.String())
	require.Contains(t, pp.stderr.String(), "FODC proxy stopped")
	require.Eventually(t, func() bool { return a.LastStreamError() != nil }, wait, 10*time.Millisecond)
}

func TestProxyBinaryRefusesBadFlags(t *testing.T) {
	bin := binary(t, "fodc-proxy")
	out, err := exec.Command(bin, "--agent-heartbeat-timeout", "30s", "--agent-cleanup-timeout", "10s").CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 2, exit.ExitCode())
	require.Contains(t, string(out), "agent-cleanup-timeout (10s) must be greater than agent-heartbeat-timeout (30s)")
}
