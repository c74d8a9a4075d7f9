package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
)

// freePort asks the kernel for a loopback port. The port is free when this
// returns; Prometheus cannot be told to pick its own.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query; it returns nil while Prometheus is not
// answering yet.
func promQuery(base, q string) []promResult {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []promResult `json:"result"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	return body.Data.Result
}

// A real Prometheus scrapes the proxy: its API then shows the agents'
// series with their node labels, and up == 1 for the proxy target.
func TestRealPrometheusScrapesProxy(t *testing.T) {
	slow(t)
	bin := requireTool(t, "prometheus")
	p, _ := startProxy(t, nil)
	connect(t, p, agentsim.Config{Register: dataNode("data-hot-0", "hot")})
	connect(t, p, agentsim.Config{Register: dataNode("data-warm-0", "warm")})

	base := startPrometheus(t, bin, p.HTTPAddr())

	var res []promResult
	require.Eventually(t, func() bool {
		res = promQuery(base, `banyandb_system_cpu_num`)
		return len(res) == 2
	}, wait, 200*time.Millisecond)
	byPod := map[string]map[string]string{}
	for _, r := range res {
		byPod[r.Metric["pod_name"]] = r.Metric
	}
	require.Equal(t, "ROLE_DATA", byPod["data-hot-0"]["node_role"])
	require.Equal(t, "hot", byPod["data-hot-0"]["node_type"])
	require.Equal(t, "warm", byPod["data-warm-0"]["node_type"])
	require.Equal(t, "fodc", byPod["data-warm-0"]["job"])
	require.NotContains(t, byPod["data-hot-0"], "agent_id", "no per-sample agent id")

	agentsUp := promQuery(base, `fodc_agent_up == 1`)
	require.Len(t, agentsUp, 2)
	for _, r := range agentsUp {
		require.NotEmpty(t, r.Metric["agent_id"])
	}
	// Histograms arrive as histograms: a quantile can be computed.
	q := promQuery(base, `histogram_quantile(0.9, sum by (le) (banyandb_liaison_grpc_total_latency_bucket))`)
	require.Len(t, q, 1)

	// Which format and coding Prometheus negotiated, as the proxy counted
	// them (the counter is itself scraped): OpenMetrics, gzip-compressed.
	var answers []promResult
	require.Eventually(t, func() bool {
		answers = promQuery(base, `fodc_proxy_metrics_answers_total > 0`)
		return len(answers) > 0
	}, wait, 200*time.Millisecond)
	for _, r := range answers {
		t.Logf("Prometheus got /metrics as format=%s encoding=%s (%s answers)", r.Metric["format"], r.Metric["encoding"], r.Value[1])
		require.Equal(t, "openmetrics", r.Metric["format"])
		require.Equal(t, "gzip", r.Metric["encoding"])
	}
	// The counters' families came through OpenMetrics with their _total.
	require.NotEmpty(t, promQuery(base, `fodc_proxy_collection_rounds_total`))
}
