// Package diagnostics collects the crash records that agents report on the
// crash diagnostics stream and keeps them for GET /diagnostics (PROTOCOL.md
// §3.6, §5.9).
//
// An agent answers a request by re-sending every crash record it holds, one
// message per record and with no end marker, so a collection asks the
// selected agents and then waits a short window for the records to arrive.
// Records reach the Cache through OnRecord whenever they arrive, also
// outside a collection.
//
// Unlike the upstream proxy (PROTOCOL.md §7 W6, W12), records are keyed by
// pod name and artifact directory rather than by agent id, so a pod that
// reconnects under a new agent id and re-sends its records replaces them
// instead of duplicating them; the cache is bounded in count and age and
// forgets the pods that left the registry; and concurrent collections share
// the requests already in flight (one flight call per agent: the request and
// its window) instead of asking again.
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

	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/flight"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
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

// Options configures a Cache. Every field but Now is required; the
// defaults live in the proxy's configuration.
type Options struct {
	// Registry selects the agents to ask and names their pods.
	Registry *registry.Registry
	// Streams holds the agents' live crash streams.
	Streams *streams.Table
	// Window is how long a collection waits for records after asking (the
	// upstream proxy always waits 2s).
	Window time.Duration
	// MaxRecords bounds the cache; beyond it the records of the oldest
	// crashes are evicted first.
	MaxRecords int
	// MaxAge is how long a record stays cached after it last arrived: a
	// record that no agent re-sent for that long is dropped.
	MaxAge time.Duration
	// MaxRecordBytes bounds one record (its protobuf size); a larger one
	// is dropped and counted.
	MaxRecordBytes int
	// MaxBytes bounds the records kept in all; beyond it the records of
	// the oldest crashes are evicted first.
	MaxBytes int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
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

	size int // protobuf size of Rec, counted against MaxBytes
}

// Reasons counted by fodc_proxy_crash_records_rejected_total.
const (
	// RejectSize means the record was over MaxRecordBytes.
	RejectSize = "record_size"
	// RejectUnsolicited means the proxy had not asked the agent.
	RejectUnsolicited = "unsolicited"
)

// askGrace is how long after a collection's window a record of the agent
// asked is still taken: agents re-send every record they hold, one
// message each, and a slow agent may finish after the window.
const askGrace = 5 * time.Second

// key identifies a crash artifact across reconnects of its pod.
type key struct {
	pod string // lower-cased pod name
	dir string // artifact_dir
}

type metrics struct {
	bytes    prometheus.Gauge
	rejected *prometheus.CounterVec
	records  prometheus.Gauge
	evicted  *prometheus.CounterVec
	requests prometheus.Counter
	waiting  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_crash_record_bytes",
			Help: "Bytes of crash records currently cached (protobuf size).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_crash_records_rejected_total",
			Help: "Crash records dropped on arrival, by reason (record_size, unsolicited).",
		}, []string{"reason"}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_crash_records",
			Help: "Crash records currently cached.",
		}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_crash_records_evicted_total",
			Help: "Crash records dropped from the cache, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_crash_requests_total",
			Help: "Crash record requests sent to agents.",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_crash_collections_waiting",
			Help: "Diagnostics collections waiting for the agents' records.",
		}),
	}
	for _, r := range []string{EvictCapacity, EvictExpired, EvictAgentGone} {
		m.evicted.WithLabelValues(r)
	}
	for _, r := range []string{RejectSize, RejectUnsolicited} {
		m.rejected.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.bytes, m.rejected, m.records, m.evicted, m.requests, m.waiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Cache asks agents for their crash records and keeps them. It is safe for
// concurrent use. The zero value is not usable; call New.
type Cache struct {
	reg        *registry.Registry
	streams    *streams.Table
	window     time.Duration
	maxRecords int
	maxAge     time.Duration
	maxRecord  int
	maxBytes   int
	now        func() time.Time
	logger     *slog.Logger
	metrics    *metrics
	// asks shares each agent's request and window among the collections
	// that want it.
	asks *flight.Group[string, struct{}]

	mu      sync.Mutex // guards the fields below
	records map[key]*Record
	bytes   int                  // the records' sizes, summed
	asked   map[string]time.Time // agent id -> when a request was last sent
}

// New validates opts and returns an empty Cache whose metrics go to reg.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	var errs []error
	if opts.Registry == nil || opts.Streams == nil {
		errs = append(errs, errors.New("diagnostics: registry and stream table are required"))
	}
	if opts.Window <= 0 || opts.MaxRecords <= 0 || opts.MaxAge <= 0 || opts.MaxRecordBytes <= 0 || opts.MaxBytes <= 0 {
		errs = append(errs, errors.New("diagnostics: window, record and byte limits and maximum age must be positive"))
	}
	if logger == nil || reg == nil {
		errs = append(errs, errors.New("diagnostics: logger and registerer are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Cache{
		reg:        opts.Registry,
		streams:    opts.Streams,
		window:     opts.Window,
		maxRecords: opts.MaxRecords,
		maxAge:     opts.MaxAge,
		maxRecord:  opts.MaxRecordBytes,
		maxBytes:   opts.MaxBytes,
		now:        opts.Now,
		logger:     logger.With("component", "diagnostics"),
		metrics:    m,
		asks:       flight.New(flight.Options[string, struct{}]{}),
		records:    make(map[key]*Record),
		asked:      make(map[string]time.Time),
	}, nil
}

// OnRecord caches a record that agentID sent; it is meant to be
// agentsvc.Options.OnCrashRecord. A record of the same pod and artifact
// directory replaces the cached one, whichever agent id sent it. Records of
// agents that are not registered are dropped. It never blocks on I/O and is
// safe for concurrent use.
func (c *Cache) OnRecord(agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest) {
	if rec == nil {
		return
	}
	a, ok := c.reg.Get(agentID)
	if !ok {
		c.metrics.evicted.WithLabelValues(EvictAgentGone).Inc()
		c.logger.Debug("Dropping crash record of an unregistered agent", "agent_id", agentID, "artifact_dir", rec.GetArtifactDir())
		return
	}
	size := proto.Size(rec)
	if size > c.maxRecord {
		c.metrics.rejected.WithLabelValues(RejectSize).Inc()
		c.logger.Warn("Dropping oversize crash record", "agent_id", agentID, "pod_name", a.PodName, "bytes", size, "limit", c.maxRecord)
		return
	}
	now := c.now()
	k := key{pod: strings.ToLower(a.PodName), dir: rec.GetArtifactDir()}
	r := &Record{AgentID: a.ID, PodName: a.PodName, Role: a.Role.WireName(), Rec: rec, ReceivedAt: now, size: size}

	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.asked[agentID]; !ok || now.Sub(at) > c.window+askGrace {
		c.metrics.rejected.WithLabelValues(RejectUnsolicited).Inc()
		c.logger.Debug("Dropping crash record nobody asked for", "agent_id", agentID, "pod_name", a.PodName)
		return
	}
	if old, ok := c.records[k]; ok {
		c.bytes -= old.size
	}
	c.records[k] = r
	c.bytes += size
	for len(c.records) > c.maxRecords || c.bytes > c.maxBytes {
		c.evictOldestLocked()
	}
	c.setGaugesLocked()
}

func (c *Cache) setGaugesLocked() {
	c.metrics.records.Set(float64(len(c.records)))
	c.metrics.bytes.Set(float64(c.bytes))
}

// evictOldestLocked drops the record of the oldest crash (ties broken by
// pod and artifact directory, so the choice is deterministic).
func (c *Cache) evictOldestLocked() {
	var oldest key
	var oldestAt time.Time
	first := true
	for k, r := range c.records {
		at := crashTime(r)
		if first || at.Before(oldestAt) || (at.Equal(oldestAt) && cmp.Or(cmp.Compare(k.pod, oldest.pod), cmp.Compare(k.dir, oldest.dir)) < 0) {
			oldest, oldestAt, first = k, at, false
		}
	}
	c.bytes -= c.records[oldest].size
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
func (c *Cache) Collect(ctx context.Context, f registry.Filter) []Record {
	agents := c.reg.List(f)
	pods := make(map[string]bool, len(agents))
	for _, a := range agents {
		pods[strings.ToLower(a.PodName)] = true
	}
	var tickets []*flight.Ticket[string, struct{}]
	for _, a := range agents {
		st, ok := c.streams.Crash(a.ID)
		if !ok {
			continue
		}
		tickets = append(tickets, c.asks.Join(a.ID, func(context.Context) (struct{}, error) { return struct{}{}, c.ask(st) }))
	}
	c.metrics.waiting.Inc()
	for i, t := range tickets {
		if _, err := t.Wait(ctx); err != nil && ctx.Err() != nil {
			for _, rest := range tickets[i+1:] {
				rest.Leave()
			}
			break
		}
	}
	c.metrics.waiting.Dec()
	c.prune()
	return c.cached(pods)
}

// ask sends a request to one agent and waits the window for its records;
// the agent is not asked again until the window has ended.
func (c *Cache) ask(st *streams.Crash) error {
	c.mu.Lock()
	c.asked[st.AgentID()] = c.now()
	c.mu.Unlock()
	if err := st.Request(); err != nil {
		c.logger.Debug("Crash record request not sent", "agent_id", st.AgentID(), "err", err)
		return err
	}
	c.metrics.requests.Inc()
	t := time.NewTimer(c.window)
	defer t.Stop()
	select {
	case <-t.C:
	case <-st.Done():
	}
	return nil
}

// prune drops the records of pods that have no registered agent and the
// records that no agent re-sent within MaxAge.
func (c *Cache) prune() {
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
			c.bytes -= r.size
			delete(c.records, k)
			c.metrics.evicted.WithLabelValues(EvictAgentGone).Inc()
		case now.Sub(r.ReceivedAt) > c.maxAge:
			c.bytes -= r.size
			delete(c.records, k)
			c.metrics.evicted.WithLabelValues(EvictExpired).Inc()
		}
	}
	for id, at := range c.asked {
		if now.Sub(at) > c.window+askGrace {
			delete(c.asked, id)
		}
	}
	c.setGaugesLocked()
}

// CountByPod returns how many crash records are cached per pod (lower-cased
// pod name), without asking any agent.
func (c *Cache) CountByPod() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int)
	for k := range c.records {
		out[k.pod]++
	}
	return out
}

// cached returns copies of the records of pods (lower-cased names), sorted.
func (c *Cache) cached(pods map[string]bool) []Record {
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
