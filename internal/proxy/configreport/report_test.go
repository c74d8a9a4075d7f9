package configreport

import (
	"path"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

var collected = time.Date(2026, 3, 1, 9, 30, 0, 123000000, time.UTC)

// cfg builds an agent's report.
type cfg struct {
	params  map[string][]string
	env     map[string]string
	runtime map[string]string
	args    []string
}

func (c cfg) proto() *fodcv1.ExtNodeConfigRequest {
	sp := make(map[string]*fodcv1.ExtParamValues, len(c.params))
	for k, vs := range c.params {
		sp[k] = &fodcv1.ExtParamValues{Values: vs}
	}
	return &fodcv1.ExtNodeConfigRequest{
		CollectedAt:   timestamppb.New(collected.Add(-time.Second)),
		StartupParams: sp,
		RuntimeConfig: c.runtime,
		Environment:   c.env,
		Args:          c.args,
		Source:        "proc:1",
	}
}

func node(pod, role string, c cfg) NodeConfig {
	return NodeConfig{
		AgentID: "agent-" + pod, PodName: pod, Address: "10.0.0.1:17912", Role: role,
		Supported: true, Config: c.proto(), CollectedAt: collected,
	}
}

// hotNode is a data node of the hot tier with the per-node parameters a
// StatefulSet pod really has: its own host, node id, labels, ports,
// pod-name-embedded paths and process facts.
func hotNode(pod, ip, flushTimeout string, uptime string) NodeConfig {
	return node(pod, "datanode-hot", cfg{
		params: map[string][]string{
			"etcd-endpoints":        {"http://etcd-0:2379,http://etcd-1:2379"},
			"grpc-host":             {ip},
			"grpc-port":             {"17912"},
			"http-port":             {"17913"},
			"node-host":             {pod + ".banyandb-data-hot-headless.default.svc"},
			"node-host-provider":    {"flag"},
			"node-id":               {pod},
			"node-labels":           {"type=hot,zone=" + pod},
			"stream-root-path":      {"/data/" + pod + "/stream"},
			"measure-root-path":     {"/data/" + pod},
			"pprof-listener-addr":   {ip + ":6060"},
			"measure-flush-timeout": {flushTimeout},
			"etcd-password":         {"<redacted>"},
		},
		env: map[string]string{
			"BYDB_NODE_HOST":   ip,
			"BYDB_GRPC_PORT":   "17912",
			"BYDB_LOG_LEVEL":   "info",
			"BYDB_CACHE_DIR":   "/cache/" + pod,
			"BYDB_POD_IP":      ip,
			"BYDB_HTTP_ADDR":   ip + ":17913",
			"BYDB_DATA_NODE_0": "x", // same everywhere
		},
		runtime: map[string]string{
			"program":            "/usr/local/bin/banyand",
			"uptime_seconds":     uptime,
			"started_at":         "2026-03-01T0" + uptime[:1] + ":00:00Z",
			"cgroup":             "/kubepods/" + pod,
			"cpu_limit":          "2",
			"memory_limit_bytes": "4294967296",
		},
		args: []string{"data"},
	})
}

func TestBuildOneDifferingFlag(t *testing.T) {
	nodes := []NodeConfig{
		hotNode("banyandb-data-hot-2", "10.0.0.12", "5s", "3600"),
		hotNode("banyandb-data-hot-0", "10.0.0.10", "1s", "7200"),
		hotNode("banyandb-data-hot-1", "10.0.0.11", "1s", "5400"),
	}
	r := Build(nodes, DefaultIgnore())
	require.Equal(t, Report{
		Groups: []GroupReport{{
			Role:  "datanode-hot",
			Tier:  "hot",
			Nodes: []string{"banyandb-data-hot-0", "banyandb-data-hot-1", "banyandb-data-hot-2"},
			Differences: []Difference{{
				Param: "measure-flush-timeout",
				Values: []ValueHolders{
					{Value: "1s", Nodes: []string{"banyandb-data-hot-0", "banyandb-data-hot-1"}},
					{Value: "5s", Nodes: []string{"banyandb-data-hot-2"}},
				},
			}},
		}},
		Unsupported: []string{},
		Failed:      map[string]string{},
		Ignored:     DefaultIgnore().Patterns(),
	}, r)
	require.Equal(t, map[string]int{"datanode-hot": 1}, DifferingParams(r))
}

func TestBuildWithoutIgnoreShowsPerNodeParams(t *testing.T) {
	nodes := []NodeConfig{
		hotNode("banyandb-data-hot-0", "10.0.0.10", "1s", "7200"),
		hotNode("banyandb-data-hot-1", "10.0.0.11", "1s", "5400"),
	}
	r := Build(nodes, Ignore{})
	var params []string
	for _, d := range r.Groups[0].Differences {
		params = append(params, d.Param)
	}
	// Pod-name-embedded values (node-id, node-host, the root paths,
	// BYDB_CACHE_DIR, node-labels' zone, the cgroup) are equal after
	// normalisation;
	// only the genuinely per-node values remain. This is what the default
	// ignore list is for.
	require.Equal(t, []string{
		"env:BYDB_HTTP_ADDR", "env:BYDB_NODE_HOST", "env:BYDB_POD_IP",
		"grpc-host", "pprof-listener-addr",
		"runtime:started_at", "runtime:uptime_seconds",
	}, params)
}

func TestBuildUnset(t *testing.T) {
	a := node("p-0", "liaison", cfg{params: map[string][]string{"x": {"1"}, "y": {"a", "b"}}})
	b := node("p-1", "liaison", cfg{params: map[string][]string{"x": {"1"}, "y": {"a", "b"}}})
	c := node("p-2", "liaison", cfg{params: map[string][]string{"y": {"b", "a"}, "z": {""}}, env: map[string]string{"BYDB_Q": "1"}})
	r := Build([]NodeConfig{a, b, c}, DefaultIgnore())
	require.Len(t, r.Groups, 1)
	g := r.Groups[0]
	require.Equal(t, "liaison", g.Role)
	require.Empty(t, g.Tier)
	require.Equal(t, []Difference{
		{Param: "env:BYDB_Q", Values: []ValueHolders{
			{Value: Unset, Nodes: []string{"p-0", "p-1"}},
			{Value: "1", Nodes: []string{"p-2"}},
		}},
		{Param: "x", Values: []ValueHolders{
			{Value: Unset, Nodes: []string{"p-2"}},
			{Value: "1", Nodes: []string{"p-0", "p-1"}},
		}},
		{Param: "y", Values: []ValueHolders{
			{Value: "a, b", Nodes: []string{"p-0", "p-1"}},
			{Value: "b, a", Nodes: []string{"p-2"}},
		}},
		{Param: "z", Values: []ValueHolders{
			{Value: "", Nodes: []string{"p-2"}},
			{Value: Unset, Nodes: []string{"p-0", "p-1"}},
		}},
	}, g.Differences)
}

func TestBuildGroupsByRoleAndTier(t *testing.T) {
	p := func(v string) cfg { return cfg{params: map[string][]string{"retention": {v}}} }
	nodes := []NodeConfig{
		node("hot-0", "datanode-hot", p("7d")),
		node("hot-1", "datanode-hot", p("7d")),
		node("warm-0", "datanode-warm", p("30d")),
		node("warm-1", "datanode-warm", p("31d")),
		node("liaison-0", "liaison", p("1d")),
		node("legacy-0", "ROLE_DATA", p("9d")),
		node("nobody", "", p("0d")),
	}
	r := Build(nodes, DefaultIgnore())
	var got []GroupReport
	for _, g := range r.Groups {
		got = append(got, GroupReport{Role: g.Role, Tier: g.Tier, Nodes: g.Nodes, Differences: nil})
	}
	require.Equal(t, []GroupReport{
		{Role: "datanode", Nodes: []string{"legacy-0"}},
		{Role: "datanode-hot", Tier: "hot", Nodes: []string{"hot-0", "hot-1"}},
		{Role: "datanode-warm", Tier: "warm", Nodes: []string{"warm-0", "warm-1"}},
		{Role: "liaison", Nodes: []string{"liaison-0"}},
		{Role: "unspecified", Nodes: []string{"nobody"}},
	}, got)
	require.Equal(t, map[string]int{
		"datanode": 0, "datanode-hot": 0, "datanode-warm": 1, "liaison": 0, "unspecified": 0,
	}, DifferingParams(r))
	require.Equal(t, "retention", r.Groups[2].Differences[0].Param)
}

func TestBuildUnsupportedAndFailed(t *testing.T) {
	same := cfg{params: map[string][]string{"a": {"1"}}}
	noSource := node("nosrc-0", "liaison", cfg{params: map[string][]string{"a": {"2"}}})
	noSource.Config.Source = ""
	noSource.Config.Errors = []string{"read command line of pid 7: permission denied"}
	nodes := []NodeConfig{
		node("ok-1", "liaison", same),
		{AgentID: "upstream-1", PodName: "up-1", Role: "liaison"},
		{AgentID: "upstream-0", PodName: "up-0", Role: "liaison"},
		{AgentID: "slow", PodName: "slow-0", Role: "liaison", Supported: true, Err: "context deadline exceeded"},
		{AgentID: "empty", PodName: "empty-0", Role: "liaison", Supported: true},
		noSource,
		node("ok-0", "liaison", same),
	}
	r := Build(nodes, DefaultIgnore())
	require.Equal(t, []string{"up-0", "up-1"}, r.Unsupported)
	require.Equal(t, map[string]string{
		"slow-0":  "context deadline exceeded",
		"empty-0": "no configuration received",
		"nosrc-0": "startup parameters unavailable: read command line of pid 7: permission denied",
	}, r.Failed)
	require.Len(t, r.Groups, 1)
	require.Equal(t, []string{"ok-0", "ok-1"}, r.Groups[0].Nodes)
	require.Empty(t, r.Groups[0].Differences)
}

func TestBuildEmptyAndDuplicateNames(t *testing.T) {
	r := Build(nil, DefaultIgnore())
	require.Empty(t, r.Groups)
	require.Empty(t, DifferingParams(r))

	a := node("dup", "liaison", cfg{params: map[string][]string{"x": {"1"}}})
	b := node("dup", "liaison", cfg{params: map[string][]string{"x": {"2"}}})
	a.AgentID, b.AgentID = "id-a", "id-b"
	c := node("", "liaison", cfg{params: map[string][]string{"x": {"2"}}})
	c.AgentID = "id-c"
	r = Build([]NodeConfig{a, b, c}, DefaultIgnore())
	require.Equal(t, []string{"dup (id-a)", "dup (id-b)", "id-c"}, r.Groups[0].Nodes)
	require.Equal(t, []ValueHolders{
		{Value: "1", Nodes: []string{"dup (id-a)"}},
		{Value: "2", Nodes: []string{"dup (id-b)", "id-c"}},
	}, r.Groups[0].Differences[0].Values)
}

func TestReplacePod(t *testing.T) {
	tests := []struct {
		v, pod, want string
	}{
		{"/data/pod-1/stream", "pod-1", "/data/{pod}/stream"},
		{"/data/pod-10", "pod-1", "/data/pod-10"},
		{"/data/mypod-1", "pod-1", "/data/mypod-1"},
		{"pod-1", "pod-1", "{pod}"},
		{"pod-1.svc,pod-1-cache,xpod-1,pod-1", "pod-1", "{pod}.svc,{pod}-cache,xpod-1,{pod}"},
		{"pod-1pod-1", "pod-1", "pod-1pod-1"},
		{"x1-1-1", "1-1", "x1-{pod}"},
		{"anything", "", "anything"},
	}
	for _, tc := range tests {
		t.Run(tc.v, func(t *testing.T) {
			require.Equal(t, tc.want, replacePod(tc.v, tc.pod))
		})
	}
}

func TestParseIgnore(t *testing.T) {
	defaults := DefaultIgnore().Patterns()
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"empty means defaults", "  ", defaults},
		{"none", "none", []string{}},
		{"replace", "*-path, Env:BYDB_*", []string{"*-path", "env:bydb-*"}},
		{"add", "+*-path,,node-host-provider", append(append([]string(nil), defaults...), "*-path", "node-host-provider")},
		{"add a duplicate", "+port", defaults},
		{"plus alone", "+", defaults},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ig, err := ParseIgnore(tc.spec)
			require.NoError(t, err)
			require.Equal(t, tc.want, ig.Patterns())
		})
	}

	_, err := ParseIgnore("ok,[bad")
	require.ErrorIs(t, err, path.ErrBadPattern)
	require.Contains(t, err.Error(), `"[bad"`)
}

func TestIgnoreMatch(t *testing.T) {
	def := DefaultIgnore()
	custom, err := ParseIgnore("env:*,runtime:cpu_limit,Measure-*")
	require.NoError(t, err)
	tests := []struct {
		ig    Ignore
		name  string
		match bool
	}{
		{def, "grpc-host", true},
		{def, "node-host", true},
		{def, "hostname", true},
		{def, "node-host-provider", false},
		{def, "http-grpc-addr", true},
		{def, "grpc-port", true},
		{def, "port", true},
		{def, "support", false},
		{def, "env:BYDB_GRPC_PORT", true},
		{def, "env:BYDB_NODE_HOST", true},
		{def, "env:BYDB_POD_IP", true},
		{def, "node-id", true},
		{def, "node-labels", true},
		{def, "runtime:uptime_seconds", true},
		{def, "runtime:cpu_limit", false},
		{def, "etcd-endpoints", false},
		{def, "measure-flush-timeout", false},
		{def, "stream-root-path", false},
		{custom, "env:BYDB_ANYTHING", true},
		{custom, "runtime:cpu_limit", true},
		{custom, "measure-flush-timeout", true},
		{custom, "grpc-port", false},
		{Ignore{}, "grpc-port", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.match, tc.ig.Match(tc.name))
		})
	}
}

func TestCustomIgnoreReplacesDefaults(t *testing.T) {
	ig, err := ParseIgnore("*host,*addr,runtime:*,env:*,node-*,*-path")
	require.NoError(t, err)
	nodes := []NodeConfig{
		hotNode("banyandb-data-hot-0", "10.0.0.10", "1s", "7200"),
		hotNode("banyandb-data-hot-1", "10.0.0.11", "1s", "5400"),
	}
	nodes[1].Config.StartupParams["grpc-port"].Values = []string{"27912"}
	r := Build(nodes, ig)
	require.Len(t, r.Groups[0].Differences, 1)
	require.Equal(t, "grpc-port", r.Groups[0].Differences[0].Param)
}
