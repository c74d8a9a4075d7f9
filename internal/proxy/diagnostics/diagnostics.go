// Package diagnostics collects the crash records that agents report on the
// crash diagnostics stream and keeps them for GET /diagnostics (PROTOCOL.md
// §3.6, §5.9).
//
// An agent answers a request by re-sending every crash record it holds, one
// message per record and with no end marker, so a collection asks the
// selected agents and then waits a short window for the records to arrive.
// Records reach the Collector through OnRecord whenever they arrive, also
// outside a collection.
//
// Unlike the upstream proxy (PROTOCOL.md §7 W6, W12), records are keyed by
// pod name and artifact directory rather than by agent id, so a pod that
// reconnects under a new agent id and re-sends its records replaces them
// instead of duplicating them; the cache is bounded in count and age and
// forgets the pods that left the registry; and concurrent collections share
// the requests already in flight instead of asking again.
package diagnostics

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultWindow     = time.Second
	DefaultMaxRecords = 1000
	DefaultMaxAge     = 24 * time.Hour
)

// Reasons counted by fodc_proxy_crash_records_evicted_total.
const (
	// EvictCapacity means the cache was full and the record was the oldest.
	EvictCapacity = "capacity"
	// EvictExpired means no agent re-sent the record within MaxAge.
	EvictExpired = "expired"
	// EvictAgentGone means no agent of the record's pod is registered any
	// more (or the sending agent was unknown when the record arrived).
	EvictAgentGone = "agent_gone"
)

// Options configures a Collector.
type Options struct {
	// Registry selects the agents to ask and names their pods. Required.
	Registry *registry.Registry
	// Streams returns the live crash stream of an agent (normally
	// agentsvc.Service.Crash). Required.
	Streams func(agentID string) (*agentsvc.CrashStream, bool)
	// Window is how long a collection waits for records after asking
	// (default 1s; the upstream proxy always waits 2s).
	Window time.Duration
	// MaxRecords bounds the cache (default 1000); beyond it the records of
	// the oldest crashes are evicted first.
	MaxRecords int
	// MaxAge is how long a record stays cached after it last arrived
	// (default 24h): a record that no agent re-sent for that long is
	// dropped.
	MaxAge time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives debug events; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means a private registry.
	Registerer prometheus.Registerer
}

// Record is one cached crash record and the agent that last sent it.
type Record struct {
	// AgentID is the agent that sent the record most recently.
	AgentID string
	// PodName is that agent's pod as it registered.
	PodName string
	// Role is that agent's role as a wire enum name, such as ROLE_DATA.
	Role string
	// Rec is the record as received. It is shared and must not be modified.
	Rec *fodcv1.StreamCrashDiagnosticsRequest
	// ReceivedAt is when the record last arrived.
	ReceivedAt time.Time
}

// key identifies a crash artifact across reconnects of its pod.
type key struct {
	pod string // lower-cased pod name
	dir string // artifact_dir
}

// round is one set of requests in flight. done is closed when the window
// after the requests ends.
type round struct {
	agents []string
	once   sync.Once
	done   chan struct{}
}

type metrics struct {
	records  prometheus.Gauge
	evicted  *prometheus.CounterVec
	requests prometheus.Counter
	waiting  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		records: f.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_crash_records",
			Help: "Crash records currently cached.",
		}),
		evicted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_crash_records_evicted_total",
			Help: "Crash records dropped from the cache, by reason.",
		}, []string{"reason"}),
		requests: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_crash_requests_total",
			Help: "Crash record requests sent to agents.",
		}),
		waiting: f.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_crash_collections_waiting",
			Help: "Diagnostics collections waiting for the agents' records.",
		}),
	}
	for _, r := range []string{EvictCapacity, EvictExpired, EvictAgentGone} {
		m.evicted.WithLabelValues(r)
	}
	return m
}

// Collector asks agents for their crash records and caches them. It is safe
// for concurrent use and starts no goroutines of its own (the window of a
// collection is a runtime timer). The zero value is not usable; call New.
type Collector struct {
	reg        *registry.Registry
	streams    func(agentID string) (*agentsvc.CrashStream, bool)
	window     time.Duration
	maxRecords int
	maxAge     time.Duration
	now        func() time.Time
	logger     *slog.Logger
	metrics    *metrics
	// afterFunc runs f once d has passed; tests replace it to control the
	// end of a window.
	afterFunc func(d time.Duration, f func())

	mu      sync.Mutex // guards the fields below
	records map[key]*Record
	pending map[string]*round // agent id -> the round that asked it
}

// New validates opts, applies the defaults and returns an empty Collector.
func New(opts Options) (*Collector, error) {
	var errs []error
	if opts.Registry == nil {
		errs = append(errs, errors.New("diagnostics: registry is required"))
	}
	if opts.Streams == nil {
		errs = append(errs, errors.New("diagnostics: crash stream lookup is required"))
	}
	if opts.Window < 0 || opts.MaxRecords < 0 || opts.MaxAge < 0 {
		errs = append(errs, errors.New("diagnostics: window, record limit and maximum age must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Window == 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxRecords == 0 {
		opts.MaxRecords = DefaultMaxRecords
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Collector{
		reg:        opts.Registry,
		streams:    opts.Streams,
		window:     opts.Window,
		maxRecords: opts.MaxRecords,
		maxAge:     opts.MaxAge,
		now:        opts.Now,
		logger:     logger.With("component", "diagnostics"),
		metrics:    newMetrics(reg),
		afterFunc:  func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		records:    make(map[key]*Record),
		pending:    make(map[string]*round),
	}, nil
}

// OnRecord caches a record that agentID sent; it is meant to be
// agentsvc.Options.OnCrashRecord. A record of the same pod and artifact
// directory replaces the cached one, whichever agent id sent it. Records of
// agents that are not registered are dropped. It never blocks on I/O and is
// safe for concurrent use.
func (c *Collector) OnRecord(agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest) {
	if rec == nil {
		return
	}
	a, ok := c.reg.Get(agentID)
	if !ok {
		c.metrics.evicted.WithLabelValues(EvictAgentGone).Inc()
		c.logger.Debug("Dropping crash record of an unregistered agent", "agent_id", agentID, "artifact_dir", rec.GetArtifactDir())
		return
	}
	k := key{pod: strings.ToLower(a.PodName), dir: rec.GetArtifactDir()}
	r := &Record{AgentID: a.ID, PodName: a.PodName, Role: a.Role.WireName(), Rec: rec, ReceivedAt: c.now()}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.records[k] = r
	for len(c.records) > c.maxRecords {
		c.evictOldestLocked()
	}
	c.metrics.records.Set(float64(len(c.records)))
}

// evictOldestLocked drops the record of the oldest crash (ties broken by
// pod and artifact directory, so the choice is deterministic).
func (c *Collector) evictOldestLocked() {
	var oldest key
	var oldestAt time.Time
	first := true
	for k, r := range c.records {
		at := crashTime(r)
		if first || at.Before(oldestAt) || (at.Equal(oldestAt) && cmp.Or(cmp.Compare(k.pod, oldest.pod), cmp.Compare(k.dir, oldest.dir)) < 0) {
			oldest, oldestAt, first = k, at, false
		}
	}
	delete(c.records, oldest)
	c.metrics.evicted.WithLabelValues(EvictCapacity).Inc()
}

// crashTime is when the crash of r happened as far as it is known: the
// panic's occurred_at, else the agent's fetched_at, else the arrival time.
func crashTime(r *Record) time.Time {
	if ts := r.Rec.GetPanicRecord().GetOccurredAt(); ts != nil {
		return ts.AsTime()
	}
	if ts := r.Rec.GetFetchedAt(); ts != nil {
		return ts.AsTime()
	}
	return r.ReceivedAt
}

// Collect asks every agent that f selects and that has a crash stream to
// send its records, waits the window (or until ctx ends) and returns the
// cached records of the selected agents' pods, sorted by pod, crash time
// and artifact directory. An agent already asked by a collection still in
// its window is not asked again: the caller waits for that window instead.
// A caller whose ctx ends returns the cache as it is at once, without
// affecting other callers. Records of pods without any registered agent and
// records older than MaxAge are pruned first.
func (c *Collector) Collect(ctx context.Context, f registry.Filter) []Record {
	agents := c.reg.List(f)
	pods := make(map[string]bool, len(agents))
	for _, a := range agents {
		pods[strings.ToLower(a.PodName)] = true
	}
	rounds := c.ask(agents)
	c.metrics.waiting.Inc()
wait:
	for _, r := range rounds {
		select {
		case <-r.done:
		case <-ctx.Done():
			break wait
		}
	}
	c.metrics.waiting.Dec()
	c.prune()
	return c.cached(pods)
}

// ask sends a request to every agent that is not already part of a round
// in its window, and returns the rounds to wait for.
func (c *Collector) ask(agents []registry.Agent) []*round {
	var (
		waits []*round
		fresh *round
		asks  []*agentsvc.CrashStream
	)
	c.mu.Lock()
	for _, a := range agents {
		if r, ok := c.pending[a.ID]; ok {
			if !slices.Contains(waits, r) {
				waits = append(waits, r)
			}
			continue
		}
		st, ok := c.streams(a.ID)
		if !ok {
			continue
		}
		if fresh == nil {
			fresh = &round{done: make(chan struct{})}
			waits = append(waits, fresh)
		}
		fresh.agents = append(fresh.agents, a.ID)
		c.pending[a.ID] = fresh
		asks = append(asks, st)
	}
	c.mu.Unlock()
	if fresh == nil {
		return waits
	}
	sent := 0
	for _, st := range asks {
		if err := st.Request(); err != nil {
			c.logger.Debug("Crash record request not sent", "agent_id", st.AgentID(), "err", err)
			c.mu.Lock()
			if c.pending[st.AgentID()] == fresh {
				delete(c.pending, st.AgentID())
			}
			c.mu.Unlock()
			continue
		}
		sent++
		c.metrics.requests.Inc()
	}
	if sent == 0 {
		c.finish(fresh)
		return waits
	}
	c.afterFunc(c.window, func() { c.finish(fresh) })
	return waits
}

// finish ends the window of r: its agents may be asked again.
func (c *Collector) finish(r *round) {
	r.once.Do(func() {
		c.mu.Lock()
		for _, id := range r.agents {
			if c.pending[id] == r {
				delete(c.pending, id)
			}
		}
		c.mu.Unlock()
		close(r.done)
	})
}

// prune drops the records of pods that have no registered agent and the
// records that no agent re-sent within MaxAge.
func (c *Collector) prune() {
	live := make(map[string]bool)
	for _, a := range c.reg.List(registry.Filter{}) {
		live[strings.ToLower(a.PodName)] = true
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, r := range c.records {
		switch {
		case !live[k.pod]:
			delete(c.records, k)
			c.metrics.evicted.WithLabelValues(EvictAgentGone).Inc()
		case now.Sub(r.ReceivedAt) > c.maxAge:
			delete(c.records, k)
			c.metrics.evicted.WithLabelValues(EvictExpired).Inc()
		}
	}
	c.metrics.records.Set(float64(len(c.records)))
}

// cached returns copies of the records of pods (lower-cased names), sorted.
func (c *Collector) cached(pods map[string]bool) []Record {
	c.mu.Lock()
	out := make([]Record, 0, len(c.records))
	for k, r := range c.records {
		if pods[k.pod] {
			out = append(out, *r)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, compareRecords)
	return out
}

// compareRecords orders by pod name (ignoring case), crash time and artifact
// directory; the last two make the order total within a pod.
func compareRecords(a, b Record) int {
	return cmp.Or(
		cmp.Compare(strings.ToLower(a.PodName), strings.ToLower(b.PodName)),
		crashTime(&a).Compare(crashTime(&b)),
		cmp.Compare(a.Rec.GetArtifactDir(), b.Rec.GetArtifactDir()),
	)
}
