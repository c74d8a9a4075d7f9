package configreport

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/<name>, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(p, got, 0o644))
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err, "run go test -update to create %s", p)
	require.Equal(t, string(want), string(got))
}

func fleet() []NodeConfig {
	full := node("banyandb-data-hot-1", "datanode-hot", cfg{
		params: map[string][]string{
			"grpc-port":     {"17912"},
			"repeat":        {"a", "b"},
			"etcd-password": {"<redacted>"},
			"stream-root":   {"/data/banyandb-data-hot-1"},
			"flush-timeout": {"5s"},
		},
		env:     map[string]string{"BYDB_LOG_LEVEL": "info"},
		runtime: map[string]string{"cpu_limit": "2", "uptime_seconds": "60"},
		args:    []string{"data"},
	})
	full.Config.AgentParams = map[string]*fodcv1.ExtParamValues{
		"proxy-addr":  {Values: []string{"proxy:17900"}},
		"proxy-token": {Values: []string{"<redacted>"}},
	}
	full.Config.Errors = []string{"read memory limit: open memory.max: no such file or directory"}
	other := node("banyandb-data-hot-0", "datanode-hot", cfg{
		params: map[string][]string{
			"grpc-port":     {"17912"},
			"repeat":        {"a", "b"},
			"etcd-password": {"<redacted>"},
			"stream-root":   {"/data/banyandb-data-hot-0"},
			"flush-timeout": {"1s"},
		},
		env:     map[string]string{"BYDB_LOG_LEVEL": "debug"},
		runtime: map[string]string{"cpu_limit": "2", "uptime_seconds": "61"},
		args:    []string{"data"},
	})
	other.CollectedAt = time.Time{} // falls back to the agent's time
	return []NodeConfig{
		full,
		{AgentID: "agent-up", PodName: "banyandb-liaison-0", Address: "10.0.0.5:17912", Role: "liaison"},
		{AgentID: "agent-slow", PodName: "banyandb-data-warm-0", Address: "10.0.0.6:17912", Role: "datanode-warm", Supported: true, Err: "context deadline exceeded"},
		other,
	}
}

func TestWriteConfigJSON(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteConfigJSON(&buf, fleet(), 2345*time.Millisecond+400*time.Microsecond))
	require.True(t, json.Valid(buf.Bytes()))
	golden(t, "config.golden", buf.Bytes())

	var body struct {
		Configurations []map[string]any `json:"configurations"`
		AgeSeconds     float64          `json:"age_seconds"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
	require.InDelta(t, 2.345, body.AgeSeconds, 1e-9)
	require.Len(t, body.Configurations, 4)
	// Sorted by role, then pod name.
	var order []any
	for _, c := range body.Configurations {
		order = append(order, c["pod_name"])
		for _, k := range []string{"agent_id", "pod_name", "address", "node_role", "startup_params", "runtime_config", "environment", "agent_params", "supported"} {
			require.Contains(t, c, k)
		}
	}
	require.Equal(t, []any{"banyandb-data-hot-0", "banyandb-data-hot-1", "banyandb-data-warm-0", "banyandb-liaison-0"}, order)
	hot1 := body.Configurations[1]
	require.Equal(t, map[string]any{
		"grpc-port": "17912", "repeat": []any{"a", "b"}, "etcd-password": "<redacted>",
		"stream-root": "/data/banyandb-data-hot-1", "flush-timeout": "5s",
	}, hot1["startup_params"])
	require.Equal(t, any(true), hot1["supported"])
	require.NotContains(t, hot1, "error")
	require.Equal(t, "2026-03-01T09:30:00.123Z", hot1["collected_at"])
	require.Equal(t, "2026-03-01T09:29:59.123Z", body.Configurations[0]["collected_at"])
	require.Equal(t, "context deadline exceeded", body.Configurations[2]["error"])
	liaison := body.Configurations[3]
	require.Equal(t, any(false), liaison["supported"])
	require.Equal(t, NotSupported, liaison["error"])
	require.Equal(t, map[string]any{}, liaison["startup_params"])
	require.NotContains(t, buf.String(), `\u003c`, "HTML characters are not escaped")
}

func TestWriteReportJSON(t *testing.T) {
	r := Build(fleet(), DefaultIgnore())
	var buf bytes.Buffer
	require.NoError(t, WriteReportJSON(&buf, r, 1500*time.Millisecond))
	require.True(t, json.Valid(buf.Bytes()))
	golden(t, "report.golden", buf.Bytes())

	var body struct {
		Groups []struct {
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
		} `json:"groups"`
		Unsupported []string          `json:"unsupported"`
		Failed      map[string]string `json:"failed"`
		Ignored     []string          `json:"ignored"`
		AgeSeconds  float64           `json:"age_seconds"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
	require.Len(t, body.Groups, 1)
	g := body.Groups[0]
	require.Equal(t, "datanode-hot", g.Role)
	require.Equal(t, "hot", g.Tier)
	require.False(t, g.Consistent)
	require.Equal(t, 2, g.DifferingParams)
	require.Equal(t, "env:BYDB_LOG_LEVEL", g.Differences[0].Param)
	require.Equal(t, "flush-timeout", g.Differences[1].Param)
	require.Equal(t, "1s", g.Differences[1].Values[0].Value)
	require.Equal(t, []string{"banyandb-data-hot-0"}, g.Differences[1].Values[0].Nodes)
	require.Equal(t, []string{"banyandb-liaison-0"}, body.Unsupported)
	require.Equal(t, map[string]string{"banyandb-data-warm-0": "context deadline exceeded"}, body.Failed)
	require.Equal(t, DefaultIgnore().Patterns(), body.Ignored)
	require.InDelta(t, 1.5, body.AgeSeconds, 1e-9)
}

func TestWriteJSONEmpty(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteConfigJSON(&buf, nil, 0))
	require.JSONEq(t, `{"configurations":[],"age_seconds":0}`, buf.String())

	buf.Reset()
	require.NoError(t, WriteReportJSON(&buf, Report{}, 0))
	require.JSONEq(t, `{"groups":[],"unsupported":[],"failed":{},"ignored":[],"age_seconds":0}`, buf.String())

	buf.Reset()
	require.NoError(t, WriteReportJSON(&buf, Report{Groups: []GroupReport{{Role: "liaison"}}}, 0))
	require.JSONEq(t, `{"groups":[{"role":"liaison","nodes":[],"consistent":true,"differing_params":0,"differences":[]}],
		"unsupported":[],"failed":{},"ignored":[],"age_seconds":0}`, buf.String())
}
