package httpapi

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/scrape"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAgent answers metrics requests from a function; hang makes it wait
// for the caller to give up.
type fakeAgent struct {
	mu      sync.Mutex
	hang    bool
	release chan struct{} // when set, requests wait for it to close
	windows []series.Window
	reply   func(w series.Window) *fodcv1.StreamMetricsRequest
}

// serve plays the agent on its metrics stream until the stream closes:
// each command is answered in order, as a real agent answers them.
func (f *fakeAgent) serve(m *streams.Metrics) {
	for {
		select {
		case cmd := <-m.Outbox():
			w := series.Window{}
			if cmd.GetStartTime() != nil {
				w.Start = cmd.GetStartTime().AsTime()
			}
			if cmd.GetEndTime() != nil {
				w.End = cmd.GetEndTime().AsTime()
			}
			f.mu.Lock()
			f.windows = append(f.windows, w)
			hang, release := f.hang, f.release
			f.mu.Unlock()
			if release != nil {
				select {
				case <-release:
				case <-m.Done():
					return
				}
			}
			if hang {
				continue // never answers
			}
			raw, err := proto.Marshal(f.reply(w))
			if err != nil {
				panic(err)
			}
			m.Deliver(&series.RawMetrics{Bytes: raw})
		case <-m.Done():
			return
		}
	}
}

type env struct {
	api    *API
	reg    *registry.Registry
	agents map[string]*fakeAgent // by agent id
	table  *streams.Table
	srv    *httptest.Server
	now    time.Time
	mu     sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{agents: map[string]*fakeAgent{}, now: time.Unix(1_800_000_000, 0)}
	clock := func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
	reg, err := registry.New(registry.Options{HeartbeatTimeout: 30 * time.Second, CleanupTimeout: 5 * time.Minute, MaxAgents: 10, Now: clock}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	e.reg = reg
	own := prometheus.NewRegistry()
	e.table = streams.NewTable(streams.Limits{SendQueueLen: 64, MaxPending: 32})
	scraper, err := scrape.New(reg, e.table, decode.Limits{MaxLabels: 16}, slog.New(slog.DiscardHandler), own)
	require.NoError(t, err)
	api, err := New(Options{Registry: reg, Scraper: scraper, Gatherer: own, CollectTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second, Now: clock,
		Admission: Admission{Metrics: 4, Cluster: 4, Downloads: 2}},
		slog.New(slog.DiscardHandler), own)
	require.NoError(t, err)
	e.api = api
	e.srv = httptest.NewServer(api.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) addAgent(t *testing.T, id registry.Identity, fa *fakeAgent) registry.Agent {
	t.Helper()
	a, err := e.reg.Register(id)
	require.NoError(t, err)
	m, err := e.table.OpenMetrics(a.ID)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); fa.serve(m) }()
	t.Cleanup(func() { m.Close(nil); <-done })
	e.mu.Lock()
	e.agents[a.ID] = fa
	e.mu.Unlock()
	return a
}

func (e *env) get(t *testing.T, path string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(body)
}

func gauge(name string, v float64, labels map[string]string) *fodcv1.Metric {
	return &fodcv1.Metric{Name: name, Value: v, Labels: labels, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Description: "A test gauge."}
}

func TestMetricsEnrichesAndReportsPerAgentUp(t *testing.T) {
	e := newEnv(t)
	hot := e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0", Labels: map[string]string{"type": "hot"}}, &fakeAgent{
		reply: func(series.Window) *fodcv1.StreamMetricsRequest {
			// An upstream HEAD agent stamps node_role and pod_name itself.
			return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
				gauge("queue_depth", 3, map[string]string{"node_role": "ROLE_DATA", "pod_name": "data-0", "node_type": "own"}),
			}}
		},
	})
	hung := e.addAgent(t, registry.Identity{RoleName: "liaison", PodName: "liaison-0", Primary: registry.Address{IP: "10.0.0.9", Port: 17912}}, &fakeAgent{hang: true})

	code, hdr, body := e.get(t, "/metrics", scrapeTimeoutHeader, "1")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "text/plain; version=0.0.4; charset=utf-8", hdr.Get("Content-Type"))
	require.Equal(t, "2", hdr.Get("X-Fodc-Agents-Selected"))
	require.Equal(t, "1", hdr.Get("X-Fodc-Agents-Answered"))
	// The registration's identity wins; the agent's other value is kept as exported_<name>.
	require.Contains(t, body, `queue_depth{exported_node_type="own",node_role="ROLE_DATA",node_type="hot",pod_name="data-0"} 3`)
	require.Contains(t, body, `fodc_agent_up{agent_id="`+hot.ID+`",node_role="ROLE_DATA",pod_name="data-0"} 1`)
	require.Contains(t, body, `fodc_agent_up{agent_id="`+hung.ID+`",node_address="10.0.0.9:17912",node_role="ROLE_LIAISON",pod_name="liaison-0"} 0`)
	require.Contains(t, body, "\nfodc_proxy_collection_rounds_total{kind=\"latest\"} 1\n", "unfiltered answers carry the proxy's own metrics")
	require.NotContains(t, body, `queue_depth{agent_id`, "the agent id is never a sample label")

	// The hung agent was waited for the 1s scrape budget minus a margin
	// (0.9s), not the 5s collect timeout: generous bounds around 0.9s.
	m := regexp.MustCompile(`fodc_agent_collect_duration_seconds\{agent_id="` + hung.ID + `"[^}]*\} (\S+)`).FindStringSubmatch(body)
	require.NotNil(t, m, body)
	d, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	require.GreaterOrEqual(t, d, 0.8)
	require.Less(t, d, 2.5)
}

func TestMetricsFiltered(t *testing.T) {
	e := newEnv(t)
	reply := func(name string) *fakeAgent {
		return &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
			return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge(name, 1, nil)}}
		}}
	}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "hot-0", Labels: map[string]string{"type": "hot"}}, reply("from_hot"))
	e.addAgent(t, registry.Identity{RoleName: "datanode-warm", PodName: "warm-0"}, reply("from_warm"))
	e.addAgent(t, registry.Identity{RoleName: "ROLE_LIAISON", PodName: "l-0", Primary: registry.Address{IP: "10.1.1.1", Port: 17912}}, reply("from_liaison"))

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"role=datanode-hot", []string{"from_hot"}},
		{"role=ROLE_DATA", []string{"from_hot", "from_warm"}},
		{"role=datanode-warm", []string{"from_warm"}},
		{"role=liaison", []string{"from_liaison"}},
		{"address=10.1.1.1", []string{"from_liaison"}},
		{"address=10.1.1.1:17912", []string{"from_liaison"}},
		{"address=10.1.1.1:1", nil},
		{"pod_name=WARM-0", []string{"from_warm"}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			code, _, body := e.get(t, "/metrics?"+tc.query)
			require.Equal(t, http.StatusOK, code)
			for _, name := range []string{"from_hot", "from_warm", "from_liaison"} {
				if contains(tc.want, name) {
					require.Contains(t, body, "\n"+name+"{")
				} else {
					require.NotContains(t, body, "\n"+name+"{")
				}
			}
			require.NotContains(t, body, "fodc_proxy_", "filtered answers leave out the proxy's own metrics")
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path    string
		code    int
		mention string
	}{
		{"/metrics?role=boss", 400, "role"},
		{"/metrics?address=10.0.0.1:99999", 400, "address"},
		{"/metrics-windows?start_time=yesterday", 400, "start_time"},
		{"/metrics-windows?end_time=2026-13-01T00:00:00Z", 400, "end_time"},
		{"/metrics-windows?start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z", 400, "start_time"},
		{"/cluster?role=nope", 400, "role"},
		{"/nothing", 404, "/nothing"},
		{"/metrics/", 404, "/metrics/"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, hdr, body := e.get(t, tc.path)
			require.Equal(t, tc.code, code, body)
			require.Equal(t, "application/json", hdr.Get("Content-Type"))
			var env struct{ Status, Error string }
			require.NoError(t, json.Unmarshal([]byte(body), &env))
			require.Equal(t, "error", env.Status)
			require.Contains(t, env.Error, tc.mention)
		})
	}
	resp, err := http.Post(e.srv.URL+"/metrics", "text/plain", strings.NewReader(""))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
}

func TestMetricsWindowsPassesBoundsAndEncodes(t *testing.T) {
	e := newEnv(t)
	start := time.Date(2026, 11, 26, 20, 8, 23, 0, time.UTC)
	end := start.Add(30 * time.Second)
	fa := &fakeAgent{reply: func(w series.Window) *fodcv1.StreamMetricsRequest {
		m := gauge("temp", 1.5, nil)
		m.Timestamp = timestamp(w.Start.Add(10 * time.Second))
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{m}}
	}}
	a := e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, fa)
	q := url.Values{"start_time": {start.Format(time.RFC3339)}, "end_time": {end.Add(500 * time.Millisecond).Format(time.RFC3339Nano)}}
	code, _, body := e.get(t, "/metrics-windows?"+q.Encode())
	require.Equal(t, http.StatusOK, code, body)
	var got []struct {
		Name    string            `json:"name"`
		AgentID string            `json:"agent_id"`
		PodName string            `json:"pod_name"`
		Labels  map[string]string `json:"labels"`
		Data    []struct {
			Timestamp time.Time `json:"timestamp"`
			Value     float64   `json:"value"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &got), body)
	require.Len(t, got, 1)
	require.Equal(t, "temp", got[0].Name)
	require.Equal(t, a.ID, got[0].AgentID)
	require.Equal(t, "data-0", got[0].PodName)
	require.Equal(t, "data-0", got[0].Labels["pod_name"])
	require.Len(t, got[0].Data, 1)
	require.True(t, got[0].Data[0].Timestamp.Equal(start.Add(10*time.Second)))
	require.Equal(t, 1.5, got[0].Data[0].Value)
	fa.mu.Lock()
	defer fa.mu.Unlock()
	require.Len(t, fa.windows, 1)
	require.True(t, fa.windows[0].Start.Equal(start))
	require.True(t, fa.windows[0].End.Equal(end.Add(500*time.Millisecond)))
}

func TestClusterAndHealth(t *testing.T) {
	e := newEnv(t)
	code, _, body := e.get(t, "/health")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"degraded","reasons":["no agents registered"],"agents_online":0,"agents_unconnected":0,"agents_offline":0,"agents_total":0,"nodes_without_agent":0,"uptime_seconds":0}`, body)

	e.addAgent(t, registry.Identity{RoleName: "ROLE_LIAISON", PodName: "l-0",
		Primary:   registry.Address{IP: "10.0.0.5", Port: 17912},
		Secondary: map[string]registry.Address{"gossip": {IP: "10.0.0.5", Port: 17932}},
	}, &fakeAgent{})
	e.advance(20 * time.Second)
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "d-0", Labels: map[string]string{"type": "warm"}}, &fakeAgent{})
	e.advance(15 * time.Second) // the liaison is now 35 s past its heartbeat
	e.reg.Sweep()

	code, _, body = e.get(t, "/health")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"degraded","reasons":["1 of 2 agents missed their heartbeats: l-0"],"agents_online":1,"agents_unconnected":1,"agents_offline":0,"agents_total":2,"nodes_without_agent":0,"uptime_seconds":35}`, body)

	code, _, body = e.get(t, "/cluster?role=liaison")
	require.Equal(t, http.StatusOK, code)
	var cl struct {
		Nodes []struct {
			NodeRole       string `json:"node_role"`
			RoleName       string `json:"role_name"`
			PodName        string `json:"pod_name"`
			Status         string `json:"status"`
			PrimaryAddress *struct {
				IP   string `json:"ip"`
				Port int    `json:"port"`
			} `json:"primary_address"`
			SecondaryAddresses map[string]struct {
				IP   string `json:"ip"`
				Port int    `json:"port"`
			} `json:"secondary_addresses"`
		} `json:"nodes"`
		Calls     []any     `json:"calls"`
		UpdatedAt time.Time `json:"updated_at"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &cl))
	require.Len(t, cl.Nodes, 1)
	n := cl.Nodes[0]
	require.Equal(t, "liaison", n.NodeRole)
	require.Equal(t, "ROLE_LIAISON", n.RoleName)
	require.Equal(t, "unconnected", n.Status)
	require.Equal(t, "10.0.0.5", n.PrimaryAddress.IP)
	require.Equal(t, 17932, n.SecondaryAddresses["gossip"].Port)
	require.NotNil(t, cl.Calls)

	code, _, body = e.get(t, "/cluster?role=datanode-warm")
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal([]byte(body), &cl))
	require.Len(t, cl.Nodes, 1)
	require.Equal(t, "datanode-warm", cl.Nodes[0].NodeRole)
	require.Nil(t, cl.Nodes[0].PrimaryAddress)
}

func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 7 * time.Second},
		{"10", 9 * time.Second},
		{"2", 1800 * time.Millisecond},
		{"0.5", 400 * time.Millisecond},
		{"0.1", 50 * time.Millisecond},
		{"junk", 7 * time.Second},
		{"-3", 7 * time.Second},
		{"100000", maxBudget},
		{"1e300", maxBudget},
		{"NaN", 7 * time.Second},
		{"+Inf", maxBudget},
	} {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if tc.header != "" {
			r.Header.Set(scrapeTimeoutHeader, tc.header)
		}
		require.Equal(t, tc.want, budget(r, 7*time.Second), "header %q", tc.header)
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// Identical concurrent /metrics requests share one collection and one
// rendered answer; a request with other filters gets its own.
func TestConcurrentIdenticalScrapesShareOneCollection(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	fa := &fakeAgent{release: release, reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge("shared", 1, nil)}}
	}}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, fa)
	requests := func() int { fa.mu.Lock(); defer fa.mu.Unlock(); return len(fa.windows) }
	key := "text?role=datanode"

	bodies := make(chan string, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			code, hdr, body := e.get(t, "/metrics?role=datanode", "Accept-Encoding", "identity")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, strconv.Itoa(len(body)), hdr.Get("Content-Length"), "a shared answer is rendered once, whole")
			bodies <- body
		})
	}
	// The agent holds its answer until all three requests have started or
	// joined the collection.
	require.Eventually(t, func() bool { return e.api.answers.Waiting(key) == 3 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(bodies)
	first := ""
	for b := range bodies {
		if first == "" {
			first = b
		}
		require.Equal(t, first, b, "every caller gets the same answer")
	}
	require.Contains(t, first, "\nshared{")
	require.Equal(t, 1, requests(), "one collection for three identical scrapes")

	code, _, _ := e.get(t, "/metrics?role=ROLE_DATA")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, 2, requests(), "other filters make another collection")
}

// An agent whose registration stream ended stays listed as offline: every
// /metrics answer reports it down under the labels it had while online, it
// is not asked, /cluster shows when it was last seen and why it went away,
// and /health is degraded and names it until the node registers again.
func TestOfflineAgentStaysVisible(t *testing.T) {
	e := newEnv(t)
	reply := func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge("queue_depth", 1, nil)}}
	}
	id := registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0", Labels: map[string]string{"type": "hot"},
		Primary: registry.Address{IP: "10.0.0.7", Port: 17912}}
	fa := &fakeAgent{reply: reply}
	gone := e.addAgent(t, id, fa)
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-1", Labels: map[string]string{"type": "hot"}}, &fakeAgent{reply: reply})

	upLine := regexp.MustCompile(`(?m)^fodc_agent_up\{([^}]*pod_name="data-0"[^}]*)\} (\S+)$`)
	_, _, body := e.get(t, "/metrics")
	m := upLine.FindStringSubmatch(body)
	require.NotNil(t, m, body)
	onlineLabels := m[1]
	require.Equal(t, "1", m[2])
	require.Equal(t, `agent_id="`+gone.ID+`",node_address="10.0.0.7:17912",node_role="ROLE_DATA",pod_name="data-0"`, onlineLabels)

	e.advance(3 * time.Second)
	require.True(t, e.reg.Disconnect(gone.ID, registry.ReasonDisconnected, "stream ended: Unavailable"))
	fa.mu.Lock()
	asked := len(fa.windows)
	fa.mu.Unlock()

	code, hdr, body := e.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	m = upLine.FindStringSubmatch(body)
	require.NotNil(t, m, body)
	require.Equal(t, onlineLabels, m[1], "the series continues under the same labels")
	require.Equal(t, "0", m[2])
	require.Equal(t, "2", hdr.Get("X-Fodc-Agents-Selected"))
	require.Equal(t, "1", hdr.Get("X-Fodc-Agents-Answered"))
	require.Contains(t, body, `fodc_proxy_agent_requests_total{kind="latest",result="offline"} 1`)
	fa.mu.Lock()
	require.Equal(t, asked, len(fa.windows), "an offline agent is not asked")
	fa.mu.Unlock()

	_, _, body = e.get(t, "/cluster?pod_name=data-0")
	var cl struct {
		Nodes []map[string]any `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &cl))
	require.Len(t, cl.Nodes, 1)
	n := cl.Nodes[0]
	require.Equal(t, "offline", n["status"])
	require.Equal(t, "stream ended: Unavailable", n["disconnect_reason"])
	require.Equal(t, time.Unix(1_800_000_000, 0).UTC().Format(time.RFC3339), n["last_seen"])
	require.Equal(t, time.Unix(1_800_000_003, 0).UTC().Format(time.RFC3339), n["disconnected_at"])
	require.Equal(t, gone.ID, n["agent_id"])

	_, _, body = e.get(t, "/health")
	var h struct {
		Status        string   `json:"status"`
		Reasons       []string `json:"reasons"`
		AgentsOnline  int      `json:"agents_online"`
		AgentsOffline int      `json:"agents_offline"`
		AgentsTotal   int      `json:"agents_total"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &h))
	require.Equal(t, "degraded", h.Status)
	require.Equal(t, []string{"1 of 2 agents offline: data-0 (stream ended: Unavailable)"}, h.Reasons)
	require.Equal(t, 1, h.AgentsOnline)
	require.Equal(t, 1, h.AgentsOffline)
	require.Equal(t, 2, h.AgentsTotal)

	// The node registers again: it replaces the offline entry at once.
	back := e.addAgent(t, id, &fakeAgent{reply: reply})
	require.Equal(t, gone.ID, back.PreviousID)
	_, _, body = e.get(t, "/health")
	require.NoError(t, json.Unmarshal([]byte(body), &h))
	require.Equal(t, "healthy", h.Status)
	require.Equal(t, 2, h.AgentsTotal)
}

// /health names at most ten nodes per reason and says how many more.
func TestHealthNamesAreBounded(t *testing.T) {
	e := newEnv(t)
	for i := range 10 {
		a := e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: fmt.Sprintf("data-%02d", i)}, &fakeAgent{})
		e.reg.Disconnect(a.ID, registry.ReasonDisconnected, "x")
	}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-10"}, &fakeAgent{})
	for i := 11; i < 13; i++ {
		// Past MaxAgents (10) only offline entries are evicted: keep ten.
		a := e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: fmt.Sprintf("data-%02d", i)}, &fakeAgent{})
		e.reg.Disconnect(a.ID, registry.ReasonDisconnected, "x")
	}
	_, _, body := e.get(t, "/health")
	var h struct {
		Reasons []string `json:"reasons"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &h))
	require.Len(t, h.Reasons, 1)
	require.Regexp(t, `^9 of 10 agents offline: (data-\d\d \(x\), ){8}data-\d\d \(x\)$`, h.Reasons[0])
}

// A reply over a limit makes its agent down with the reason beside
// fodc_agent_up, shows in /cluster, and leaves the other agents' data whole.
func TestRefusedReplyIsVisible(t *testing.T) {
	e := newEnv(t)
	wide := map[string]string{}
	for i := range 17 {
		wide[fmt.Sprintf("l%02d", i)] = "v"
	}
	bad := e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-bad"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge("fine", 1, nil), gauge("wide", 2, wide)}}
	}})
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-good"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge("fine", 3, nil)}}
	}})
	code, _, body := e.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `fodc_agent_up{agent_id="`+bad.ID+`",node_role="ROLE_DATA",pod_name="data-bad"} 0`)
	require.Contains(t, body, `fodc_agent_reply_rejected{agent_id="`+bad.ID+`",node_role="ROLE_DATA",pod_name="data-bad",reason="labels_per_series"} 1`)
	require.Contains(t, body, `fine{node_role="ROLE_DATA",pod_name="data-good"} 3`)
	// (Matched by series name: the bad agent's own status series carry
	// values that may start with the digits of its refused samples.)
	require.NotRegexp(t, `(?m)^(fine|wide)\{[^}]*pod_name="data-bad"`, body, "nothing of the refused reply is served")
	require.Contains(t, body, `fodc_proxy_agent_replies_rejected_total{reason="labels_per_series"} 1`)

	code, _, body = e.get(t, "/cluster?pod_name=data-bad")
	require.Equal(t, http.StatusOK, code)
	var cl struct {
		Nodes []struct {
			LastRejection *struct {
				Reason string `json:"reason"`
				Error  string `json:"error"`
			} `json:"last_rejection"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &cl))
	require.Len(t, cl.Nodes, 1)
	require.NotNil(t, cl.Nodes[0].LastRejection)
	require.Equal(t, "labels_per_series", cl.Nodes[0].LastRejection.Reason)
	require.Contains(t, cl.Nodes[0].LastRejection.Error, "17 > 16")
}

// Beyond the admission limit a request gets 503 with Retry-After and the
// JSON envelope, and is counted; identical scrapes share one slot.
func TestAdmissionLimitAnswers503WithRetryAfter(t *testing.T) {
	e := newEnv(t) // Admission{Metrics: 4}
	release := make(chan struct{})
	fa := &fakeAgent{release: release, reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{gauge("slow", 1, nil)}}
	}}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, fa)
	type answer struct {
		code  int
		retry string
		body  string
	}
	answers := make(chan answer, 8)
	for i := range 4 { // four distinct collections fill the class
		go func() {
			code, hdr, body := e.get(t, fmt.Sprintf("/metrics?pod_name=data-0&x=%d", i))
			answers <- answer{code, hdr.Get("Retry-After"), body}
		}()
	}
	require.Eventually(t, func() bool { return len(e.api.gates[classMetrics]) == 4 }, 10*time.Second, time.Millisecond)
	code, hdr, body := e.get(t, "/metrics?pod_name=data-0&x=busy")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "1", hdr.Get("Retry-After"))
	require.Contains(t, body, `"status":"error"`)
	code, hdr, _ = e.get(t, "/metrics-windows?start_time=2027-01-01T00:00:00Z")
	require.Equal(t, http.StatusServiceUnavailable, code, "the windows endpoint shares the class")
	require.Equal(t, "1", hdr.Get("Retry-After"))
	close(release)
	for range 4 {
		a := <-answers
		require.Equal(t, http.StatusOK, a.code, a.body)
	}
	require.Equal(t, 2.0, testutil.ToFloat64(e.api.metrics.rejected.WithLabelValues(classMetrics)))
	code, _, _ = e.get(t, "/metrics?pod_name=data-0&x=later")
	require.Equal(t, http.StatusOK, code, "slots come back")
}

// An answer that goes to one request only is written as it is rendered,
// never held whole: a large one arrives chunked, without Content-Length,
// and decodes to the same text in every coding, also when the coding's
// compressor is a reused one.
func TestSoleMetricsAnswerIsStreamed(t *testing.T) {
	e := newEnv(t)
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		var ms []*fodcv1.Metric
		for i := range 2000 {
			ms = append(ms, gauge("queue_depth", float64(i), map[string]string{"queue": strconv.Itoa(i)}))
		}
		return &fodcv1.StreamMetricsRequest{Metrics: ms}
	}})
	zd, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer zd.Close()
	var texts []string
	for _, enc := range []string{"identity", "gzip", "gzip", "zstd", "zstd"} {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/metrics?pod_name=data-0", nil)
		require.NoError(t, err)
		req.Header.Set("Accept-Encoding", enc)
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.EqualValues(t, -1, resp.ContentLength, enc)
		require.Equal(t, []string{"chunked"}, resp.TransferEncoding, enc)
		switch enc {
		case "gzip":
			require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
			zr, err := gzip.NewReader(bytes.NewReader(body))
			require.NoError(t, err)
			body, err = io.ReadAll(zr)
			require.NoError(t, err)
		case "zstd":
			require.Equal(t, "zstd", resp.Header.Get("Content-Encoding"))
			body, err = zd.DecodeAll(body, nil)
			require.NoError(t, err)
		}
		require.Equal(t, 2000, strings.Count(string(body), "\nqueue_depth{"), enc)
		texts = append(texts, string(body))
	}
	// The status series carry the collection's duration, which differs.
	cut := func(s string) string { return s[:strings.Index(s, "# HELP fodc_agent")] }
	for _, text := range texts[1:] {
		require.Equal(t, cut(texts[0]), cut(text))
	}
}

// /metrics negotiates its format from Accept and its coding from
// Accept-Encoding; a compressed answer decodes to the plain one, and the
// choice is counted.
func TestMetricsFormatAndEncodingNegotiation(t *testing.T) {
	e := newEnv(t)
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
			{Name: "ops_total", Value: 5, Type: fodcv1.MetricType_METRIC_TYPE_COUNTER, Description: "Ops."},
		}}
	}})
	raw := func(accept, encoding string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/metrics?pod_name=data-0", nil)
		require.NoError(t, err)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		req.Header.Set("Accept-Encoding", encoding) // set: the transport does not decode for us
		resp, err := http.DefaultTransport.RoundTrip(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		return resp, body
	}
	resp, plain := raw("", "identity")
	require.Equal(t, "text/plain; version=0.0.4; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Empty(t, resp.Header.Get("Content-Encoding"))
	require.Equal(t, "1", resp.Header.Get("X-Fodc-Agents-Selected"))
	require.Equal(t, "1", resp.Header.Get("X-Fodc-Agents-Answered"))
	require.Contains(t, string(plain), "# TYPE ops_total counter\nops_total{")

	const promAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	resp, gz := raw(promAccept, "gzip")
	require.Equal(t, "application/openmetrics-text; version=1.0.0; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	require.NoError(t, err)
	om, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Contains(t, string(om), "# TYPE ops counter\nops_total{")
	require.True(t, strings.HasSuffix(string(om), "# EOF\n"))

	resp, zs := raw("", "gzip;q=0.5, zstd")
	require.Equal(t, "zstd", resp.Header.Get("Content-Encoding"))
	zd, err := zstd.NewReader(nil)
	require.NoError(t, err)
	defer zd.Close()
	fromZstd, err := zd.DecodeAll(zs, nil)
	require.NoError(t, err)
	// The proxy's own series move between scrapes; the agent's part is
	// the same in both codings.
	require.Contains(t, string(fromZstd), "# TYPE ops_total counter\nops_total{")

	resp, _ = raw("", "gzip;q=0, identity")
	require.Empty(t, resp.Header.Get("Content-Encoding"), "q=0 refuses a coding")
	require.Equal(t, 1.0, testutil.ToFloat64(e.api.metrics.answers.WithLabelValues("openmetrics", "gzip")))
	require.Equal(t, 1.0, testutil.ToFloat64(e.api.metrics.answers.WithLabelValues("text", "zstd")))
	require.Equal(t, 2.0, testutil.ToFloat64(e.api.metrics.answers.WithLabelValues("text", "identity")))
}

// --enable-pprof serves net/http/pprof; without it there is none, and with
// roles configured a viewer is refused it.
func TestPprofIsOptionalAndForOperators(t *testing.T) {
	e := newEnv(t)
	code, _, _ := e.get(t, "/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code, "off by default")

	e.api.opts.EnablePprof = true
	roles := NewRoles(map[string]Role{"grafana": RoleViewer, "alice": RoleOperator}, DefaultRules())
	srv := httptest.NewServer(roles.Guard(e.api.Handler()))
	defer srv.Close()
	get := func(user string) int {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/debug/pprof/goroutine?debug=1", nil)
		require.NoError(t, err)
		req.SetBasicAuth(user, "checked by exporter-toolkit before the guard")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			require.Contains(t, string(body), "goroutine profile:")
		}
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, get("grafana"))
	require.Equal(t, http.StatusOK, get("alice"))
}

func TestAnswerSizesGuessFromTheLastAnswer(t *testing.T) {
	var s answerSizes
	require.Equal(t, 64<<10, s.guess("text?a"), "a small default first")
	s.note("text?a", 8000)
	require.Equal(t, 9000, s.guess("text?a"), "the last size and an eighth")
	for i := range maxSizedQueries {
		s.note(fmt.Sprintf("q%d", i), 1)
	}
	require.LessOrEqual(t, len(s.sizes), maxSizedQueries, "bounded")
}

// /cluster/graph: nodes from the registry, pipeline edges from one window
// of the agents' queue series (two samples ten seconds apart), and a
// window parameter that is checked.
func TestClusterGraphPipelineFromWindow(t *testing.T) {
	e := newEnv(t)
	t0 := time.Now().Add(-20 * time.Second) // sample times are held to the real clock
	sample := func(name string, v float64, at time.Time, extra map[string]string) *fodcv1.Metric {
		ls := map[string]string{"operation": "write", "group": "g", "remote_node": "data-0"}
		for k, v := range extra {
			ls[k] = v
		}
		return &fodcv1.Metric{Name: name, Value: v, Labels: ls, Timestamp: timestamppb.New(at)}
	}
	e.addAgent(t, registry.Identity{RoleName: "ROLE_LIAISON", PodName: "liaison-0"}, &fakeAgent{reply: func(w series.Window) *fodcv1.StreamMetricsRequest {
		require.False(t, w.IsLatest(), "rates come from a window")
		return &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
			sample("banyandb_queue_pub_total_started", 100, t0, nil),
			sample("banyandb_queue_pub_total_started", 300, t0.Add(10*time.Second), nil),
			sample("banyandb_queue_pub_total_err", 0, t0, nil),
			sample("banyandb_queue_pub_total_err", 20, t0.Add(10*time.Second), nil),
		}}
	}})
	e.addAgent(t, registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"}, &fakeAgent{reply: func(series.Window) *fodcv1.StreamMetricsRequest {
		return &fodcv1.StreamMetricsRequest{}
	}})
	code, _, body := e.get(t, "/cluster/graph")
	require.Equal(t, http.StatusOK, code, body)
	var g struct {
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
		Edges []struct {
			Layer, Source, Target, Operation string
			Rate                             float64 `json:"rate"`
			ErrorRatio                       float64 `json:"error_ratio"`
		} `json:"edges"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &g))
	require.Len(t, g.Nodes, 2)
	require.Len(t, g.Edges, 1)
	edge := g.Edges[0]
	require.Equal(t, "pipeline", edge.Layer)
	require.Equal(t, "liaison-0", edge.Source)
	require.Equal(t, "data-0", edge.Target)
	require.InDelta(t, 20.0, edge.Rate, 1e-9, "200 messages in 10 s")
	require.InDelta(t, 0.1, edge.ErrorRatio, 1e-9)

	code, _, _ = e.get(t, "/cluster/graph?window=1s")
	require.Equal(t, http.StatusBadRequest, code)
}
