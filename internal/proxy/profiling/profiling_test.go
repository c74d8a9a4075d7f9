package profiling_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/proxy/profiling"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 30 * time.Second

// nodeServer serves this test process's own pprof handlers and a minimal
// metrics endpoint on loopback, like a BanyanDB node's listeners.
func nodeServer(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "# TYPE banyandb_system_cpu_num gauge\nbanyandb_system_cpu_num 2\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// startAgent runs our agent for pod until the test ends; nodeAddr serves
// its metrics, pprofAddr ("" for none) its pprof listener.
func startAgent(t *testing.T, p *proxy.Proxy, pod, nodeAddr, pprofAddr string) string {
	t.Helper()
	c := agent.DefaultConfig()
	c.ProxyAddr = p.GRPCAddr()
	c.NodeRole = "datanode-hot"
	c.PodName = pod
	c.ScrapeTargets = []string{"http://" + nodeAddr + "/metrics"}
	c.NodePprofAddr = pprofAddr
	c.ScrapeInterval = time.Second
	c.ScrapeTimeout = time.Second
	c.HeartbeatInterval = time.Second
	c.ReconnectInterval = 100 * time.Millisecond
	c.HTTPListenAddr = ""
	c.Parity.SchemaRegistryPort = 0
	c.Parity.PressureEnabled = false
	c.Parity.LifecycleReportDir = ""
	a, err := agent.New(c, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	var g run.Group
	a.AddActors(&g)
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	require.NoError(t, a.WaitReady(wctx))
	var id string
	require.Eventually(t, func() bool {
		id = a.Uplink.Status().AgentID
		return id != "" && p.Streams.Has(id, protocol.KindProfiles)
	}, wait, 10*time.Millisecond)
	return id
}

type startAnswer struct {
	Results []profiling.Result `json:"results"`
}

func post(t *testing.T, u string) (int, startAnswer, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: wait}).Post(u, "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var a startAnswer
	_ = json.Unmarshal(body, &a)
	return resp.StatusCode, a, string(body)
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: wait}).Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// waitDone waits until profile id has finished and returns its entry.
func waitDone(t *testing.T, base, id string) profiling.Entry {
	t.Helper()
	var e profiling.Entry
	require.Eventually(t, func() bool {
		code, body := get(t, base+"/profiling?pod_name=")
		require.Equal(t, http.StatusOK, code, string(body))
		var list []profiling.Entry
		require.NoError(t, json.Unmarshal(body, &list))
		for _, x := range list {
			if x.ID == id && x.Status != profiling.StatusRunning {
				e = x
				return true
			}
		}
		return false
	}, wait, 50*time.Millisecond)
	return e
}

// A CPU profile of a real process goes from the node's pprof listener
// through our agent and the proxy and parses as a CPU profile with
// samples; a second request for the busy node is refused, an agent
// without a pprof address and an upstream agent get clear errors.
func TestOnDemandProfiles(t *testing.T) {
	p, _ := testproxy.Start(t, nil)
	base := "http://" + p.HTTPAddr()
	node := nodeServer(t)
	startAgent(t, p, "data-0", node, node)
	startAgent(t, p, "data-1", node, "")
	up, err := agentsim.New(agentsim.Config{ProxyAddr: p.GRPCAddr(), Register: &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "data-up-0"}})
	require.NoError(t, err)
	uctx, ucancel := context.WithCancel(context.Background())
	udone := make(chan error, 1)
	go func() { udone <- up.Run(uctx) }()
	t.Cleanup(func() { ucancel(); <-udone })
	rctx, rcancel := context.WithTimeout(context.Background(), wait)
	defer rcancel()
	_, err = up.WaitRegistered(rctx, 1)
	require.NoError(t, err)

	// Keep a CPU busy so that the profile has samples.
	stop := make(chan struct{})
	var spin sync.WaitGroup
	spin.Go(func() {
		x := 0
		for {
			select {
			case <-stop:
				return
			default:
				for i := range 10000 {
					x += i * i
				}
			}
		}
	})
	defer func() { close(stop); spin.Wait() }()

	// Two concurrent requests for one node: one profile, one "busy".
	type answer struct {
		code int
		a    startAnswer
		body string
	}
	answers := make(chan answer, 2)
	var ready sync.WaitGroup
	ready.Add(2)
	gate := make(chan struct{})
	for range 2 {
		go func() {
			ready.Done()
			<-gate
			code, a, body := post(t, base+"/profiling?type=cpu&seconds=2&pod_name=data-0")
			answers <- answer{code, a, body}
		}()
	}
	ready.Wait()
	close(gate)
	a1, a2 := <-answers, <-answers
	if a1.code != http.StatusAccepted {
		a1, a2 = a2, a1
	}
	require.Equal(t, http.StatusAccepted, a1.code, a1.body)
	require.Equal(t, http.StatusConflict, a2.code, a2.body)
	require.Len(t, a1.a.Results, 1)
	require.Equal(t, profiling.CodeStarted, a1.a.Results[0].Code)
	require.Len(t, a2.a.Results, 1)
	require.Equal(t, profiling.CodeBusy, a2.a.Results[0].Code)
	require.Contains(t, a2.a.Results[0].Error, "busy")

	id := a1.a.Results[0].ProfileID
	code, _ := get(t, base+"/profiling/"+id)
	if code != http.StatusOK {
		require.Equal(t, http.StatusConflict, code, "still running")
	}
	e := waitDone(t, base, id)
	require.Equal(t, profiling.StatusDone, e.Status, e.Error)
	require.Equal(t, "data-0", e.PodName)
	require.Contains(t, e.Source, "/debug/pprof/profile?seconds=2")
	code, body := get(t, base+"/profiling/"+id)
	require.Equal(t, http.StatusOK, code, string(body))
	require.Equal(t, len(body), e.SizeBytes)
	prof, err := profile.Parse(strings.NewReader(string(body)))
	require.NoError(t, err)
	require.Equal(t, "cpu", prof.PeriodType.Type)
	require.NotEmpty(t, prof.Sample)

	// The node is free again: a heap profile starts.
	code, a, raw := post(t, base+"/profiling?type=heap&seconds=3&pod_name=data-0")
	require.Equal(t, http.StatusAccepted, code, raw)
	heap := waitDone(t, base, a.Results[0].ProfileID)
	require.Equal(t, profiling.StatusDone, heap.Status, heap.Error)

	// No pprof address: the agent refuses at once, with the reason.
	code, a, raw = post(t, base+"/profiling?type=heap&pod_name=data-1")
	require.Equal(t, http.StatusBadGateway, code, raw)
	require.Equal(t, profiling.CodeRefused, a.Results[0].Code)
	require.Contains(t, a.Results[0].Error, "no pprof address")

	// An upstream agent has no profiling stream.
	code, a, raw = post(t, base+"/profiling?type=goroutine&pod_name=data-up-0")
	require.Equal(t, http.StatusNotImplemented, code, raw)
	require.Equal(t, profiling.CodeUnsupported, a.Results[0].Code)
	require.Contains(t, a.Results[0].Error, "not supported")

	// Bad requests are refused before any agent is asked.
	for _, q := range []string{"type=bogus", "type=cpu&seconds=0", "type=cpu&seconds=301", "type=cpu&seconds=x", "type=heap&type=cpu"} {
		code, _, raw := post(t, base+"/profiling?"+q+"&pod_name=data-0")
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", q, raw)
	}
	code, _, raw = post(t, base+"/profiling?type=heap&pod_name=nobody")
	require.Equal(t, http.StatusNotFound, code, raw)
	code, body = get(t, base+"/profiling/unknown-id")
	require.Equal(t, http.StatusNotFound, code, string(body))

	// Configuration snapshot on demand: a POST collects anew, bypassing
	// the cache that a GET reuses.
	collectedAt := func(body []byte) map[string]string {
		var cfg struct {
			Configurations []struct {
				PodName     string `json:"pod_name"`
				CollectedAt string `json:"collected_at"`
			} `json:"configurations"`
		}
		require.NoError(t, json.Unmarshal(body, &cfg), string(body))
		out := map[string]string{}
		for _, c := range cfg.Configurations {
			out[c.PodName] = c.CollectedAt
		}
		return out
	}
	code, body = get(t, base+"/cluster/config")
	require.Equal(t, http.StatusOK, code, string(body))
	first := collectedAt(body)
	code, body = get(t, base+"/cluster/config")
	require.Equal(t, http.StatusOK, code, string(body))
	require.Equal(t, first, collectedAt(body), "a GET within the TTL reuses the collection")
	code, _, raw = post(t, base+"/cluster/config/refresh")
	require.Equal(t, http.StatusOK, code, raw)
	refreshed := collectedAt([]byte(raw))
	require.NotEmpty(t, refreshed["data-0"])
	require.NotEqual(t, first["data-0"], refreshed["data-0"], "the refresh collected anew")
	code, body = get(t, base+"/cluster/config/refresh")
	require.Equal(t, http.StatusMethodNotAllowed, code, string(body))
}
