package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/demo"
)

// browser finds a headless Chromium: Debian's chromium-headless-shell or
// chromium. Like requireTool, it skips unless FODC_REQUIRE_TOOLS=1.
func browser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium-headless-shell", "chromium", "headless-shell", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FODC_REQUIRE_TOOLS") == "1" {
		t.Fatal("no headless Chromium on PATH (install Debian's chromium-headless-shell)")
	}
	t.Skip("no headless Chromium on PATH")
	return ""
}

// The console, in a real browser against the demo: the fleet table lists
// every demo agent, the graph has the demo's nodes and its pipeline edges
// (the failing node's in the error colour), the drift view names the
// misconfigured node, and the page logs no error. Screenshots go to the
// test's temporary folder (and to docs/console.png with
// FODC_UPDATE_SCREENSHOT=1).
func TestConsoleInABrowser(t *testing.T) {
	slow(t)
	exe := browser(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- demo.Run(ctx, demo.Options{GRPCListenAddr: "127.0.0.1:0", HTTPListenAddr: "127.0.0.1:0",
			ScrapeInterval: 500 * time.Millisecond, CrashAfter: 300 * time.Millisecond, PressureAfter: 300 * time.Millisecond,
			Ready: func(addr string) { ready <- addr }})
	}()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case err := <-done:
		t.Fatalf("demo ended: %v", err)
	case <-time.After(wait):
		t.Fatal("demo not ready")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 1600))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	var mu sync.Mutex
	var pageErrors []string
	require.NoError(t, chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			pageErrors = append(pageErrors, fmt.Sprintf("exception: %s %v", ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value))
				}
				pageErrors = append(pageErrors, "console.error: "+strings.Join(parts, " "))
			}
		}
	}))
	tctx, tcancel := context.WithTimeout(bctx, 2*wait)
	defer tcancel()

	// eval evaluates a JavaScript expression in the page.
	eval := func(expr string, into any) {
		t.Helper()
		v, err := chromedp.Run(tctx, chromedp.Evaluate[json.RawMessage](expr))
		require.NoError(t, err, expr)
		require.NoError(t, json.Unmarshal(v, into), expr)
	}
	poll := func(expr string) {
		t.Helper()
		_, err := chromedp.Run(tctx, chromedp.Poll[json.RawMessage](expr, chromedp.WithPollingTimeout(wait)))
		require.NoError(t, err, "waiting for %s", expr)
	}
	_, err := chromedp.Run(tctx, chromedp.Navigate(base+"/ui/"))
	require.NoError(t, err)
	poll(`window.fodc && fodc.refreshes > 0 && document.querySelectorAll('#fleet-table tbody tr').length === 4`)
	var fleetRows, graphNodes, pipelineEdges int
	var failingColour, driftText, fleetText string
	eval(`document.querySelectorAll('#fleet-table tbody tr').length`, &fleetRows)
	eval(`document.querySelector('#fleet-table tbody').textContent`, &fleetText)
	poll(`fodc.cy && fodc.cy.edges('[layer = "pipeline"]').length >= 5`)
	eval(`fodc.cy.nodes().length`, &graphNodes)
	eval(`fodc.cy.edges('[layer = "pipeline"]').length`, &pipelineEdges)
	// An edge's error ratio needs two recorded points of its counters; the
	// graph can show the edge before the failing node's second point is
	// in the window (with no rate yet, so no errors): wait for it.
	failingEdges := fmt.Sprintf(`fodc.cy.edges('[layer = "pipeline"][target = "%s"]').map(e => e.data('colour')).join(',')`, demo.FailingPod)
	poll(failingEdges + ` === '#c62828'`)
	eval(failingEdges, &failingColour)
	// An edge without a measured rate yet is grey, not healthy green; one
	// with traffic takes the colour of its error ratio.
	var unmeasured string
	eval(`graphElements({nodes: [{id: 'a'}, {id: 'b'}], edges: [
		{layer: 'pipeline', source: 'a', target: 'b', rate: 0, error_ratio: 0},
		{layer: 'pipeline', source: 'b', target: 'a', rate: 2, error_ratio: 0}]}, false).edges.map(e => e.data.colour).join(',')`, &unmeasured)
	poll(`document.querySelector('#drift-table tbody').textContent.includes('` + demo.MisconfiguredPod + `')`)
	eval(`document.querySelector('#drift-table tbody').textContent`, &driftText)
	// Lifecycle groups, the crash record and a pressure profile with its
	// download links show up as the demo produces them.
	poll(`document.querySelector('#lifecycle-body').textContent.includes('sw_metric')`)
	poll(`document.querySelector('#crash-table tbody').textContent.includes('` + demo.CrashPod + `')`)
	poll(`[...document.querySelectorAll('#profile-table tbody a')].some(a => a.href.includes('/pressure-profiles/` + demo.PressurePod + `/'))`)
	// The metric explorer charts a family's recent window.
	var clicked bool
	eval(`document.getElementById('explorer-family').value = 'banyandb_system_memory_state';
		document.getElementById('explorer-go').click(); true`, &clicked)
	poll(`fodc.chartLines > 0 && document.querySelectorAll('#chart polyline').length > 0`)
	var chartLines int
	eval(`fodc.chartLines`, &chartLines)
	require.Equal(t, 4, fleetRows)
	for _, pod := range []string{"demo-liaison-0", "demo-data-hot-0", "demo-data-hot-1", "demo-data-warm-0"} {
		require.Contains(t, fleetText, pod)
	}
	require.Equal(t, 4, graphNodes, "one graph node per demo node")
	require.Equal(t, 5, pipelineEdges, "liaison to three data nodes, two hot nodes to the warm one")
	require.Equal(t, "#c62828", failingColour, "the failing node's edge is in the error colour")
	require.Equal(t, "#9e9e9e,#2e7d32", unmeasured)
	require.Contains(t, driftText, demo.MisconfiguredFlag)
	require.Contains(t, driftText, demo.MisconfiguredPod)
	require.GreaterOrEqual(t, chartLines, 4, "memory series of every node (used and total)")

	shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(t.TempDir(), "console.png"), shot, 0o600))
	if os.Getenv("FODC_UPDATE_SCREENSHOT") == "1" {
		require.NoError(t, os.WriteFile("../../docs/console.png", shot, 0o644))
	}
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, pageErrors, "the console logs no error")
}
