package bench

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkScrape is a whole /metrics scrape against an in-process proxy,
// for profiling proxy and simulator together (go test -cpuprofile). Size
// it with FODC_BENCH_AGENTS and FODC_BENCH_SERIES; FODC_BENCH_SCRAPERS
// concurrent scrapes make one iteration.
func BenchmarkScrape(b *testing.B) {
	agents, series := envInt("FODC_BENCH_AGENTS", 10), envInt("FODC_BENCH_SERIES", 10000)
	scrapers := envInt("FODC_BENCH_SCRAPERS", 1)
	p := startProxy(b)
	shape := DefaultConfig().Shape
	shape.Series = series
	shape.Typed = true
	payloads, err := NewPayloads(shape, 0, time.Second, time.Now())
	require.NoError(b, err)
	sim, err := NewSimulator(SimConfig{ProxyAddr: p.GRPCAddr(), Agents: agents, Shape: shape, Payloads: payloads})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sim.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	require.NoError(b, sim.WaitEstablished(b.Context(), agents))
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	cfg := ScrapeConfig{BaseURL: "http://" + p.HTTPAddr(), Endpoints: []string{EndpointMetrics}, Concurrency: scrapers, Count: scrapers, Timeout: 30 * time.Second}
	require.NoError(b, waitComplete(b.Context(), cfg, client, agents, time.Minute))
	var total int64
	b.ResetTimer()
	for b.Loop() {
		for _, r := range scrape(b.Context(), cfg, client) {
			require.NoError(b, r.err)
			require.EqualValues(b, agents*series, r.series)
			total += r.series
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "series/s")
}
