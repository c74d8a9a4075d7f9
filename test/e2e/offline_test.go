package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
)

// clusterNode is a /cluster node as these tests read it.
type clusterNode struct {
	NodeID           string `json:"node_id"`
	AgentID          string `json:"agent_id"`
	PodName          string `json:"pod_name"`
	Status           string `json:"status"`
	LastSeen         string `json:"last_seen"`
	DisconnectReason string `json:"disconnect_reason"`
}

func clusterNodes(t *testing.T, base, query string) []clusterNode {
	t.Helper()
	r := get(t, base+"/cluster"+query)
	require.Equal(t, http.StatusOK, r.code, r.body)
	var cl struct {
		Nodes []clusterNode `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl), r.body)
	return cl.Nodes
}

// agentUp returns the labels and value of the fodc_agent_up series of pod
// in a /metrics answer, or "" when it has none.
func agentUp(body, pod string) (labels, value string) {
	m := regexp.MustCompile(`(?m)^fodc_agent_up\{([^}]*pod_name="` + regexp.QuoteMeta(pod) + `"[^}]*)\} (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return "", ""
	}
	return m[1], m[2]
}

// startNodeAgent runs the fodc-agent binary for a hot data node whose
// metrics come from a synthetic endpoint.
func startNodeAgent(t *testing.T, proxyAddr, pod string) *agentProcess {
	t.Helper()
	node := httptest.NewServer(synth.Handler([]synth.Node{{Pod: pod, Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 3}}, nil))
	t.Cleanup(node.Close)
	return startAgentProcess(t,
		"--proxy-addr", proxyAddr, "--node-role", "datanode-hot", "--pod-name", pod,
		"--scrape-target", node.URL+synth.Path(pod), "--scrape-interval", "500ms", "--scrape-timeout", "500ms",
		"--reconnect-interval", "200ms", "--reconnect-max-interval", "1s",
		"--node-ip", "127.0.0.1", "--node-port", "27912")
}

func killAgentProcess(t *testing.T, ap *agentProcess) time.Time {
	t.Helper()
	require.NoError(t, ap.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	select {
	case <-ap.exited:
	case <-time.After(wait):
		t.Fatal("agent did not die on SIGKILL")
	}
	return killed
}

// A real agent process killed with SIGKILL: within one heartbeat timeout
// its node is offline in /cluster with a reason, every /metrics answer has
// fodc_agent_up 0 for it under the labels it had online, /health is
// degraded and names it; a new agent process of the node brings the same
// node entry back online.
func TestKilledAgentProcessGoesOfflineAndComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs agent processes")
	}
	const heartbeatTimeout = 5 * time.Second
	p := startProxyProcess(t, "--heartbeat-interval", "1s", "--agent-heartbeat-timeout", heartbeatTimeout.String())
	base := "http://" + p.httpAddr
	ap := startNodeAgent(t, p.grpcAddr, "e2e-data-0")
	other := startNodeAgent(t, p.grpcAddr, "e2e-data-1")
	var onlineLabels string
	require.Eventually(t, func() bool {
		r := get(t, base+"/metrics")
		l0, v0 := agentUp(r.body, "e2e-data-0")
		_, v1 := agentUp(r.body, "e2e-data-1")
		onlineLabels = l0
		return v0 == "1" && v1 == "1"
	}, wait, 50*time.Millisecond, "agent logs:\n%s\n%s", ap.stderr.String(), other.stderr.String())
	require.Contains(t, onlineLabels, `node_address="127.0.0.1:27912"`)
	before := clusterNodes(t, base, "?pod_name=e2e-data-0")
	require.Len(t, before, 1)
	require.Equal(t, "online", before[0].Status)
	require.Equal(t, "healthy", getHealth(t, base).Status)

	killed := killAgentProcess(t, ap)
	var gone clusterNode
	require.Eventually(t, func() bool {
		ns := clusterNodes(t, base, "?pod_name=e2e-data-0")
		if len(ns) != 1 || ns[0].Status != "offline" {
			return false
		}
		gone = ns[0]
		return true
	}, heartbeatTimeout, 10*time.Millisecond)
	toOffline := time.Since(killed)
	require.Eventually(t, func() bool {
		_, v := agentUp(get(t, base+"/metrics").body, "e2e-data-0")
		return v == "0"
	}, heartbeatTimeout, 10*time.Millisecond)
	toDown := time.Since(killed)
	t.Logf("SIGKILL to offline in /cluster: %v; to fodc_agent_up 0: %v", toOffline, toDown)
	require.Less(t, toDown, heartbeatTimeout)

	require.Equal(t, before[0].AgentID, gone.AgentID)
	require.Regexp(t, `^stream ended: \w+$`, gone.DisconnectReason)
	require.NotEmpty(t, gone.LastSeen)
	r := get(t, base+"/metrics")
	labels, v := agentUp(r.body, "e2e-data-0")
	require.Equal(t, "0", v)
	require.Equal(t, onlineLabels, labels, "the series continues under the same labels")
	_, v = agentUp(r.body, "e2e-data-1")
	require.Equal(t, "1", v)
	require.Contains(t, r.body, `fodc_proxy_agents{role="datanode-hot",status="offline"} 1`)
	require.Contains(t, r.body, `fodc_proxy_agents{role="datanode-hot",status="online"} 1`)
	h := getHealth(t, base)
	require.Equal(t, "degraded", h.Status)
	require.Equal(t, []string{"1 of 2 agents offline: e2e-data-0 (" + gone.DisconnectReason + ")"}, h.Reasons)

	back := startNodeAgent(t, p.grpcAddr, "e2e-data-0")
	require.Eventually(t, func() bool {
		ns := clusterNodes(t, base, "?pod_name=e2e-data-0")
		return len(ns) == 1 && ns[0].Status == "online"
	}, wait, 20*time.Millisecond, "agent log:\n%s", back.stderr.String())
	require.Len(t, clusterNodes(t, base, ""), 2, "one entry per node")
	require.Eventually(t, func() bool { return getHealth(t, base).Status == "healthy" }, wait, 20*time.Millisecond)
	_, v = agentUp(get(t, base+"/metrics").body, "e2e-data-0")
	require.Equal(t, "1", v)
}

// runAgent runs a simulated agent until the returned stop is called (or
// the test ends), without waiting for it.
func runAgent(t *testing.T, cfg agentsim.Config) (*agentsim.Agent, func()) {
	t.Helper()
	return proxytest.RunAgent(t, cfg)
}

// --max-agents makes room by evicting the offline entry silent longest,
// never an online one: with the table full of online agents a new node is
// refused.
func TestMaxAgentsEvictsOfflineBeforeOnline(t *testing.T) {
	p, _ := startProxy(t, func(c *proxy.Config) { c.MaxAgents = 2 })
	base := "http://" + p.HTTPAddr()
	connect(t, p, agentsim.Config{Register: dataNode("data-0", "hot")})
	a1, stop1 := runAgent(t, agentsim.Config{ProxyAddr: p.GRPCAddr(), Register: dataNode("data-1", "hot")})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := a1.WaitRegistered(ctx, 1)
	require.NoError(t, err)
	stop1()
	require.Eventually(t, func() bool {
		ns := clusterNodes(t, base, "?pod_name=data-1")
		return len(ns) == 1 && ns[0].Status == "offline"
	}, wait, 10*time.Millisecond)

	connect(t, p, agentsim.Config{Register: dataNode("data-2", "hot")})
	status := map[string]string{}
	for _, n := range clusterNodes(t, base, "") {
		status[n.PodName] = n.Status
	}
	require.Equal(t, map[string]string{"data-0": "online", "data-2": "online"}, status, "the offline entry made room")
	r := get(t, base+"/metrics")
	require.Contains(t, r.body, "\nfodc_proxy_agent_removals_total{reason=\"evicted\"} 1\n")

	// Full of online agents: the next node is refused, nobody is evicted.
	a3, _ := runAgent(t, agentsim.Config{ProxyAddr: p.GRPCAddr(), Register: dataNode("data-3", "hot")})
	require.Eventually(t, func() bool {
		return strings.Contains(get(t, base+"/metrics").body, "\nfodc_proxy_registrations_total{result=\"rejected\"} ")
	}, wait, 20*time.Millisecond)
	require.Empty(t, a3.AgentID())
	status = map[string]string{}
	for _, n := range clusterNodes(t, base, "") {
		status[n.PodName] = n.Status
	}
	require.Equal(t, map[string]string{"data-0": "online", "data-2": "online"}, status)
}

// With --state-file, a proxy restart keeps the nodes: the node whose agent
// comes back is online again, the one that does not is listed offline
// ("proxy restart") and reported down under its old agent id.
func TestStateFileKeepsNodesAcrossProxyRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the proxy binary")
	}
	state := filepath.Join(t.TempDir(), "registry.json")
	args := []string{"--heartbeat-interval", "1s", "--agent-heartbeat-timeout", "5s", "--state-file", state}
	p1 := startProxyProcess(t, args...)
	back, _ := runAgent(t, agentsim.Config{ProxyAddr: p1.grpcAddr, Register: dataNode("data-back", "hot")})
	lost, stopLost := runAgent(t, agentsim.Config{ProxyAddr: p1.grpcAddr, Register: dataNode("data-lost", "warm")})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := back.WaitRegistered(ctx, 1)
	require.NoError(t, err)
	lostID, err := lost.WaitRegistered(ctx, 1)
	require.NoError(t, err)
	lostLabels := ""
	require.Eventually(t, func() bool {
		lostLabels, _ = agentUp(get(t, "http://"+p1.httpAddr+"/metrics").body, "data-lost")
		return lostLabels != ""
	}, wait, 20*time.Millisecond)

	// The lost node's agent goes away for good; then the proxy restarts.
	stopLost()
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p1.exited:
	case <-time.After(wait):
		t.Fatalf("fodc-proxy did not stop on SIGTERM\n%s", p1.stderr.String())
	}
	raw, err := os.ReadFile(state)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"data-lost"`)
	require.NotContains(t, string(raw), "banyandb_", "identities only, no collected data")

	p2 := startProxyProcess(t, append(args, "--grpc-listen-addr", p1.grpcAddr)...)
	base := "http://" + p2.httpAddr
	_, err = back.WaitRegistered(ctx, 2)
	require.NoError(t, err)
	var nodes []clusterNode
	require.Eventually(t, func() bool {
		nodes = clusterNodes(t, base, "")
		return len(nodes) == 2 && nodes[0].Status == "online"
	}, wait, 20*time.Millisecond)
	require.Equal(t, "data-back", nodes[0].PodName)
	require.Equal(t, "data-lost", nodes[1].PodName)
	require.Equal(t, "offline", nodes[1].Status)
	require.Equal(t, "proxy restart", nodes[1].DisconnectReason)
	require.Equal(t, lostID, nodes[1].AgentID)

	labels, v := agentUp(get(t, base+"/metrics").body, "data-lost")
	require.Equal(t, "0", v)
	require.Equal(t, lostLabels, labels, "the series continues across the restart")
	h := getHealth(t, base)
	require.Equal(t, "degraded", h.Status)
	require.Equal(t, []string{"1 of 2 agents offline: data-lost (proxy restart)"}, h.Reasons)
}

// A real Prometheus scraping the proxy evaluates the alert expression
// fodc_agent_up == 0 to the node whose agent process was killed, and the
// node's fodc_agent_up is one series that went from 1 to 0.
func TestRealPrometheusAlertsOnKilledAgent(t *testing.T) {
	bin := requireTool(t, "prometheus")
	if testing.Short() {
		t.Skip("runs Prometheus and agent processes")
	}
	p, _ := startProxy(t, nil)
	connect(t, p, agentsim.Config{Register: dataNode("data-alive", "hot")})
	ap := startNodeAgent(t, p.GRPCAddr(), "data-killed")
	require.Eventually(t, func() bool {
		_, v := agentUp(get(t, "http://"+p.HTTPAddr()+"/metrics").body, "data-killed")
		return v == "1"
	}, wait, 50*time.Millisecond, "agent log:\n%s", ap.stderr.String())

	base := startPrometheus(t, bin, p.HTTPAddr())
	require.Eventually(t, func() bool {
		return len(promQuery(base, `fodc_agent_up{pod_name="data-killed"} == 1`)) == 1
	}, 2*wait, 200*time.Millisecond)
	require.Empty(t, promQuery(base, `fodc_agent_up == 0`))

	killAgentProcess(t, ap)
	var res []promResult
	require.Eventually(t, func() bool {
		res = promQuery(base, `fodc_agent_up == 0`)
		return len(res) == 1
	}, wait, 200*time.Millisecond)
	require.Equal(t, "data-killed", res[0].Metric["pod_name"])
	require.Equal(t, "ROLE_DATA", res[0].Metric["node_role"])
	// One series holding both values: the labels did not change.
	span := promQuery(base, `max_over_time(fodc_agent_up{pod_name="data-killed"}[5m]) - min_over_time(fodc_agent_up{pod_name="data-killed"}[5m])`)
	require.Len(t, span, 1)
	require.Equal(t, "1", span[0].Value[1])
}

// promProcess is a real Prometheus running until the test ends.
type promProcess struct {
	base   string        // its HTTP API
	exited chan struct{} // closed if it ends early
	out    *syncBuffer   // its log
}

// runPrometheus starts Prometheus with scrapeConfigs (the YAML list items
// under scrape_configs) and a 1 s scrape interval until the test ends.
func runPrometheus(t *testing.T, bin, scrapeConfigs string) promProcess {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"+scrapeConfigs), 0o600))
	web := freePort(t)
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	pp := promProcess{base: "http://" + web, exited: make(chan struct{}), out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = pp.out, pp.out
	require.NoError(t, cmd.Start())
	go func() { _ = cmd.Wait(); close(pp.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-pp.exited
	})
	return pp
}

// waitFor polls cond until it holds, failing the test if Prometheus exits
// or the generous bound passes.
func (pp promProcess) waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		select {
		case <-pp.exited:
			return true
		default:
		}
		return cond()
	}, 2*wait, 200*time.Millisecond, "%s:\n%s", what, pp.out.String())
	select {
	case <-pp.exited:
		t.Fatalf("prometheus exited:\n%s", pp.out.String())
	default:
	}
}

// startPrometheus runs Prometheus scraping target every second until the
// test ends and returns its base URL once it has scraped target.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	pp := runPrometheus(t, bin, fmt.Sprintf("  - job_name: fodc\n    static_configs:\n      - targets: ['%s']\n", target))
	pp.waitFor(t, func() bool {
		res := promQuery(pp.base, `up{job="fodc"}`)
		return len(res) == 1 && res[0].Value[1] == "1"
	}, "prometheus never scraped the proxy successfully")
	return pp.base
}
