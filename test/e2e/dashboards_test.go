package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/demo"
)

// dashboard is the part of a Grafana dashboard this test reads.
type dashboard struct {
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// substitute replaces the template variables the way Grafana does with
// "All" selected and a rate interval fitting a 1 s scrape.
func substitute(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "15s",
		"$job", ".*",
		"$role", ".*",
		"$pod", ".*",
	).Replace(expr)
}

// Every panel of every dashboard in deploy/grafana gives data: the demo
// runs, a real Prometheus scrapes its proxy, and each panel's PromQL (its
// template variables substituted) is evaluated through Prometheus' HTTP
// API until it returns something.
func TestGrafanaDashboardsHaveData(t *testing.T) {
	slow(t)
	bin := requireTool(t, "prometheus")
	files, err := filepath.Glob("../../deploy/grafana/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- demo.Run(ctx, demo.Options{GRPCListenAddr: "127.0.0.1:0", HTTPListenAddr: "127.0.0.1:0",
			ScrapeInterval: 500 * time.Millisecond, Ready: func(addr string) { ready <- addr }})
	}()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("demo ended: %v", err)
	case <-time.After(wait):
		t.Fatal("demo not ready")
	}
	base := startPrometheus(t, bin, addr)

	type query struct{ where, expr string }
	var queries []query
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var d dashboard
		require.NoError(t, json.Unmarshal(raw, &d), f)
		require.NotEmpty(t, d.Panels, f)
		for _, p := range d.Panels {
			require.NotEmpty(t, p.Targets, "%s: panel %q has no query", d.Title, p.Title)
			for _, tg := range p.Targets {
				require.NotEmpty(t, tg.Expr)
				queries = append(queries, query{d.Title + " / " + p.Title, substitute(tg.Expr)})
			}
		}
	}
	// Rates need two samples in their window: poll, bounded, until every
	// query has data, then report the ones that never got any.
	pending := queries
	deadline := time.Now().Add(wait)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var still []query
		for _, q := range pending {
			if len(promQuery(base, q.expr)) == 0 {
				still = append(still, q)
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(time.Second) // the next scrape; bounded by deadline
		}
	}
	for _, q := range pending {
		t.Errorf("%s: no data for %s", q.where, q.expr)
	}
	t.Logf("%d panel queries of %d dashboards evaluated with data", len(queries), len(files))
}
