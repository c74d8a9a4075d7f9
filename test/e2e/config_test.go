package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agent"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/roles"
)

// configNode is one synthetic BanyanDB node with its own listener, like a
// pod: metrics and a pprof command line.
type configNode struct {
	pod   string
	role  string
	port  int
	flags []string
}

// startConfigAgent serves n's synthetic endpoint and runs one of our agents
// beside it against p until the test ends; it returns the agent id once the
// proxy holds the agent's configuration stream.
func startConfigAgent(t *testing.T, p *proxy.Proxy, n configNode) string {
	t.Helper()
	role, err := roles.Parse(n.role)
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	node := synth.Node{Pod: n.pod, Role: role, Seed: uint64(n.port)}
	node.Args = synth.BanyandArgs(node, synth.ArgsOptions{
		Host: n.pod + ".e2e.svc", GRPCPort: n.port, PprofAddr: lis.Addr().String(), Overrides: n.flags,
	})
	srv := &http.Server{Handler: synth.NodeHandler(node, nil), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close(); <-served })

	cfg := agent.DefaultConfig()
	cfg.ProxyAddr = p.GRPCAddr()
	cfg.NodeRole = n.role
	cfg.PodName = n.pod
	cfg.NodeIP = "127.0.0.1"
	cfg.NodePort = n.port
	cfg.HTTPListenAddr = ""
	cfg.ScrapeTargets = []string{"http://" + lis.Addr().String() + synth.Path(n.pod)}
	cfg.ScrapeInterval = time.Hour
	cfg.HeartbeatInterval = time.Second
	cfg.RecorderMemoryBytes = 4 << 20
	cfg.NodePprofAddr = lis.Addr().String()
	a, err := agent.New(cfg, nil, prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	require.NoError(t, a.WaitReady(wctx))
	id := a.Uplink.Status().AgentID
	require.Eventually(t, func() bool { return p.Streams.Has(id, protocol.KindNodeConfig) }, wait, time.Millisecond)
	return id
}

type consistencyGroup struct {
	Role            string   `json:"role"`
	Tier            string   `json:"tier"`
	Nodes           []string `json:"nodes"`
	Consistent      bool     `json:"consistent"`
	DifferingParams int      `json:"differing_params"`
	Differences     []struct {
		Param  string `json:"param"`
		Values []struct {
			Value string   `json:"value"`
			Nodes []string `json:"nodes"`
		} `json:"values"`
	} `json:"differences"`
}

type consistencyJSON struct {
	Groups      []consistencyGroup `json:"groups"`
	Unsupported []string           `json:"unsupported"`
	Failed      map[string]string  `json:"failed"`
	Ignored     []string           `json:"ignored"`
	AgeSeconds  float64            `json:"age_seconds"`
}

type nodeConfigJSON struct {
	AgentID       string            `json:"agent_id"`
	PodName       string            `json:"pod_name"`
	Address       string            `json:"address"`
	NodeRole      string            `json:"node_role"`
	StartupParams map[string]any    `json:"startup_params"`
	RuntimeConfig map[string]string `json:"runtime_config"`
	AgentParams   map[string]any    `json:"agent_params"`
	Args          []string          `json:"args"`
	Source        string            `json:"source"`
	CollectedAt   string            `json:"collected_at"`
	Supported     bool              `json:"supported"`
	Error         string            `json:"error"`
}

type configJSON struct {
	Configurations []nodeConfigJSON `json:"configurations"`
	AgeSeconds     float64          `json:"age_seconds"`
}

// Three of our agents beside hot data nodes that differ in one flag (and in
// their per-pod hosts, ports, addresses and paths), a liaison, and an
// upstream agent without the extension: the consistency report names
// exactly the differing flag with the nodes holding each value, lists the
// upstream agent as unsupported, and /cluster/config shows every node with
// its secrets redacted and honours the role filter.
func TestConfigConsistencyNamesTheDifferingFlag(t *testing.T) {
	p, _ := startProxy(t, nil)
	base := "http://" + p.HTTPAddr()
	hot := []configNode{
		{pod: "e2e-hot-0", role: "datanode-hot", port: 18912},
		{pod: "e2e-hot-1", role: "datanode-hot", port: 19912},
		{pod: "e2e-hot-2", role: "datanode-hot", port: 20912, flags: []string{"--stream-flush-timeout=3s"}},
	}
	ids := map[string]string{}
	for _, n := range append(hot, configNode{pod: "e2e-liaison-0", role: "liaison", port: 17912}) {
		ids[n.pod] = startConfigAgent(t, p, n)
	}
	connect(t, p, agentsim.Config{Register: dataNode("e2e-upstream-hot", "hot")})

	r := get(t, base+"/cluster/config/consistency")
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.NotContains(t, r.body, "demo-etcd-secret")
	var rep consistencyJSON
	require.NoError(t, json.Unmarshal([]byte(r.body), &rep), r.body)
	require.Equal(t, []string{"e2e-upstream-hot"}, rep.Unsupported)
	require.Empty(t, rep.Failed)
	require.Contains(t, rep.Ignored, "*-port")
	require.Len(t, rep.Groups, 2, r.body)
	i := slices.IndexFunc(rep.Groups, func(g consistencyGroup) bool {
		return g.Role == "datanode-hot"
	})
	require.GreaterOrEqual(t, i, 0, r.body)
	g := rep.Groups[i]
	require.Equal(t, "hot", g.Tier)
	require.Equal(t, []string{"e2e-hot-0", "e2e-hot-1", "e2e-hot-2"}, g.Nodes, "the unsupported agent is not compared")
	require.False(t, g.Consistent)
	require.Equal(t, 1, g.DifferingParams)
	require.Len(t, g.Differences, 1, "per-node hosts, ports, addresses and paths do not appear: %s", r.body)
	d := g.Differences[0]
	require.Equal(t, "stream-flush-timeout", d.Param)
	require.Len(t, d.Values, 2)
	require.Equal(t, "1s", d.Values[0].Value)
	require.Equal(t, []string{"e2e-hot-0", "e2e-hot-1"}, d.Values[0].Nodes)
	require.Equal(t, "3s", d.Values[1].Value)
	require.Equal(t, []string{"e2e-hot-2"}, d.Values[1].Nodes)
	for _, other := range rep.Groups {
		if other.Role != "datanode-hot" {
			require.Equal(t, "liaison", other.Role)
			require.True(t, other.Consistent)
		}
	}

	r = get(t, base+"/cluster/config")
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.NotContains(t, r.body, "demo-etcd-secret", "secrets never leave the agent")
	var all configJSON
	require.NoError(t, json.Unmarshal([]byte(r.body), &all), r.body)
	require.Len(t, all.Configurations, 5)
	for _, c := range all.Configurations {
		if c.PodName == "e2e-upstream-hot" {
			require.False(t, c.Supported)
			require.Equal(t, "configuration not supported by this agent", c.Error)
			continue
		}
		require.True(t, c.Supported, c.PodName)
		require.Equal(t, ids[c.PodName], c.AgentID)
		require.NotEmpty(t, c.CollectedAt, c.PodName)
		require.True(t, strings.HasPrefix(c.Source, "pprof:http://127.0.0.1:"), c.Source)
		require.Equal(t, "<redacted>", c.StartupParams["etcd-password"], c.PodName)
		require.Equal(t, "/banyand", c.RuntimeConfig["program"])
		require.Equal(t, c.NodeRole, c.AgentParams["node-role"], "the agent reports its own flags")
	}

	r = get(t, base+"/cluster/config?role=datanode-hot")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var filtered configJSON
	require.NoError(t, json.Unmarshal([]byte(r.body), &filtered), r.body)
	var pods []string
	for _, c := range filtered.Configurations {
		require.Equal(t, "datanode-hot", c.NodeRole)
		pods = append(pods, c.PodName)
	}
	require.ElementsMatch(t, []string{"e2e-hot-0", "e2e-hot-1", "e2e-hot-2", "e2e-upstream-hot"}, pods)
	require.Equal(t, "/data/e2e-hot-2/measure", configOf(t, filtered, "e2e-hot-2").StartupParams["measure-root-path"])
}

func configOf(t *testing.T, c configJSON, pod string) nodeConfigJSON {
	t.Helper()
	for _, n := range c.Configurations {
		if n.PodName == pod {
			return n
		}
	}
	t.Fatalf("no configuration of %s", pod)
	return nodeConfigJSON{}
}
