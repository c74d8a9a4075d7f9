// Package httpapi is the proxy's HTTP interface: Prometheus /metrics, the
// JSON endpoints (/metrics-windows, /cluster, /health) and the proxy's own
// probes. Handlers validate their input, ask the collector, and hand the
// result to the renderers; they hold no state of their own.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/httperr"
	"github.com/fodc-go/fodc/internal/proxy/lifecycle"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/render"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/topology"
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

// metricsAnswer is one rendered /metrics answer. Identical requests that
// arrive while it is being produced share it: one round of agent commands,
// one enrichment and one rendering for all of them.
type metricsAnswer struct {
	body               []byte
	selected, answered int
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	if err != nil {
		respondErr(w, err)
		return
	}
	b := budget(r, a.opts.CollectTimeout)
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(b + a.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		a.logger.Debug("Could not extend write deadline", "err", err)
	}
	// The answer is produced on its own deadline, so that a caller that
	// goes away does not cut it short for the others.
	ch := a.flight.DoChan("metrics?"+q.Encode(), func() (any, error) { return a.renderMetrics(f, b), nil })
	if a.joined != nil {
		a.joined()
	}
	wait := time.NewTimer(b + a.opts.WriteTimeout)
	defer wait.Stop()
	var ans *metricsAnswer
	select {
	case res := <-ch:
		ans = res.Val.(*metricsAnswer)
	case <-wait.C:
		writeError(w, http.StatusServiceUnavailable, "the shared collection this request joined did not finish within its budget")
		return
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", render.TextContentType)
	w.Header().Set("X-Fodc-Agents-Selected", strconv.Itoa(ans.selected))
	w.Header().Set("X-Fodc-Agents-Answered", strconv.Itoa(ans.answered))
	if _, err := w.Write(ans.body); err != nil {
		a.logger.Debug("Writing /metrics answer", "err", err)
	}
}

// renderMetrics collects the latest values within budget b and renders
// them with the per-agent status series and, when unfiltered, the proxy's
// own series.
func (a *API) renderMetrics(f registry.Filter, b time.Duration) *metricsAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), b)
	defer cancel()
	results := a.opts.Collector.Collect(ctx, f, agentsvc.Window{})
	ans := &metricsAnswer{selected: len(results)}
	batches := make([]series.Batch, 0, len(results)+4)
	for i := range results {
		if results[i].Up() {
			ans.answered++
			batches = append(batches, results[i].Batch)
		}
	}
	batches = append(batches, agentStatusBatch(results))
	if !isFiltered(f) && a.opts.Cluster != nil {
		batches = append(batches, consistencyBatch(a.opts.Cluster.ConsistencyStatuses()))
		batches = append(batches, configDifferencesBatch(a.opts.Cluster.ConfigDifferences()))
	}
	if !isFiltered(f) && a.opts.Gatherer != nil {
		mfs, err := a.opts.Gatherer.Gather()
		if err != nil {
			a.logger.Warn("Gathering own metrics", "err", err)
		}
		batches = append(batches, gatheredBatch(mfs))
	}
	var buf bytes.Buffer
	st, err := render.WriteText(&buf, batches)
	a.countRemoved(st)
	if err != nil { // a bytes.Buffer does not fail; keep what was written
		a.logger.Warn("Rendering /metrics answer", "err", err)
	}
	ans.body = buf.Bytes()
	return ans
}

func (a *API) metricsWindows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	if err != nil {
		respondErr(w, err)
		return
	}
	win, err := parseWindow(q)
	if err != nil {
		respondErr(w, err)
		return
	}
	results := a.collect(w, r, f, win)
	batches := make([]series.Batch, 0, len(results))
	for i := range results {
		if results[i].Up() {
			batches = append(batches, results[i].Batch)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	st, err := render.WriteWindows(w, batches) // buffers its own writes

	a.countRemoved(st)
	if err != nil {
		a.logger.Debug("Writing /metrics-windows answer", "err", err)
	}
}

// addressJSON is an address in the design's shape.
type addressJSON struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
}

type nodeJSON struct {
	NodeID             string                 `json:"node_id"`
	AgentID            string                 `json:"agent_id"`
	PodName            string                 `json:"pod_name"`
	ContainerNames     []string               `json:"container_names"`
	NodeRole           string                 `json:"node_role"`
	RoleName           string                 `json:"role_name"`
	Tier               string                 `json:"tier,omitempty"`
	PrimaryAddress     *addressJSON           `json:"primary_address"`
	SecondaryAddresses map[string]addressJSON `json:"secondary_addresses"`
	Labels             map[string]string      `json:"labels"`
	Status             registry.Status        `json:"status"`
	RegisteredAt       time.Time              `json:"registered_at"`
	LastHeartbeat      time.Time              `json:"last_heartbeat"`
}

type callJSON struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Target string `json:"target"`
}

func (a *API) cluster(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		respondErr(w, err)
		return
	}
	agents := a.opts.Registry.List(f)
	// Upstream agents declare no addresses: take them, and the calls, from
	// what the agents' topology reports say.
	var topo topology.Merged
	calls := []callJSON{}
	if a.opts.Cluster != nil {
		ctx, cancel := a.withBudget(w, r)
		merged, err := a.opts.Cluster.Topology(ctx)
		cancel()
		if err != nil {
			a.logger.Debug("Topology for /cluster", "err", err)
		}
		topo = merged
		for _, c := range merged.Calls {
			calls = append(calls, callJSON{ID: c.GetId(), Source: c.GetSource(), Target: c.GetTarget()})
		}
	}
	nodes := make([]nodeJSON, 0, len(agents))
	for _, ag := range agents {
		n := nodeJSON{
			NodeID:             ag.ID,
			AgentID:            ag.ID,
			PodName:            ag.PodName,
			ContainerNames:     nonNil(ag.ContainerNames),
			NodeRole:           ag.Role.String(),
			RoleName:           ag.Role.WireName(),
			Tier:               ag.Role.Tier,
			SecondaryAddresses: make(map[string]addressJSON, len(ag.Secondary)),
			Labels:             ag.Labels,
			Status:             ag.Status,
			RegisteredAt:       ag.RegisteredAt.UTC(),
			LastHeartbeat:      ag.LastHeartbeat.UTC(),
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if ag.Primary.IP != "" {
			n.PrimaryAddress = &addressJSON{IP: ag.Primary.IP, Port: ag.Primary.Port}
			for name, addr := range ag.Secondary {
				n.SecondaryAddresses[name] = addressJSON{IP: addr.IP, Port: addr.Port}
			}
		} else if node, ok := topology.NodeForPod(topo, ag.PodName); ok {
			addrs := topology.NodeAddresses(node)
			if p, ok := splitAddress(addrs.Primary); ok {
				n.PrimaryAddress = &p
			}
			for name, v := range addrs.Secondary {
				if p, ok := splitAddress(v); ok {
					n.SecondaryAddresses[name] = p
				}
			}
		}
		nodes = append(nodes, n)
	}
	writeJSON(w, struct {
		Nodes     []nodeJSON `json:"nodes"`
		Calls     []callJSON `json:"calls"`
		UpdatedAt time.Time  `json:"updated_at"`
	}{nodes, calls, a.now().UTC()})
}

// splitAddress turns "ip:port" into the design's address shape.
func splitAddress(hp string) (addressJSON, bool) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return addressJSON{}, false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return addressJSON{}, false
	}
	return addressJSON{IP: host, Port: p}, true
}

func (a *API) clusterTopology(w http.ResponseWriter, r *http.Request) {
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "cluster topology collector not available")
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	merged, err := a.opts.Cluster.Topology(ctx)
	if err != nil {
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("topology collection did not finish within the request budget: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := topology.WriteJSON(w, merged); err != nil {
		a.logger.Debug("Writing /cluster/topology answer", "err", err)
	}
}

func (a *API) clusterLifecycle(w http.ResponseWriter, r *http.Request) {
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "cluster lifecycle collector not available")
		return
	}
	// Agents may take their full lifecycle timeout: lift the write deadline.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	res, err := a.opts.Cluster.Lifecycle(r.Context())
	if err != nil {
		respondErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := lifecycle.WriteJSON(w, res); err != nil {
		a.logger.Debug("Writing /cluster/lifecycle answer", "err", err)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
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

// config runs (or reuses) a configuration collection within the budget.
func (a *API) config(w http.ResponseWriter, r *http.Request) (cluster.ConfigSnapshot, bool) {
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "configuration collector not available")
		return cluster.ConfigSnapshot{}, false
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	snap, err := a.opts.Cluster.Config(ctx)
	if err != nil {
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("configuration collection did not finish within the request budget: %v", err))
		return snap, false
	}
	return snap, true
}

func (a *API) clusterConfig(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		respondErr(w, err)
		return
	}
	snap, ok := a.config(w, r)
	if !ok {
		return
	}
	nodes := snap.Nodes
	if isFiltered(f) {
		selected := map[string]bool{}
		for _, ag := range a.opts.Registry.List(f) {
			selected[ag.ID] = true
		}
		nodes = make([]configreport.NodeConfig, 0, len(snap.Nodes))
		for _, n := range snap.Nodes {
			if selected[n.AgentID] {
				nodes = append(nodes, n)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if err := configreport.WriteConfigJSON(w, nodes, a.now().Sub(snap.CollectedAt)); err != nil {
		a.logger.Debug("Writing /cluster/config answer", "err", err)
	}
}

func (a *API) clusterConfigConsistency(w http.ResponseWriter, r *http.Request) {
	snap, ok := a.config(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := configreport.WriteReportJSON(w, snap.Report, a.now().Sub(snap.CollectedAt)); err != nil {
		a.logger.Debug("Writing /cluster/config/consistency answer", "err", err)
	}
}

func (a *API) diagnostics(w http.ResponseWriter, r *http.Request) {
	if a.opts.Diagnostics == nil {
		writeError(w, http.StatusServiceUnavailable, "crash diagnostics collector not available")
		return
	}
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		respondErr(w, err)
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	recs := a.opts.Diagnostics.Collect(ctx, f)
	w.Header().Set("Content-Type", "application/json")
	if err := diagnostics.WriteJSON(w, recs); err != nil {
		a.logger.Debug("Writing /diagnostics answer", "err", err)
	}
}

func (a *API) pressureProfiles(w http.ResponseWriter, r *http.Request) {
	if a.opts.Pressure == nil {
		writeError(w, http.StatusServiceUnavailable, "pressure profile collector not available")
		return
	}
	f, err := parseFilter(r.URL.Query())
	if err != nil {
		respondErr(w, err)
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	entries, err := a.opts.Pressure.List(ctx, f)
	if err != nil {
		// The budget ran out: answer with what is cached, and say so.
		w.Header().Set("X-Fodc-Partial", err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	if err := pressure.WriteJSON(w, entries); err != nil {
		a.logger.Debug("Writing /pressure-profiles answer", "err", err)
	}
}

// flushWriter flushes after every write so that a download reaches the
// client chunk by chunk.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (a *API) pressureDownload(w http.ResponseWriter, r *http.Request) {
	if a.opts.Pressure == nil {
		writeError(w, http.StatusServiceUnavailable, "pressure profile collector not available")
		return
	}
	rc := http.NewResponseController(w)
	// A download lasts as long as the file takes; the client's going away
	// cancels r.Context().
	_ = rc.SetWriteDeadline(time.Time{})
	pod, id, typ := r.PathValue("pod"), r.PathValue("profile_id"), r.PathValue("type")
	started := false
	_, err := a.opts.Pressure.Download(r.Context(), pod, id, typ, func(filename string) io.Writer {
		started = true
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filename))
		w.WriteHeader(http.StatusOK)
		return flushWriter{w: w, rc: rc}
	})
	switch {
	case err == nil:
	case started && r.Context().Err() != nil:
		a.logger.Debug("Profile download abandoned by the client", "pod_name", pod, "profile_id", id)
	case started:
		// Mid-stream failure: the body is truncated. Aborting the
		// connection (net/http's documented way) keeps the client from
		// taking it for a whole file.
		a.logger.Warn("Profile download interrupted", "pod_name", pod, "profile_id", id, "err", err)
		panic(http.ErrAbortHandler)
	case errors.Is(err, pressure.ErrUnknownType):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid type: %q (want heap or goroutine)", typ))
	case errors.Is(err, pressure.ErrProfileNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusNotFound, "profile not available: "+err.Error())
	}
}
