package uplink

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/recorder"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

// wait bounds every event-based wait; it is never expected to elapse.
const wait = 20 * time.Second

// startProxy runs our proxy in process on loopback until the test ends.
func startProxy(t *testing.T) *proxy.Proxy {
	t.Helper()
	p, _ := testproxy.Start(t, nil)
	return p
}

// startClient runs c until the test ends.
func startClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

// waitStatus waits until cond holds for c's status.
func waitStatus(t *testing.T, c *Client, cond func(Status) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, c.WaitStatus(ctx, cond))
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	client := &http.Client{Timeout: wait}
	resp, err := client.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(t, json.Unmarshal(body, v), string(body))
}

func gauge(name, series string, v float64, ts int64) scrape.Family {
	return scrape.Family{Name: name, Help: "test gauge", Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Samples: []scrape.Sample{
		{Name: name, Labels: []scrape.Label{{Name: "s", Value: series}}, Value: v, TimestampMs: ts},
	}}
}

type windowSeries struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Data   []struct {
		Timestamp time.Time `json:"timestamp"`
		Value     float64   `json:"value"`
	} `json:"data"`
}

// The agent's answers reach our proxy's HTTP API unchanged: every window
// sample keeps its own time (series that appear late or skip a scrape
// too), bounds are inclusive, and latest values carry the identity.
func TestAgainstOurProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for real heartbeats; run without -short")
	}
	p := startProxy(t)
	rec, err := recorder.New(recorder.Options{BudgetBytes: 8 << 20})
	require.NoError(t, err)
	// Three scrapes 10 s apart, with odd milliseconds: b skips the second,
	// c appears in the second.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second).Add(123 * time.Millisecond)
	t1, t2 := t0.Add(10*time.Second+7*time.Millisecond), t0.Add(20*time.Second+501*time.Millisecond)
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	rec.Append("node", ms(t0), []scrape.Family{gauge("v", "a", 1, ms(t0)), gauge("w", "b", 10, ms(t0))})
	rec.Append("node", ms(t1), []scrape.Family{gauge("v", "a", 2, ms(t1)), gauge("x", "c", 100, ms(t1))})
	rec.Append("node", ms(t2), []scrape.Family{gauge("v", "a", 3, ms(t2)), gauge("w", "b", 11, ms(t2)), gauge("x", "c", 101, ms(t2))})

	id := Identity{
		Role:           roles.Role{Kind: roles.KindData, Tier: "hot"},
		PodName:        "data-hot-0",
		ContainerNames: []string{"data"},
		Primary:        Address{IP: "10.1.2.3", Port: 17912},
		Secondary:      map[string]Address{"gossip": {IP: "10.1.2.3", Port: 17932}, "http": {IP: "10.1.2.3", Port: 17913}},
	}
	reg := prometheus.NewRegistry()
	c, err := New(Options{ProxyAddr: p.GRPCAddr(), Identity: func() Identity { return id }, Source: rec, Registerer: reg})
	require.NoError(t, err)
	startClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, c.WaitRegistered(ctx, 1))
	require.Eventually(t, func() bool { return p.Streams.Has(c.Status().AgentID, "metrics") }, wait, 5*time.Millisecond)
	base := "http://" + p.HTTPAddr()

	t.Run("window", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			start, end time.Time
			want       map[string][]time.Time
		}{
			{"all", t0, t2, map[string][]time.Time{"a": {t0, t1, t2}, "b": {t0, t2}, "c": {t1, t2}}},
			{"inclusive bounds", t1, t2, map[string][]time.Time{"a": {t1, t2}, "b": {t2}, "c": {t1, t2}}},
			{"one instant", t1, t1, map[string][]time.Time{"a": {t1}, "c": {t1}}},
			{"between samples", t0.Add(time.Millisecond), t1.Add(-time.Millisecond), map[string][]time.Time{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q := url.Values{"pod_name": {"data-hot-0"}, "start_time": {tc.start.Format(time.RFC3339Nano)}, "end_time": {tc.end.Format(time.RFC3339Nano)}}
				var got []windowSeries
				getJSON(t, base+"/metrics-windows?"+q.Encode(), &got)
				times := map[string][]time.Time{}
				for _, s := range got {
					require.Equal(t, "data-hot-0", s.Labels["pod_name"])
					require.Equal(t, "ROLE_DATA", s.Labels["node_role"])
					require.Equal(t, "data", s.Labels["container_name"])
					require.Equal(t, "hot", s.Labels["node_type"])
					for _, d := range s.Data {
						times[s.Labels["s"]] = append(times[s.Labels["s"]], d.Timestamp)
					}
				}
				require.Len(t, times, len(tc.want))
				for series, want := range tc.want {
					require.Len(t, times[series], len(want), "series %s", series)
					for i := range want {
						require.True(t, want[i].Equal(times[series][i]), "series %s sample %d: want %s, got %s", series, i, want[i], times[series][i])
					}
				}
			})
		}
	})

	t.Run("latest", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: wait}).Get(base + "/metrics?pod_name=data-hot-0")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		text := string(body)
		for _, want := range []string{`v{`, `s="a"`, `} 3`, `w{`, `} 11`, `x{`, `} 101`, `node_role="ROLE_DATA"`, `pod_name="data-hot-0"`, `container_name="data"`} {
			require.Contains(t, text, want)
		}
		require.NotContains(t, text, `} 2`, "only the latest values")
	})

	t.Run("cluster shows the declared addresses", func(t *testing.T) {
		var got struct {
			Nodes []struct {
				PodName  string `json:"pod_name"`
				RoleName string `json:"role_name"`
				Tier     string `json:"tier"`
				Primary  *struct {
					IP   string
					Port int
				} `json:"primary_address"`
				Secondary map[string]struct {
					IP   string `json:"ip"`
					Port int    `json:"port"`
				} `json:"secondary_addresses"`
			} `json:"nodes"`
		}
		getJSON(t, base+"/cluster", &got)
		require.Len(t, got.Nodes, 1)
		n := got.Nodes[0]
		require.Equal(t, "data-hot-0", n.PodName)
		require.Equal(t, "ROLE_DATA", n.RoleName)
		require.Equal(t, "hot", n.Tier)
		require.NotNil(t, n.Primary)
		require.Equal(t, 17912, n.Primary.Port)
		require.Equal(t, 17932, n.Secondary["gossip"].Port)
		require.Equal(t, "10.1.2.3", n.Secondary["http"].IP)
	})

	t.Run("heartbeats keep one registration", func(t *testing.T) {
		waitStatus(t, c, func(st Status) bool { return st.Heartbeats >= 2 })
		st := c.Status()
		require.True(t, st.Connected)
		require.Equal(t, 1, st.Registrations)
		require.Equal(t, 1, st.Attempts)
		require.Empty(t, st.Unimplemented)
		require.Equal(t, 1.0, testutil.ToFloat64(c.m.connected))
		require.Equal(t, 1.0, testutil.ToFloat64(c.m.registrations))
		require.GreaterOrEqual(t, testutil.ToFloat64(c.m.commands.WithLabelValues(protocol.KindMetrics.String())), 5.0)
		require.GreaterOrEqual(t, testutil.ToFloat64(c.m.commands.WithLabelValues(protocol.KindTopology.String())), 1.0)
		require.Zero(t, testutil.ToFloat64(c.m.replyErrors.WithLabelValues(protocol.KindMetrics.String())))
	})
}
