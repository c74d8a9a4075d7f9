package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// Once Ready fires every endpoint shows the four real agents' data, and
// cancelling stops everything cleanly.
func TestDemoServesEveryEndpoint(t *testing.T) {
	ready := make(chan string, 1)
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPCListenAddr: "127.0.0.1:0", HTTPListenAddr: "127.0.0.1:0", ScrapeInterval: 200 * time.Millisecond,
			Out: &out, Ready: func(addr string) { ready <- addr },
		})
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("demo ended early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("demo not ready")
	}

	metrics := get(t, base+"/metrics")
	for _, pod := range []string{"demo-liaison-0", "demo-data-hot-0", "demo-data-hot-1", "demo-data-warm-0"} {
		require.Contains(t, metrics, `pod_name="`+pod+`"`)
	}
	require.Contains(t, metrics, "banyandb_liaison_grpc_total_latency_bucket{")
	require.Contains(t, metrics, `node_type="warm"`)

	var health struct {
		Status       string `json:"status"`
		AgentsOnline int    `json:"agents_online"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/health")), &health))
	require.Equal(t, "healthy", health.Status)
	require.Equal(t, 4, health.AgentsOnline)

	var cluster struct {
		Nodes []struct {
			PodName   string         `json:"pod_name"`
			Secondary map[string]any `json:"secondary_addresses"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/cluster")), &cluster))
	require.Len(t, cluster.Nodes, 4)
	for _, n := range cluster.Nodes {
		require.Contains(t, n.Secondary, "gossip", n.PodName)
	}

	// The printed window URL gives history once a few scrapes have passed.
	i := strings.Index(out.String(), base+"/metrics-windows?")
	require.GreaterOrEqual(t, i, 0, out.String())
	windowURL := strings.Fields(out.String()[i:])[0]
	windowURL = strings.TrimSuffix(windowURL, "'")
	u, err := url.Parse(windowURL)
	require.NoError(t, err)
	require.NotEmpty(t, u.Query().Get("start_time"))
	require.Eventually(t, func() bool {
		var series []struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal([]byte(get(t, windowURL)), &series) != nil || len(series) == 0 {
			return false
		}
		return len(series[0].Data) >= 3
	}, 20*time.Second, 50*time.Millisecond)

	cancel()
	require.NoError(t, <-done)
}
