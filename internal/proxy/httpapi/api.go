// Package httpapi is the proxy's HTTP interface: Prometheus /metrics, the
// JSON endpoints (/metrics-windows, /cluster and its topology, lifecycle
// and configuration views, /diagnostics, /pressure-profiles, /health) and
// the proxy's own probes. Handlers validate their input, ask the
// collectors, and hand the result to the renderers; the only state they
// keep is the /metrics answers being shared by identical requests in
// flight.
package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fodc-go/fodc/internal/proxy/cluster"
	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/flight"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
	"github.com/fodc-go/fodc/internal/proxy/profiling"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/render"
	"github.com/fodc-go/fodc/internal/proxy/scrape"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
	"github.com/fodc-go/fodc/internal/proxy/ui"
)

// Options configures the API. Registry, Scraper, CollectTimeout and
// WriteTimeout are required; the defaults live in the proxy's
// configuration.
type Options struct {
	Registry *registry.Registry
	Scraper  *scrape.Scraper
	// Cluster serves topology and lifecycle. Optional: without it those
	// endpoints answer 503 and /cluster shows registry data only.
	Cluster *cluster.Views
	// Diagnostics and Pressure serve crash records and pressure profiles.
	// Optional: without them those endpoints answer 503.
	Diagnostics *diagnostics.Cache
	Pressure    *pressure.Cache
	// Profiling runs on-demand profiles. Optional: without it /profiling
	// answers 503.
	Profiling *profiling.Manager
	// Gatherer yields the proxy's own metrics, appended to unfiltered
	// /metrics answers. Optional.
	Gatherer prometheus.Gatherer
	// CollectTimeout is the collection budget when the caller sends no
	// X-Prometheus-Scrape-Timeout-Seconds header.
	CollectTimeout time.Duration
	// WriteTimeout is the time allowed to write an answer once it has been
	// collected; the server's write deadline is extended by the budget.
	WriteTimeout time.Duration
	// Admission bounds the requests served at once per endpoint class.
	Admission Admission
	// EnablePprof serves net/http/pprof under /debug/pprof/ (the operator
	// role's once roles are configured).
	EnablePprof bool
	// Streams, when set, lets /cluster/graph list each agent's open
	// streams.
	Streams *streams.Table
	// Now and Started drive /health's uptime (time.Now and the time of New
	// when zero).
	Now     func() time.Time
	Started time.Time
}

// API serves the HTTP endpoints. It is safe for concurrent use.
type API struct {
	opts   Options
	now    func() time.Time
	logger *slog.Logger

	metrics *metrics                              // the API's own series
	answers *flight.Group[string, *metricsAnswer] // shares identical /metrics answers
	gates   map[string]gate                       // admission slots by class; read-only
	sizes   answerSizes                           // last /metrics answer size per query
}

// New returns an API whose own metrics go to reg.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*API, error) {
	var errs []error
	if opts.Registry == nil || opts.Scraper == nil {
		errs = append(errs, errors.New("httpapi: registry and scraper are required"))
	}
	if opts.CollectTimeout <= 0 || opts.WriteTimeout <= 0 {
		errs = append(errs, errors.New("httpapi: collect and write timeouts must be positive"))
	}
	if ad := opts.Admission; ad.Metrics <= 0 || ad.Cluster <= 0 || ad.Downloads <= 0 {
		errs = append(errs, errors.New("httpapi: every admission limit must be positive"))
	}
	if logger == nil || reg == nil {
		errs = append(errs, errors.New("httpapi: logger and registerer are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.Started.IsZero() {
		opts.Started = now()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &API{
		opts:    opts,
		now:     now,
		logger:  logger.With("component", "httpapi"),
		metrics: m,
		answers: flight.New(flight.Options[string, *metricsAnswer]{}),
		gates: map[string]gate{
			classMetrics:   make(gate, opts.Admission.Metrics),
			classCluster:   make(gate, opts.Admission.Cluster),
			classDownloads: make(gate, opts.Admission.Downloads),
		},
	}, nil
}

// Handler returns the router.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(path string, h http.HandlerFunc) {
		var handler http.Handler = getOnly(h, false)
		handler = promhttp.InstrumentHandlerDuration(a.metrics.duration.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		handler = promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		mux.Handle(path, exact(path, handler))
	}
	// HEAD is answered like GET without a body where probes, load
	// balancers and Prometheus use it: the health endpoints and /metrics
	// (whose HEAD collects nothing).
	routeHead := func(path string, h http.HandlerFunc) {
		var handler http.Handler = getOnly(h, true)
		handler = promhttp.InstrumentHandlerDuration(a.metrics.duration.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		handler = promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": path}), handler)
		mux.Handle(path, exact(path, handler))
	}
	// /metrics takes its admission slot per distinct collection (see
	// serveMetrics); every other endpoint that works takes one per request.
	routeHead("/metrics", a.serveMetrics)
	route("/metrics-windows", a.admitted(classMetrics, a.metricsWindows))
	route("/cluster", a.admitted(classCluster, a.cluster))
	route("/cluster/topology", a.admitted(classCluster, a.clusterTopology))
	route("/cluster/graph", a.admitted(classMetrics, a.clusterGraph))
	route("/cluster/lifecycle", a.admitted(classCluster, a.clusterLifecycle))
	route("/cluster/config", a.admitted(classCluster, a.clusterConfig))
	route("/cluster/config/consistency", a.admitted(classCluster, a.clusterConfigConsistency))
	routeHead("/health", a.health)
	route("/diagnostics", a.admitted(classCluster, a.diagnostics))
	route("/pressure-profiles", a.admitted(classCluster, a.pressureProfiles))
	download := promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": "/pressure-profiles/{pod}/{profile_id}/{type}"}),
		getOnly(a.admitted(classDownloads, a.pressureDownload), false))
	mux.Handle("/pressure-profiles/{pod}/{profile_id}/{type}", download)
	mux.Handle("/profiling", promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": "/profiling"}),
		http.HandlerFunc(a.profilingRoot)))
	mux.Handle("/profiling/{id}", promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": "/profiling/{id}"}),
		getOnly(a.admitted(classDownloads, a.profilingDownload), false)))
	mux.Handle("/cluster/config/refresh", promhttp.InstrumentHandlerCounter(a.metrics.requests.MustCurryWith(prometheus.Labels{"handler": "/cluster/config/refresh"}),
		exact("/cluster/config/refresh", a.admitted(classCluster, a.configRefresh))))
	routeHead("/-/healthy", a.ok)
	routeHead("/-/ready", a.ok)
	if a.opts.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// The console: static files that use this API like any client.
	mux.Handle("/ui/", getOnly(http.StripPrefix("/ui/", ui.Handler()).ServeHTTP, true))
	mux.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
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

// getOnly answers other methods than GET (and HEAD when head is set) with
// 405. net/http discards what a handler writes for HEAD, so a handler that
// is cheap to run answers HEAD by running as for GET; one that is not
// checks the method itself.
func getOnly(h http.HandlerFunc, head bool) http.Handler {
	allow := http.MethodGet
	if head {
		allow += ", " + http.MethodHead
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && (!head || r.Method != http.MethodHead) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use %s", r.Method, allow))
			return
		}
		h(w, r)
	})
}

// ok answers the proxy's own liveness and readiness probes.
func (a *API) ok(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("OK\n"))
}

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
func (a *API) collect(w http.ResponseWriter, r *http.Request, f registry.Filter, win series.Window) []scrape.Result {
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	results := a.opts.Scraper.Scrape(ctx, f, win)
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
		a.metrics.dropped.WithLabelValues("duplicate").Add(float64(st.Duplicates))
	}
	if st.Dropped > 0 {
		a.metrics.dropped.WithLabelValues("invalid").Add(float64(st.Dropped))
	}
	if st.DroppedLabels > 0 {
		a.metrics.droppedLabels.Add(float64(st.DroppedLabels))
	}
}

// healthNamesShown bounds the nodes /health names per reason.
const healthNamesShown = 10

// health is degraded, with reasons that name the nodes, while no agent is
// registered, an agent missed its heartbeats or went offline, or a node of
// the last topology collection has no agent. It collects nothing.
func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	agents := a.opts.Registry.List(registry.Filter{})
	var unconnected, offline, noAgent []string
	online := 0
	for _, ag := range agents {
		switch ag.Status {
		case registry.StatusOnline:
			online++
		case registry.StatusOffline:
			offline = append(offline, fmt.Sprintf("%s (%s)", agentName(ag), ag.DisconnectReason))
		default:
			unconnected = append(unconnected, agentName(ag))
		}
	}
	if a.opts.Cluster != nil {
		for _, n := range a.opts.Cluster.NodesWithoutAgent() {
			noAgent = append(noAgent, cmp.Or(n.PodName, n.Name))
		}
	}
	total := len(agents)
	var reasons []string
	if total == 0 && len(noAgent) == 0 {
		reasons = append(reasons, "no agents registered")
	}
	if len(unconnected) > 0 {
		reasons = append(reasons, fmt.Sprintf("%d of %d agents missed their heartbeats: %s", len(unconnected), total, nameList(unconnected)))
	}
	if len(offline) > 0 {
		reasons = append(reasons, fmt.Sprintf("%d of %d agents offline: %s", len(offline), total, nameList(offline)))
	}
	if len(noAgent) > 0 {
		reasons = append(reasons, fmt.Sprintf("%d nodes without an agent: %s", len(noAgent), nameList(noAgent)))
	}
	sort.Strings(reasons)
	st := "healthy"
	if len(reasons) > 0 {
		st = "degraded"
	}
	writeJSON(w, struct {
		Status            string   `json:"status"`
		Reasons           []string `json:"reasons,omitempty"`
		AgentsOnline      int      `json:"agents_online"`
		AgentsUnconnected int      `json:"agents_unconnected"`
		AgentsOffline     int      `json:"agents_offline"`
		AgentsTotal       int      `json:"agents_total"`
		NodesWithoutAgent int      `json:"nodes_without_agent"`
		UptimeSeconds     int64    `json:"uptime_seconds"`
	}{st, reasons, online, len(unconnected), len(offline), total, len(noAgent), int64(a.now().Sub(a.opts.Started).Seconds())})
}

// agentName names an agent's node for people: its pod, else its address,
// else its id.
func agentName(ag registry.Agent) string {
	return cmp.Or(ag.PodName, ag.Primary.String(), ag.ID)
}

// nameList joins sorted names, the first healthNamesShown of them, and
// says how many more there are.
func nameList(names []string) string {
	sort.Strings(names)
	if len(names) <= healthNamesShown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:healthNamesShown], ", "), len(names)-healthNamesShown)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
