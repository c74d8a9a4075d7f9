// Package httpapi is the proxy's HTTP interface: Prometheus /metrics, the
// JSON endpoints (/metrics-windows, /cluster and its topology, lifecycle
// and configuration views, /diagnostics, /pressure-profiles, /health) and
// the proxy's own probes. Handlers validate their input, ask the
// collectors, and hand the result to the renderers; the only state they
// keep is the /metrics answers being shared by identical requests in
// flight.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/singleflight"

	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/cluster"
	"github.com/fodc-go/fodc/internal/proxy/collector"
	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/httperr"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/render"
)

// Options configures the API.
type Options struct {
	Registry  *registry.Registry
	Collector *collector.Collector
	// Cluster serves topology and lifecycle. Optional: without it those
	// endpoints answer 503 and /cluster shows registry data only.
	Cluster *cluster.Collector
	// Diagnostics and Pressure serve crash records and pressure profiles.
	// Optional: without them those endpoints answer 503.
	Diagnostics *diagnostics.Collector
	Pressure    *pressure.Collector
	// Gatherer yields the proxy's own metrics, appended to unfiltered
	// /metrics answers. Optional.
	Gatherer prometheus.Gatherer
	// CollectTimeout is the collection budget when the caller sends no
	// X-Prometheus-Scrape-Timeout-Seconds header.
	CollectTimeout time.Duration
	// WriteTimeout is the time allowed to write an answer once it has been
	// collected; the server's write deadline is extended by the budget.
	WriteTimeout time.Duration
	// Now and Started drive /health's uptime.
	Now        func() time.Time
	Started    time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// API serves the HTTP endpoints. It is safe for concurrent use.
type API struct {
	opts   Options
	now    func() time.Time
	logger *slog.Logger

	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	flight        singleflight.Group // shares identical /metrics answers
	joined        func()             // test hook: a /metrics request started or joined a flight
	dropped       *prometheus.CounterVec
	droppedLabels prometheus.Counter
}

// New returns an API.
func New(opts Options) (*API, error) {
	if opts.Registry == nil || opts.Collector == nil {
		return nil, errors.New("httpapi: registry and collector are required")
	}
	if opts.CollectTimeout <= 0 {
		opts.CollectTimeout = 8 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.Started.IsZero() {
		opts.Started = now()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &API{
		opts:   opts,
		now:    now,
		logger: logger.With("component", "httpapi"),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_http_requests_total",
			Help: "HTTP requests served, by handler and status code.",
		}, []string{"handler", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fodc_proxy_http_request_duration_seconds",
			Help:    "HTTP request latency, by handler.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"handler"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_series_removed_total",
			Help: "Series left out of answers, by reason (duplicate, invalid: bad name or type conflict).",
		}, []string{"reason"}),
		droppedLabels: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_labels_removed_total",
			Help: "Labels left out of answers because their name is invalid or repeated.",
		}),
	}, nil
}

// Handler returns the router.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(path string, h http.HandlerFunc) {
		var handler http.Handler = getOnly(h)
		handler = promhttp.InstrumentHandlerDuration(a.duration.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		handler = promhttp.InstrumentHandlerCounter(a.requests.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		mux.Handle(path, exact(path, handler))
	}
	route("/metrics", a.metrics)
	route("/metrics-windows", a.metricsWindows)
	route("/cluster", a.cluster)
	route("/cluster/topology", a.clusterTopology)
	route("/cluster/lifecycle", a.clusterLifecycle)
	route("/cluster/config", a.clusterConfig)
	route("/cluster/config/consistency", a.clusterConfigConsistency)
	route("/health", a.health)
	route("/diagnostics", a.diagnostics)
	route("/pressure-profiles", a.pressureProfiles)
	download := promhttp.InstrumentHandlerCounter(a.requests.MustCurryWith(prometheus.Labels{"handler": "/pressure-profiles/{pod}/{profile_id}/{type}"}),
		getOnly(a.pressureDownload))
	mux.Handle("/pressure-profiles/{pod}/{profile_id}/{type}", download)
	route("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK\n")) })
	route("/-/ready", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("OK\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint at %s", r.URL.Path))
	})
	return mux
}

// exact refuses sub-paths of a route (paths match exactly).
func exact(path string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint at %s", r.URL.Path))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func getOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use GET", r.Method))
			return
		}
		h(w, r)
	})
}

func writeError(w http.ResponseWriter, code int, msg string) { httperr.Write(w, code, msg) }

func respondErr(w http.ResponseWriter, err error) { httperr.Respond(w, err) }

// withBudget bounds a request's wait for agents by its budget and extends
// the connection's write deadline by the same amount, so that waiting never
// eats the time needed to write the answer (W3).
func (a *API) withBudget(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc) {
	b := budget(r, a.opts.CollectTimeout)
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(b + a.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		a.logger.Debug("Could not extend write deadline", "err", err)
	}
	return context.WithTimeout(r.Context(), b)
}

// collect runs a metrics collection within the request's budget.
func (a *API) collect(w http.ResponseWriter, r *http.Request, f registry.Filter, win agentsvc.Window) []collector.Result {
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	results := a.opts.Collector.Collect(ctx, f, win)
	up := 0
	for i := range results {
		if results[i].Up() {
			up++
		}
	}
	w.Header().Set("X-Fodc-Agents-Selected", strconv.Itoa(len(results)))
	w.Header().Set("X-Fodc-Agents-Answered", strconv.Itoa(up))
	return results
}

func (a *API) countRemoved(st render.Stats) {
	if st.Duplicates > 0 {
		a.dropped.WithLabelValues("duplicate").Add(float64(st.Duplicates))
	}
	if st.Dropped > 0 {
		a.dropped.WithLabelValues("invalid").Add(float64(st.Dropped))
	}
	if st.DroppedLabels > 0 {
		a.droppedLabels.Add(float64(st.DroppedLabels))
	}
}

func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	online, total := a.opts.Registry.Counts()
	var reasons []string
	switch {
	case total == 0:
		reasons = append(reasons, "no agents registered")
	case online < total:
		reasons = append(reasons, fmt.Sprintf("%d of %d agents missed their heartbeats", total-online, total))
	}
	sort.Strings(reasons)
	st := "healthy"
	if len(reasons) > 0 {
		st = "degraded"
	}
	writeJSON(w, struct {
		Status        string   `json:"status"`
		Reasons       []string `json:"reasons,omitempty"`
		AgentsOnline  int      `json:"agents_online"`
		AgentsTotal   int      `json:"agents_total"`
		UptimeSeconds int64    `json:"uptime_seconds"`
	}{st, reasons, online, total, int64(a.now().Sub(a.opts.Started).Seconds())})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
