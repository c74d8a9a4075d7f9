// Package collector runs on-demand metrics collections: it selects agents
// from the registry, sends each one a metrics command over its stream,
// waits for every answer within the caller's budget, and enriches what came
// back with the node's identity. Nothing is kept after a collection.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/enrich"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Reasons an agent contributed nothing to a collection.
var (
	ErrUnconnected = errors.New("agent missed its heartbeats")
	ErrNoStream    = errors.New("agent has no metrics stream open")
)

// Requester asks one agent for metrics; *agentsvc.MetricsStream is one.
// The reply is an encoded StreamMetricsRequest that the caller only reads.
type Requester interface {
	Request(ctx context.Context, w agentsvc.Window) (*agentsvc.RawMetrics, error)
}

// Options configures a Collector.
type Options struct {
	// Registry selects the agents. Required.
	Registry *registry.Registry
	// Streams finds an agent's live metrics stream. Required.
	Streams    func(agentID string) (Requester, bool)
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Collector runs collections. It is safe for concurrent use; identical
// concurrent requests to one agent share a single command (see
// agentsvc.MetricsStream.Request), and then the enrichment of its reply:
// the Batch of such Results is shared and must not be modified.
type Collector struct {
	opts    Options
	now     func() time.Time
	logger  *slog.Logger
	metrics *metrics
	shared  *sharer
}

type metrics struct {
	rounds       *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	requests     *prometheus.CounterVec
	decodeErrors prometheus.Counter
}

// New returns a Collector.
func New(opts Options) (*Collector, error) {
	if opts.Registry == nil || opts.Streams == nil {
		return nil, errors.New("collector: registry and streams are required")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
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
	return &Collector{
		opts:   opts,
		now:    now,
		logger: logger.With("component", "collector"),
		shared: newSharer(),
		metrics: &metrics{
			rounds: f.NewCounterVec(prometheus.CounterOpts{
				Name: "fodc_proxy_collection_rounds_total",
				Help: "Metrics collections run, by kind (latest or window).",
			}, []string{"kind"}),
			duration: f.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "fodc_proxy_collection_duration_seconds",
				Help:    "Wall time of metrics collections across all selected agents, by kind.",
				Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			}, []string{"kind"}),
			requests: f.NewCounterVec(prometheus.CounterOpts{
				Name: "fodc_proxy_agent_requests_total",
				Help: "Per-agent metrics requests, by kind and result.",
			}, []string{"kind", "result"}),
			decodeErrors: f.NewCounter(prometheus.CounterOpts{
				Name: "fodc_proxy_agent_reply_decode_errors_total",
				Help: "Agent metrics replies that could not be decoded; each leaves its agent out of the collections waiting for it.",
			}),
		},
	}, nil
}

// Result is one selected agent's part of a collection.
type Result struct {
	Agent registry.Agent
	// Batch holds the enriched series; empty when Err is set. It may be
	// shared with concurrent collections and must only be read.
	Batch series.Batch
	// Err says why the agent contributed nothing.
	Err error
	// Duration is how long the agent took to answer, or how long the
	// proxy waited for it.
	Duration time.Duration

	release func() // ends the sharing of Batch; nil when not shared
}

// Up reports whether the agent answered.
func (r *Result) Up() bool { return r.Err == nil }

// Collect asks every agent that f selects for the window w (latest values
// when w is zero) and waits for all of them until ctx ends. Each agent's
// wait is bounded by ctx, so a silent agent costs the collection one
// deadline and is reported with its error while the others are returned.
// Results are in the registry's order (pod name, then agent id).
func (c *Collector) Collect(ctx context.Context, f registry.Filter, w agentsvc.Window) []Result {
	kind := "latest"
	if !w.IsLatest() {
		kind = "window"
	}
	start := c.now()
	agents := c.opts.Registry.List(f)
	results := make([]Result, len(agents))
	var wg sync.WaitGroup
	for i := range agents {
		results[i].Agent = agents[i]
		wg.Go(func() { c.collectOne(ctx, &results[i], w, kind) })
	}
	wg.Wait()
	for i := range results {
		if rel := results[i].release; rel != nil {
			rel()
			results[i].release = nil
		}
	}
	c.metrics.rounds.WithLabelValues(kind).Inc()
	c.metrics.duration.WithLabelValues(kind).Observe(c.now().Sub(start).Seconds())
	return results
}

func (c *Collector) collectOne(ctx context.Context, r *Result, w agentsvc.Window, kind string) {
	a := r.Agent
	if a.Status != registry.StatusOnline {
		r.Err = ErrUnconnected
		c.metrics.requests.WithLabelValues(kind, "unconnected").Inc()
		return
	}
	req, ok := c.opts.Streams(a.ID)
	if !ok {
		r.Err = ErrNoStream
		c.metrics.requests.WithLabelValues(kind, "no_stream").Inc()
		return
	}
	start := c.now()
	reply, err := req.Request(ctx, w)
	received := c.now()
	r.Duration = received.Sub(start)
	if err != nil {
		result := "error"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			result = "timeout"
			err = fmt.Errorf("no answer within %s: %w", r.Duration.Round(time.Millisecond), err)
		}
		r.Err = err
		c.metrics.requests.WithLabelValues(kind, result).Inc()
		c.logger.Debug("Agent did not answer metrics request", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
		return
	}
	// Coalesced callers got the same reply: decode and enrich it once for
	// all of them.
	r.Batch, r.release, err = c.shared.batch(reply, func() (series.Batch, error) {
		b, err := enrich.DecodeBatch(NodeInfo(a), reply.Bytes, received, !w.IsLatest())
		if err != nil {
			c.metrics.decodeErrors.Inc()
			c.logger.Warn("Undecodable metrics reply", "agent_id", a.ID, "pod_name", a.PodName, "bytes", len(reply.Bytes), "err", err)
		}
		return b, err
	})
	if err != nil {
		r.Batch = series.Batch{}
		r.Err = fmt.Errorf("undecodable reply: %w", err)
		c.metrics.requests.WithLabelValues(kind, "decode_error").Inc()
		return
	}
	c.metrics.requests.WithLabelValues(kind, "ok").Inc()
}

// NodeInfo is the identity of a registered agent as enrichment needs it.
func NodeInfo(a registry.Agent) enrich.NodeInfo {
	return enrich.NodeInfo{
		Node: series.Node{
			AgentID: a.ID,
			PodName: a.PodName,
			Role:    a.Role.WireName(),
			IP:      a.Primary.IP,
			Port:    a.Primary.Port,
		},
		Labels: a.Labels,
	}
}
