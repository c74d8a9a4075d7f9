package bench

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startProxy runs an in-process proxy on loopback ports until the test
// ends, with the default heartbeat settings.
func startProxy(t testing.TB) *proxy.Proxy {
	t.Helper()
	p, reg := testproxy.Start(t, func(c *proxy.Config) {
		d := proxy.DefaultConfig()
		c.HeartbeatInterval, c.AgentHeartbeatTimeout = d.HeartbeatInterval, d.AgentHeartbeatTimeout
	})
	// As the binary does: the Go runtime's series, among them
	// go_memstats_alloc_bytes_total, which the report reads.
	reg.MustRegister(collectors.NewGoCollector())
	return p
}

// TestRunSmoke is a short fodc-bench run against an in-process proxy: 20
// agents x 200 series, 2 scrapers, 10 scrapes of each endpoint.
func TestRunSmoke(t *testing.T) {
	p := startProxy(t)
	cfg := DefaultConfig()
	cfg.ProxyAddr, cfg.HTTPAddr = p.GRPCAddr(), p.HTTPAddr()
	cfg.ProxyPID = os.Getpid() // the proxy runs in this process
	cfg.Agents = 20
	cfg.Shape.Series = 200
	cfg.Shape.Families = 10
	cfg.HistoryDepth = 3
	cfg.Scrapers = 2
	cfg.Scrapes = 20
	cfg.Endpoints = []string{EndpointMetrics, EndpointMetricsWindows}
	cfg.Warmup = 1

	rep, err := Run(t.Context(), cfg, nil)
	require.NoError(t, err)

	require.Len(t, rep.Endpoints, 2)
	for _, e := range rep.Endpoints {
		t.Run(e.Endpoint, func(t *testing.T) {
			require.Equal(t, 10, e.Scrapes)
			require.Zero(t, e.Errors, e.FirstError)
			require.Zero(t, e.Partial)
			require.Zero(t, e.Short)
			require.Equal(t, 20*200, e.ExpectedSeries)
			require.EqualValues(t, 20*200, e.SeriesMin)
			require.InDelta(t, 20*200, e.SeriesMean, 0)
			require.Positive(t, e.P50)
			require.LessOrEqual(t, e.P50, e.P99)
			require.Positive(t, e.BytesMax)
			require.Positive(t, e.SeriesPerSecond)
			if e.Endpoint == EndpointMetrics {
				require.Positive(t, e.ProxyAllocPerScrape, "read from the proxy's own series in the answers")
				require.InDelta(t, e.ProxyAllocPerScrape/e.BytesMean, e.ProxyAllocPerAnswerByte, 1e-9)
			}
		})
	}
	require.EqualValues(t, 10*20*200*3, rep.Endpoints[1].Points, "window points = scrapes x agents x series x depth")
	require.Equal(t, 20, rep.Agents.Established)
	require.EqualValues(t, 20, rep.Agents.Registrations)
	// Concurrent identical requests share one command (coalescing), so
	// an agent may answer fewer commands than there were scrapes.
	require.LessOrEqual(t, rep.Agents.WindowReplies, int64(10*20))
	require.GreaterOrEqual(t, rep.Agents.WindowReplies, int64(20))
	require.GreaterOrEqual(t, rep.Agents.LatestReplies, int64(20))
	require.NotNil(t, rep.Proxy)
	require.Positive(t, rep.Proxy.PeakRSS)
	require.Positive(t, rep.Proxy.RSSBeforeAgents)

	var text, js strings.Builder
	require.NoError(t, rep.WriteText(&text))
	require.Contains(t, text.String(), "/metrics-windows")
	require.Contains(t, text.String(), "20 agents (head) x 200 series")
	require.NoError(t, rep.WriteJSON(&js))
	require.Contains(t, js.String(), `"series_min": 4000`)
}

// TestRunHungAgents checks that answers missing a hung agent are counted
// as partial and short, not as errors.
func TestRunHungAgents(t *testing.T) {
	p := startProxy(t)
	cfg := DefaultConfig()
	cfg.ProxyAddr, cfg.HTTPAddr = p.GRPCAddr(), p.HTTPAddr()
	cfg.Agents = 6
	cfg.HungFraction = 1.0 / 6 // one agent
	cfg.Shape.Series = 50
	cfg.Shape.Families = 5
	cfg.Scrapers = 1
	cfg.Scrapes = 2
	cfg.ScrapeTimeout = 2 * time.Second // generous: the hung agent costs the budget, a loaded machine the rest

	rep, err := Run(t.Context(), cfg, nil)
	require.NoError(t, err)
	require.Len(t, rep.Endpoints, 1)
	e := rep.Endpoints[0]
	require.Zero(t, e.Errors, e.FirstError)
	require.Equal(t, 2, e.Partial)
	require.Equal(t, 5*50, e.ExpectedSeries)
	require.EqualValues(t, 5*50, e.SeriesMin)
	require.Zero(t, e.Short)
	require.Positive(t, rep.Agents.IgnoredCommands)
}

func TestPayloads(t *testing.T) {
	tests := []struct {
		name       string
		shape      Shape
		families   int
		histograms int
	}{
		{"mixed", Shape{Series: 1000, Families: 20, Labels: 3, Cardinality: 10, HistogramShare: 0.25, Buckets: 8, Typed: true}, 20, 5},
		{"no histograms", Shape{Series: 101, Families: 7, Labels: 1, Cardinality: 20, Buckets: 5, Typed: true}, 7, 0},
		{"only histograms", Shape{Series: 100, Families: 3, Labels: 2, Cardinality: 10, HistogramShare: 1, Buckets: 10}, 3, 2},
		{"untyped", Shape{Series: 10, Families: 2, Labels: 1, Cardinality: 5, Buckets: 3}, 2, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPayloads(tc.shape, 4, 10*time.Second, time.Unix(1_700_000_000, 0))
			require.NoError(t, err)
			var latest fodcv1.StreamMetricsRequest
			require.NoError(t, proto.Unmarshal(p.Latest(PodName(42)), &latest))
			require.Len(t, latest.Metrics, tc.shape.Series)
			families := map[string]bool{}
			histograms := map[string]bool{}
			seen := map[string]bool{}
			for _, m := range latest.Metrics {
				require.True(t, strings.HasPrefix(m.Name, MetricPrefix), m.Name)
				require.Equal(t, "bench-000042", m.Labels["pod_name"])
				require.Equal(t, "ROLE_DATA", m.Labels["node_role"])
				require.Nil(t, m.Timestamp)
				if tc.shape.Typed {
					require.NotEqual(t, fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED, m.Type)
				} else {
					require.Equal(t, fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED, m.Type)
				}
				fam := m.Name
				if strings.Contains(m.Name, "_seconds_") {
					fam = m.Name[:strings.LastIndex(m.Name, "_")]
					histograms[fam] = true
				}
				families[fam] = true
				key := m.Name + labelKey(m.Labels)
				require.False(t, seen[key], "series repeats: %s", key)
				seen[key] = true
			}
			require.Len(t, families, tc.families)
			require.Len(t, histograms, tc.histograms)

			var window fodcv1.StreamMetricsRequest
			require.NoError(t, proto.Unmarshal(p.Window(PodName(7)), &window))
			require.Len(t, window.Metrics, 4*tc.shape.Series)
			require.Equal(t, int64(1_700_000_000-30), window.Metrics[0].GetTimestamp().GetSeconds())
			require.Equal(t, int64(1_700_000_000), window.Metrics[len(window.Metrics)-1].GetTimestamp().GetSeconds())
			require.Equal(t, "bench-000007", window.Metrics[0].Labels["pod_name"])
		})
	}
}

func labelKey(ls map[string]string) string {
	keys := make([]string, 0, len(ls))
	for k := range ls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + ls[k] + ",")
	}
	return b.String()
}

func TestShapeValidate(t *testing.T) {
	tests := []struct {
		name  string
		shape Shape
		want  string
	}{
		{"too few combinations", Shape{Series: 1000, Families: 1, Labels: 2, Cardinality: 10, Buckets: 1}, "--label-cardinality^--labels"},
		{"no families", Shape{Series: 10, Families: 0, Labels: 1, Cardinality: 10, Buckets: 1}, "--families"},
		{"share out of range", Shape{Series: 10, Families: 1, Labels: 1, Cardinality: 10, Buckets: 1, HistogramShare: 2}, "--histogram-share"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.shape.validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestCountText(t *testing.T) {
	body := "# HELP bench_c0000_total x\n# TYPE bench_c0000_total counter\n" +
		`bench_c0000_total{pod_name="a"} 1` + "\n" +
		`bench_c0000_total{pod_name="b",l0="` + strings.Repeat("x", 300<<10) + `"} 2` + "\n" +
		`fodc_agent_up{agent_id="a"} 1` + "\n" +
		`fodc_agent_up{agent_id="b"} 0` + "\n" +
		`other 3` + "\n" +
		`go_memstats_alloc_bytes_total 1.5e+07` + "\n" +
		`bench_g0001 4`
	c, err := countText(strings.NewReader(body))
	require.NoError(t, err)
	require.EqualValues(t, 3, c.series)
	require.EqualValues(t, 1, c.upZero)
	require.True(t, c.hasAlloc)
	require.InDelta(t, 1.5e7, c.alloc, 0)
	c, err = countText(strings.NewReader(`bench_g0001 4`))
	require.NoError(t, err)
	require.False(t, c.hasAlloc, "an answer without the proxy's own series")
}

func TestCountWindows(t *testing.T) {
	body := `[{"name":"bench_g0001","data":[{"timestamp":"x","value":1},{"timestamp":"y","value":2}]},` +
		`{"name":"fodc_other","data":[{"value":1}]},{"name":"bench_c0000_total","data":[{"value":3}]}]`
	series, points, err := countWindows(strings.NewReader(body))
	require.NoError(t, err)
	require.EqualValues(t, 2, series)
	require.EqualValues(t, 3, points)
	_, _, err = countWindows(strings.NewReader(`{"error":"x"}`))
	require.Error(t, err)
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks.
	stat := "1234 (fodc (proxy)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 1000000 500"
	d, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, d)
	_, err = parseStatCPU("garbage")
	require.Error(t, err)
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(ds, 50))
	require.Equal(t, 99*time.Millisecond, percentile(ds, 99))
	require.Equal(t, 100*time.Millisecond, percentile(ds, 100))
	require.Equal(t, time.Millisecond, percentile(ds[:1], 99))
	require.Zero(t, percentile(nil, 50))
}
