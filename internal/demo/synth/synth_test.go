package synth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/roles"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// values scrapes pod's endpoint and indexes every sample by series.
func values(t *testing.T, h http.Handler, pod string) (map[string]float64, map[string]fodcv1.MetricType) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path(pod), nil))
	require.Equal(t, http.StatusOK, rec.Code)
	fams, err := scrape.Parse(rec.Body.Bytes(), rec.Header().Get("Content-Type"), 1, 0)
	require.NoError(t, err)
	vals := map[string]float64{}
	types := map[string]fodcv1.MetricType{}
	for _, f := range fams {
		types[f.Name] = f.Type
		for _, s := range f.Samples {
			var b strings.Builder
			b.WriteString(s.Name)
			for _, l := range s.Labels {
				b.WriteString("," + l.Name + "=" + l.Value)
			}
			vals[b.String()] = s.Value
		}
	}
	return vals, types
}

func TestCountersGrowGaugesMoveHistogramsFill(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	nodes := []Node{
		{Pod: "liaison-0", Role: roles.Role{Kind: roles.KindLiaison}, Seed: 1},
		{Pod: "hot-0", Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 2},
		{Pod: "warm-0", Role: roles.Role{Kind: roles.KindData, Tier: "warm"}, Seed: 3},
	}
	h := Handler(nodes, c.now)
	c.add(30 * time.Second)
	hot1, types := values(t, h, "hot-0")
	warm1, _ := values(t, h, "warm-0")
	liaison1, ltypes := values(t, h, "liaison-0")
	c.add(45 * time.Second)
	hot2, _ := values(t, h, "hot-0")
	warm2, _ := values(t, h, "warm-0")
	liaison2, _ := values(t, h, "liaison-0")

	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_COUNTER, types["banyandb_measure_total_written"])
	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_HISTOGRAM, types["banyandb_queue_sub_total_latency"])
	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_SUMMARY, types["go_gc_duration_seconds"])
	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_HISTOGRAM, ltypes["banyandb_liaison_grpc_total_latency"])
	require.NotContains(t, ltypes, "banyandb_measure_total_written", "liaisons do not write")

	written := "banyandb_measure_total_written,group=sw_metric"
	require.Greater(t, hot2[written], hot1[written], "counters grow")
	require.Greater(t, hot2[written]-hot1[written], warm2[written]-warm1[written], "the warm tier writes less")
	require.NotEqual(t, hot1["go_goroutines"], hot2["go_goroutines"], "gauges move")

	count := "banyandb_queue_sub_total_latency_count,group=sw_metric,topic=write"
	inf := "banyandb_queue_sub_total_latency_bucket,group=sw_metric,le=+Inf,topic=write"
	low := "banyandb_queue_sub_total_latency_bucket,group=sw_metric,le=0.005,topic=write"
	require.Greater(t, hot2[count], hot1[count], "histograms fill")
	require.Equal(t, hot2[count], hot2[inf])
	require.LessOrEqual(t, hot2[low], hot2[inf])
	started := "banyandb_liaison_grpc_total_started,group=sw_trace,method=Write,service=measure"
	require.Greater(t, liaison2[started], liaison1[started])

	// The same instant gives the same values.
	again, _ := values(t, h, "hot-0")
	require.Equal(t, hot2, again)
}

// A node's own handler serves its metrics and, like a pprof listener, its
// NUL-separated argv; without Args there is no command line.
func TestNodeHandlerServesTheCommandLine(t *testing.T) {
	n := Node{Pod: "hot-0", Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 1}
	n.Args = BanyandArgs(n, ArgsOptions{Host: "hot-0.hot", GRPCPort: 17912, PprofAddr: ":6060", Overrides: []string{"--measure-flush-timeout=5s", "--extra"}})
	h := NodeHandler(n, nil)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, CmdlinePath, nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
	argv := strings.Split(rec.Body.String(), "\x00")
	require.Equal(t, []string{Program, "data"}, argv[:2])
	require.Contains(t, argv, "--measure-flush-timeout=5s", "an override replaces the flag")
	require.NotContains(t, argv, "--measure-flush-timeout=1s")
	require.Equal(t, "--extra", argv[len(argv)-1], "an override without a flag to replace is appended")
	for _, want := range []string{"--grpc-port=17912", "--node-host=hot-0.hot", "--pprof-listener-addr=:6060", "--measure-root-path=/data/hot-0/measure", "--node-labels=type=hot"} {
		require.Contains(t, argv, want)
	}

	vals, _ := values(t, h, "hot-0")
	require.Contains(t, vals, "banyandb_system_cpu_num")

	rec = httptest.NewRecorder()
	NodeHandler(Node{Pod: "x", Role: roles.Role{Kind: roles.KindLiaison}}, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, CmdlinePath, nil))
	require.Equal(t, http.StatusNotFound, rec.Code)
}

func TestBanyandArgsByRole(t *testing.T) {
	for _, tc := range []struct {
		role      roles.Role
		sub, only string
	}{
		{roles.Role{Kind: roles.KindLiaison}, "liaison", "--http-port=17913"},
		{roles.Role{Kind: roles.KindData, Tier: "warm"}, "data", "--node-labels=type=warm"},
		{roles.Role{Kind: roles.KindData}, "data", "--stream-root-path=/data/p/stream"},
		{roles.Role{}, "standalone", "--etcd-username=banyandb"},
	} {
		args := BanyandArgs(Node{Pod: "p", Role: tc.role}, ArgsOptions{GRPCPort: 17912})
		require.Equal(t, tc.sub, args[0])
		require.Contains(t, args, tc.only)
		if tc.role.Kind == roles.KindData && tc.role.Tier == "" {
			for _, a := range args {
				require.NotContains(t, a, "--node-labels", "no tier, no tier label")
			}
		}
	}
}

// A node with a memory limit exposes it, and its resident memory jumps
// above PressureShare of it once PressureAfter has passed.
func TestPressureAfterCrossesTheLimitShare(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	n := Node{Pod: "warm-0", Role: roles.Role{Kind: roles.KindData, Tier: "warm"}, Seed: 3, MemoryLimit: 2 << 30, PressureAfter: 5 * time.Second}
	h := NodeHandler(n, c.now)
	v, _ := values(t, h, n.Pod)
	require.Equal(t, float64(2<<30), v[MemoryLimitMetric])
	require.Less(t, v["process_resident_memory_bytes"], 0.75*float64(2<<30))
	c.add(5 * time.Second)
	v, _ = values(t, h, n.Pod)
	require.InDelta(t, PressureShare*float64(2<<30), v["process_resident_memory_bytes"], 1)
}

// Pprof serves the process's own profiles beside the synthetic command line.
func TestNodeHandlerServesPprof(t *testing.T) {
	n := Node{Pod: "hot-0", Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Args: []string{"data"}, Pprof: true}
	h := NodeHandler(n, nil)
	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/goroutine?debug=0"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusOK, rec.Code, path)
		require.NotEmpty(t, rec.Body.Bytes(), path)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, CmdlinePath, nil))
	require.Equal(t, Program+"\x00data", rec.Body.String())
}
