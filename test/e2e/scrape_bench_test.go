package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkMetricsScrape measures a whole /metrics scrape over loopback:
// commands to every agent, their replies over gRPC, enrichment and
// rendering. Size it with FODC_BENCH_AGENTS and FODC_BENCH_SERIES.
func BenchmarkMetricsScrape(b *testing.B) {
	agents, seriesPer := envInt("FODC_BENCH_AGENTS", 20), envInt("FODC_BENCH_SERIES", 1000)
	p, _ := startProxy(b, nil)
	for i := range agents {
		pod := fmt.Sprintf("data-%03d", i)
		connect(b, p, agentsim.Config{Register: dataNode(pod, "hot"), Metrics: agentsim.Synthetic(pod, seriesPer, int64(i))})
	}
	url := "http://" + p.HTTPAddr() + "/metrics?role=datanode"
	var bytes int64
	b.ResetTimer()
	for b.Loop() {
		resp, err := http.Get(url)
		require.NoError(b, err)
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.NoError(b, err)
		require.Equal(b, strconv.Itoa(agents), resp.Header.Get("X-Fodc-Agents-Answered"))
		bytes = n
	}
	b.ReportMetric(float64(agents*seriesPer)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
	b.ReportMetric(float64(bytes), "resp-bytes")
}
