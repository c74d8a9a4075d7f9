package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 20 * time.Second

func startProxy(t *testing.T) *proxy.Proxy {
	t.Helper()
	p, _ := testproxy.Start(t, nil)
	return p
}

func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg, reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	require.NoError(t, a.WaitReady(wctx))
	return a
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: wait}).Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

func testConfig(proxyAddr string) Config {
	cfg := DefaultConfig()
	cfg.ProxyAddr = proxyAddr
	cfg.PodName = "data-hot-0"
	cfg.HTTPListenAddr = "127.0.0.1:0"
	cfg.ScrapeInterval = time.Hour // one scrape at start is enough
	cfg.HeartbeatInterval = time.Second
	cfg.RecorderMemoryBytes = 4 << 20
	cfg.Parity.PressureEnabled = false // parity_test.go enables it with a temporary directory
	return cfg
}

// A whole agent: it scrapes a synthetic data node, registers with our
// proxy, and the proxy serves its series with the identity labels; its own
// /metrics and /healthz report the uplink and the target.
func TestAgentScrapesAndServesThroughProxy(t *testing.T) {
	p := startProxy(t)
	hot := roles.Role{Kind: roles.KindData, Tier: "hot"}
	node := httptest.NewServer(synth.Handler([]synth.Node{{Pod: "data-hot-0", Role: hot, Seed: 1}}, nil))
	defer node.Close()
	cfg := testConfig(p.GRPCAddr())
	cfg.NodeRole = "datanode-hot"
	cfg.ScrapeTargets = []string{node.URL + synth.Path("data-hot-0")}
	cfg.ContainerNames = []string{"data"}
	cfg.EnablePprof = true
	a := startAgent(t, cfg)
	id := a.Uplink.Status().AgentID
	require.Eventually(t, func() bool { return p.Streams.Has(id, "metrics") }, wait, 5*time.Millisecond)
	require.Contains(t, get(t, "http://"+a.HTTPAddr()+"/debug/pprof/goroutine?debug=1"), "goroutine profile:", "--enable-pprof")

	text := get(t, "http://"+p.HTTPAddr()+"/metrics")
	require.Contains(t, text, `banyandb_measure_total_written{container_name="data",group="sw_metric",`)
	require.Contains(t, text, `node_role="ROLE_DATA"`)
	require.Contains(t, text, `node_type="hot"`)
	require.Contains(t, text, `pod_name="data-hot-0"`)
	require.Contains(t, text, `banyandb_queue_sub_total_latency_bucket{`)

	own := get(t, "http://"+a.HTTPAddr()+"/metrics")
	require.Contains(t, own, "fodc_agent_uplink_connected 1")
	require.Contains(t, own, "fodc_agent_uplink_registrations_total 1")
	require.Contains(t, own, "fodc_agent_recorder_budget_bytes 4.194304e+06")
	var h health
	require.NoError(t, json.Unmarshal([]byte(get(t, "http://"+a.HTTPAddr()+"/healthz")), &h))
	require.True(t, h.Uplink.Connected)
	require.Equal(t, id, h.Uplink.AgentID)
	require.Len(t, h.Targets, 1)
	require.True(t, h.Targets[0].Up)
	require.Positive(t, h.Targets[0].Samples)
}

// fakeNode is a BanyanDB node answering only GetCurrentNode.
type fakeNode struct {
	databasev1.UnimplementedNodeQueryServiceServer
	node *databasev1.Node
}

func (f *fakeNode) GetCurrentNode(context.Context, *databasev1.GetCurrentNodeRequest) (*databasev1.GetCurrentNodeResponse, error) {
	return &databasev1.GetCurrentNodeResponse{Node: f.node}, nil
}

func serveNode(t *testing.T, n *databasev1.Node) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	databasev1.RegisterNodeQueryServiceServer(srv, &fakeNode{node: n})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func discoveredNode() *databasev1.Node {
	return &databasev1.Node{
		Metadata:                        &commonv1.Metadata{Name: "10.0.0.9:17912"},
		Roles:                           []databasev1.Role{databasev1.Role_ROLE_META, databasev1.Role_ROLE_DATA},
		GrpcAddress:                     "10.0.0.9:17912",
		HttpAddress:                     "10.0.0.9:17913",
		Labels:                          map[string]string{"type": "warm", "zone": "b"},
		PropertyRepairGossipGrpcAddress: "10.0.0.9:17932",
	}
}

// With --node-grpc-addr and no --node-role the agent asks the node who it
// is before registering; explicit flags win over what it learns.
func TestDiscoveryFromTheNode(t *testing.T) {
	p := startProxy(t)
	nodeAddr := serveNode(t, discoveredNode())
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "up 1\n")
	}))
	defer metrics.Close()
	cfg := testConfig(p.GRPCAddr())
	cfg.NodeGRPCAddr = nodeAddr
	cfg.ScrapeTargets = []string{metrics.URL}
	cfg.NodeLabels = map[string]string{"zone": "flag"}
	cfg.SecondaryAddresses = []string{"http=192.168.0.1:80"}
	a := startAgent(t, cfg)

	ag, ok := p.Registry.Get(a.Uplink.Status().AgentID)
	require.True(t, ok)
	require.Equal(t, roles.Role{Kind: roles.KindData, Tier: "warm"}, ag.Role)
	require.Equal(t, map[string]string{"type": "warm", "zone": "flag"}, ag.Labels)
	require.Equal(t, "10.0.0.9", ag.Primary.IP)
	require.Equal(t, 17912, ag.Primary.Port)
	require.Equal(t, 17932, ag.Secondary["gossip"].Port)
	require.Equal(t, "192.168.0.1", ag.Secondary["http"].IP, "the flag wins")
}

func TestAddLabelKeepsOrderAndExistingValues(t *testing.T) {
	orig := []scrape.Label{{Name: "a", Value: "1"}, {Name: "z", Value: "2"}}
	fams := []scrape.Family{{Samples: []scrape.Sample{
		{Labels: orig},
		{Labels: []scrape.Label{{Name: "container_name", Value: "own"}}},
		{},
	}}}
	addLabel(fams, "container_name", "data")
	require.Equal(t, []scrape.Label{{Name: "a", Value: "1"}, {Name: "container_name", Value: "data"}, {Name: "z", Value: "2"}}, fams[0].Samples[0].Labels)
	require.Equal(t, []scrape.Label{{Name: "container_name", Value: "own"}}, fams[0].Samples[1].Labels)
	require.Equal(t, []scrape.Label{{Name: "container_name", Value: "data"}}, fams[0].Samples[2].Labels)
	require.Equal(t, []scrape.Label{{Name: "a", Value: "1"}, {Name: "z", Value: "2"}}, orig, "the original slice is untouched")
}
