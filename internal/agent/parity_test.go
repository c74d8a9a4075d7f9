package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/fakenode"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

// copyRecordedArtifact copies banyand's recorded panic artifact into root.
func copyRecordedArtifact(t *testing.T, root string) string {
	t.Helper()
	d, err := fixture.NodeDir()
	require.NoError(t, err)
	const name = "20261202T114109.838622956Z-fixture-debug-panic-26319"
	src := filepath.Join(d, "standalone.files", "panic-artifact-dir", name)
	require.NoError(t, os.Mkdir(filepath.Join(root, name), 0o755))
	for _, f := range []string{"deep-dump.json", "panic.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(root, name, f), b, 0o600))
	}
	return name
}

type diagItem struct {
	PodName     string `json:"pod_name"`
	ArtifactDir string `json:"artifact_dir"`
	PanicRecord struct {
		Component string `json:"component"`
	} `json:"panic_record"`
}

func diagnostics(t *testing.T, p *proxy.Proxy) []diagItem {
	t.Helper()
	var items []diagItem
	require.NoError(t, json.Unmarshal([]byte(get(t, "http://"+p.HTTPAddr()+"/diagnostics")), &items))
	return items
}

// runProxy runs a proxy on addr until stop is called.
func runProxy(t *testing.T, addr string) (p *proxy.Proxy, stop func()) {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.GRPCListenAddr = addr
	cfg.HTTPListenAddr = "127.0.0.1:0"
	cfg.HeartbeatInterval = time.Second
	cfg.AgentHeartbeatTimeout = 10 * time.Second
	cfg.DiagnosticsWindow = 300 * time.Millisecond
	reg := prometheus.NewRegistry()
	p, err := proxy.New(cfg, slog.New(slog.DiscardHandler), reg, reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return p, stop
}

// A liaison agent against fake nodes replaying the cluster recording:
// /cluster/lifecycle shows the groups with their node fingerprints and the
// schema-consistency check finds them consistent with the registry read
// through the same agent; a crash artifact appears in /diagnostics once,
// also after the agent reconnects to a restarted proxy.
func TestParityStreamsThroughProxy(t *testing.T) {
	internal := fakenode.Start(t, "cluster.liaison-internal")
	client := fakenode.Start(t, "cluster.liaison-client")
	crashDir := t.TempDir()

	p, stop := runProxy(t, "127.0.0.1:0")
	addr := p.GRPCAddr()
	cfg := testConfig(addr)
	cfg.PodName = "banyand-liaison-0"
	cfg.NodeRole = "liaison"
	cfg.ScrapeTargets = []string{startMetrics(t, "")}
	cfg.Parity.LifecyclePort = internal.Port()
	cfg.Parity.SchemaRegistryPort = client.Port()
	cfg.Parity.CrashSourceDir = crashDir
	cfg.ReconnectInterval = 50 * time.Millisecond
	cfg.ReconnectMaxInterval = 100 * time.Millisecond
	a := startAgent(t, cfg)
	waitStreams(t, p, a, protocol.KindLifecycle, protocol.KindSchemaRegistry, protocol.KindCrash)

	body := get(t, "http://"+p.HTTPAddr()+"/cluster/lifecycle")
	for _, want := range []string{"sw_metric", "service_cpm_minute", "15940119489095802250", "127.0.0.1:43812"} {
		require.Contains(t, body, want)
	}
	require.NotContains(t, strings.ToUpper(body), "INCONSISTENT", body)
	require.Contains(t, strings.ToUpper(body), "CONSISTENT")

	require.Empty(t, diagnostics(t, p))
	name := copyRecordedArtifact(t, crashDir)
	require.Eventually(t, func() bool { return len(a.par.crash.Records()) == 1 }, wait, 5*time.Millisecond)
	items := diagnostics(t, p)
	require.Len(t, items, 1)
	require.Equal(t, name, items[0].ArtifactDir)
	require.Equal(t, "fixture/debug panic", items[0].PanicRecord.Component)
	require.Len(t, diagnostics(t, p), 1, "asked again: still once")

	// Proxy restart on the same address: the agent reconnects and the
	// record shows once in the new proxy.
	stop()
	p2, _ := runProxy(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, a.Uplink.WaitRegistered(ctx, 2))
	waitStreams(t, p2, a, protocol.KindCrash)
	require.Eventually(t, func() bool { return len(diagnostics(t, p2)) == 1 }, wait, 10*time.Millisecond)
	require.Len(t, diagnostics(t, p2), 1)
}

// waitStreams waits until the proxy holds the agent's streams of kinds.
func waitStreams(t *testing.T, p *proxy.Proxy, a *Agent, kinds ...protocol.Kind) {
	t.Helper()
	require.Eventually(t, func() bool {
		id := a.Uplink.Status().AgentID
		for _, k := range kinds {
			if id == "" || !p.Streams.Has(id, k) {
				return false
			}
		}
		return true
	}, wait, 5*time.Millisecond)
}

// startMetrics serves a metrics body on loopback and returns its URL.
func startMetrics(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "# TYPE up gauge\nup 1\n"+body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// A scrape whose gauges cross the threshold makes the agent capture the
// node's (here: this process's) heap and goroutine profiles, listed and
// downloadable through our proxy; the download parses as pprof.
func TestPressureProfileThroughProxy(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	pp := httptest.NewServer(mux)
	t.Cleanup(pp.Close)
	_, port, err := net.SplitHostPort(pp.Listener.Addr().String())
	require.NoError(t, err)

	p := startProxyNoPressureWait(t)
	cfg := testConfig(p.GRPCAddr())
	cfg.ScrapeTargets = []string{startMetrics(t, "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 900\n# TYPE banyandb_memory_protector_cgroup_limit_bytes gauge\nbanyandb_memory_protector_cgroup_limit_bytes 1000\n")}
	cfg.NodeRole = "datanode-hot"
	cfg.Parity.PressureEnabled = true
	cfg.Parity.PressureDir = t.TempDir()
	cfg.Parity.PressurePprofPort, _ = strconv.Atoi(port)
	a := startAgent(t, cfg)
	waitStreams(t, p, a, protocol.KindPressure)
	require.Eventually(t, func() bool { return len(a.par.pressure.Records()) == 1 }, wait, 5*time.Millisecond)

	var list []struct {
		PodName   string `json:"pod_name"`
		ProfileID string `json:"profile_id"`
		RSS       uint64 `json:"rss_bytes"`
		Profiles  []struct {
			Type string `json:"type"`
		} `json:"profiles"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, "http://"+p.HTTPAddr()+"/pressure-profiles")), &list))
	require.Len(t, list, 1)
	require.Equal(t, uint64(900), list[0].RSS)
	require.Len(t, list[0].Profiles, 2)
	for _, typ := range []string{"heap", "goroutine"} {
		resp, err := http.Get(fmt.Sprintf("http://%s/pressure-profiles/%s/%s/%s", p.HTTPAddr(), list[0].PodName, list[0].ProfileID, typ))
		require.NoError(t, err)
		prof, err := profile.Parse(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, err, typ)
		require.NotEmpty(t, prof.SampleType)
	}
}

func startProxyNoPressureWait(t *testing.T) *proxy.Proxy {
	t.Helper()
	p, _ := testproxy.Start(t, nil)
	return p
}
