// Package pressure lists the pressure profiles that agents captured under
// memory pressure and downloads them, for GET /pressure-profiles and GET
// /pressure-profiles/{pod}/{profile_id}/{type} (PROTOCOL.md §3.7, §5.10).
//
// A list round asks one agent for its records; agentsvc keeps rounds apart
// by request id, and a completed round replaces what the cache holds for
// that agent's pod. Unlike the upstream proxy (PROTOCOL.md §7 W5, W9, W10):
// an overlapping or failed round never empties the cache; concurrent
// callers share one round per agent; the cache is keyed by pod, so entries
// survive an agent's reconnect and are forgotten when the pod leaves the
// registry; a download goes to a deterministically chosen agent of the pod
// (online first, then the most recently registered), uses only the pressure
// stream of that agent and stops as soon as its caller goes away.
package pressure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
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

// The profile types an agent captures.
const (
	TypeHeap      = "heap"
	TypeGoroutine = "goroutine"
)

// Errors returned by Download; compare with errors.Is.
var (
	// ErrUnknownType means the requested type is neither heap nor goroutine.
	ErrUnknownType = errors.New("unknown profile type")
	// ErrProfileNotFound means no registered agent of the pod lists the
	// profile, or the profile has no file of the requested type.
	ErrProfileNotFound = errors.New("profile not found")
)

// Options configures a Cache. Every field but Now is required; the
// defaults live in the proxy's configuration.
type Options struct {
	// Registry selects the agents to ask and names their pods.
	Registry *registry.Registry
	// Streams holds the agents' live pressure streams.
	Streams *streams.Table
	// ListTimeout bounds one agent's list round; the caller's ctx bounds
	// its own wait as well.
	ListTimeout time.Duration
	// MaxProfilesPerPod bounds the entries cached for one pod; a round
	// with more keeps the most recent captures.
	MaxProfilesPerPod int
	// MaxRecordBytes bounds one record (its protobuf size); a larger one is
	// dropped and counted.
	MaxRecordBytes int
	// MaxBytes bounds the records kept in all; beyond it the oldest
	// captures are evicted first.
	MaxBytes int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Entry is one cached profile record and the agent that last listed it.
type Entry struct {
	// AgentID is the agent whose round last listed the record.
	AgentID string
	// PodName is that agent's pod as it registered.
	PodName string
	// Role is that agent's role as a wire enum name, such as ROLE_LIAISON.
	Role string
	// Rec is the record as received. It is shared and must not be modified.
	Rec *fodcv1.PressureProfileRecord
	// ListedAt is when the round that listed the record completed.
	ListedAt time.Time

	size int // protobuf size of Rec, counted against MaxBytes
}

// key identifies a profile across reconnects of its pod.
type key struct {
	pod string // lower-cased pod name
	id  string // profile_id
}

type metrics struct {
	bytes         prometheus.Gauge
	rejected      *prometheus.CounterVec
	evicted       prometheus.Counter
	profiles      prometheus.Gauge
	rounds        *prometheus.CounterVec
	downloads     *prometheus.CounterVec
	downloadBytes prometheus.Counter
}

// rejectSize is the reason of a record over MaxRecordBytes.
const rejectSize = "record_size"

// Results counted by the round and download counters.
const (
	resultOK       = "ok"
	resultError    = "error"
	resultCanceled = "canceled"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_pressure_profile_bytes",
			Help: "Bytes of pressure-profile records currently cached (protobuf size).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_pressure_profiles_rejected_total",
			Help: "Pressure-profile records dropped on arrival, by reason (record_size).",
		}, []string{"reason"}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_pressure_profiles_evicted_total",
			Help: "Pressure-profile records evicted to stay within --max-profile-bytes.",
		}),
		profiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_proxy_pressure_profiles",
			Help: "Pressure profile records currently cached.",
		}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_pressure_list_rounds_total",
			Help: "Pressure profile list rounds run on agents, by result (ok, error, canceled).",
		}, []string{"result"}),
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_pressure_downloads_total",
			Help: "Pressure profile downloads, by result (ok, error, canceled).",
		}, []string{"result"}),
		downloadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_pressure_download_bytes_total",
			Help: "Profile bytes streamed to download clients.",
		}),
	}
	for _, r := range []string{resultOK, resultError, resultCanceled} {
		m.rounds.WithLabelValues(r)
		m.downloads.WithLabelValues(r)
	}
	m.rejected.WithLabelValues(rejectSize)
	for _, c := range []prometheus.Collector{m.bytes, m.rejected, m.evicted, m.profiles, m.rounds, m.downloads, m.downloadBytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Cache lists agents' pressure profiles, keeps the records and downloads
// profiles. It is safe for concurrent use. Each agent's list round runs as
// one flight call shared by every caller that wants it, and is cancelled
// when the last of them stops waiting. The zero value is not usable; call
// New.
type Cache struct {
	reg         *registry.Registry
	streams     *streams.Table
	listTimeout time.Duration
	maxPerPod   int
	maxRecord   int
	maxBytes    int
	now         func() time.Time
	logger      *slog.Logger
	metrics     *metrics
	rounds      *flight.Group[string, struct{}] // by agent id

	mu      sync.Mutex // guards entries and bytes
	entries map[key]*Entry
	bytes   int // the entries' sizes, summed
}

// New validates opts and returns an empty Cache whose metrics go to reg.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	var errs []error
	if opts.Registry == nil || opts.Streams == nil {
		errs = append(errs, errors.New("pressure: registry and stream table are required"))
	}
	if opts.ListTimeout <= 0 || opts.MaxProfilesPerPod <= 0 || opts.MaxRecordBytes <= 0 || opts.MaxBytes <= 0 {
		errs = append(errs, errors.New("pressure: list timeout, profile and byte limits must be positive"))
	}
	if logger == nil || reg == nil {
		errs = append(errs, errors.New("pressure: logger and registerer are required"))
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
		reg:         opts.Registry,
		streams:     opts.Streams,
		listTimeout: opts.ListTimeout,
		maxPerPod:   opts.MaxProfilesPerPod,
		maxRecord:   opts.MaxRecordBytes,
		maxBytes:    opts.MaxBytes,
		now:         opts.Now,
		logger:      logger.With("component", "pressure"),
		metrics:     m,
		rounds:      flight.New(flight.Options[string, struct{}]{CancelAbandoned: true}),
		entries:     make(map[key]*Entry),
	}, nil
}

// List runs one list round on every agent that f selects and that has a
// pressure stream, all in parallel, each bounded by ListTimeout; an agent
// with a round already in flight is not asked again, the caller joins that
// round. It then returns the cached entries of the selected agents' pods,
// sorted by captured_at (newest first), pod name and profile id.
//
// An agent whose round fails or times out keeps its cached entries. When
// ctx ends first, List stops waiting and returns the cache as it is
// together with ctx.Err(); rounds that other callers wait for go on.
// Entries of pods without any registered agent are pruned first.
func (c *Cache) List(ctx context.Context, f registry.Filter) ([]Entry, error) {
	agents := c.reg.List(f)
	pods := make(map[string]bool, len(agents))
	var rounds []*flight.Ticket[string, struct{}]
	for _, a := range agents {
		pods[strings.ToLower(a.PodName)] = true
		if st, ok := c.streams.Pressure(a.ID); ok {
			rounds = append(rounds, c.join(a, st))
		}
	}
	var err error
	for i, r := range rounds {
		if _, werr := r.Wait(ctx); werr != nil && ctx.Err() != nil {
			for _, rest := range rounds[i+1:] {
				rest.Leave()
			}
			err = ctx.Err()
			break
		}
	}
	c.prune()
	return c.cached(pods), err
}

// join returns a ticket for the agent's round in flight, or starts one. The
// caller must wait for it (or leave it).
func (c *Cache) join(a registry.Agent, st *streams.Pressure) *flight.Ticket[string, struct{}] {
	return c.rounds.Join(a.ID, func(ctx context.Context) (struct{}, error) {
		ctx, cancel := context.WithTimeout(ctx, c.listTimeout)
		defer cancel()
		return struct{}{}, c.run(ctx, a, st)
	})
}

// run lists the agent's records and commits them if the round completed.
func (c *Cache) run(ctx context.Context, a registry.Agent, st *streams.Pressure) error {
	recs, err := st.List(ctx)
	if err == nil {
		c.mu.Lock()
		c.commitLocked(a, recs)
		c.mu.Unlock()
	}
	switch {
	case err == nil:
		c.metrics.rounds.WithLabelValues(resultOK).Inc()
	case errors.Is(err, context.Canceled):
		c.metrics.rounds.WithLabelValues(resultCanceled).Inc()
	default:
		c.metrics.rounds.WithLabelValues(resultError).Inc()
		c.logger.Debug("Pressure profile list round failed; keeping the cached entries", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
	}
	return err
}

// commitLocked replaces what the cache holds for a's pod with recs: the
// entries a listed before and those of agents of the pod that are no longer
// registered (a reconnect's previous ids). Entries another live agent of the
// same pod listed stay. Nothing changes if a itself left the registry.
func (c *Cache) commitLocked(a registry.Agent, recs []*fodcv1.PressureProfileRecord) {
	if _, ok := c.reg.Get(a.ID); !ok {
		return
	}
	pod := strings.ToLower(a.PodName)
	for k, e := range c.entries {
		if k.pod != pod {
			continue
		}
		if e.AgentID == a.ID {
			c.deleteLocked(k)
			continue
		}
		if _, live := c.reg.Get(e.AgentID); !live {
			c.deleteLocked(k)
		}
	}
	recs = slices.DeleteFunc(slices.Clone(recs), func(r *fodcv1.PressureProfileRecord) bool {
		if r == nil {
			return true
		}
		if size := proto.Size(r); size > c.maxRecord {
			c.metrics.rejected.WithLabelValues(rejectSize).Inc()
			c.logger.Warn("Dropping oversize pressure-profile record", "agent_id", a.ID, "pod_name", a.PodName, "bytes", size, "limit", c.maxRecord)
			return true
		}
		return false
	})
	if len(recs) > c.maxPerPod {
		slices.SortStableFunc(recs, func(x, y *fodcv1.PressureProfileRecord) int {
			return y.GetCapturedAt().AsTime().Compare(x.GetCapturedAt().AsTime())
		})
		c.logger.Debug("Pressure profile list truncated", "agent_id", a.ID, "pod_name", a.PodName, "records", len(recs), "kept", c.maxPerPod)
		recs = recs[:c.maxPerPod]
	}
	now := c.now()
	role := a.Role.WireName()
	for _, rec := range recs {
		k := key{pod: pod, id: rec.GetProfileId()}
		c.deleteLocked(k)
		e := &Entry{AgentID: a.ID, PodName: a.PodName, Role: role, Rec: rec, ListedAt: now, size: proto.Size(rec)}
		c.entries[k] = e
		c.bytes += e.size
	}
	for c.bytes > c.maxBytes {
		c.evictOldestLocked()
	}
	c.setGaugesLocked()
}

// deleteLocked removes the entry at k, if any.
func (c *Cache) deleteLocked(k key) {
	if e, ok := c.entries[k]; ok {
		c.bytes -= e.size
		delete(c.entries, k)
	}
}

// evictOldestLocked drops the entry of the oldest capture (ties broken by
// pod and profile id, so the choice is deterministic).
func (c *Cache) evictOldestLocked() {
	var oldest key
	var oldestAt time.Time
	first := true
	for k, e := range c.entries {
		at := e.Rec.GetCapturedAt().AsTime()
		if first || at.Before(oldestAt) || (at.Equal(oldestAt) && cmp.Or(cmp.Compare(k.pod, oldest.pod), cmp.Compare(k.id, oldest.id)) < 0) {
			oldest, oldestAt, first = k, at, false
		}
	}
	c.deleteLocked(oldest)
	c.metrics.evicted.Inc()
}

func (c *Cache) setGaugesLocked() {
	c.metrics.profiles.Set(float64(len(c.entries)))
	c.metrics.bytes.Set(float64(c.bytes))
}

// prune drops the entries of pods that have no registered agent.
func (c *Cache) prune() {
	live := make(map[string]bool)
	for _, a := range c.reg.List(registry.Filter{}) {
		live[strings.ToLower(a.PodName)] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if !live[k.pod] {
			c.deleteLocked(k)
		}
	}
	c.setGaugesLocked()
}

// cached returns copies of the entries of pods (lower-cased names), sorted.
func (c *Cache) cached(pods map[string]bool) []Entry {
	c.mu.Lock()
	out := make([]Entry, 0, len(c.entries))
	for k, e := range c.entries {
		if pods[k.pod] {
			out = append(out, *e)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(
			b.Rec.GetCapturedAt().AsTime().Compare(a.Rec.GetCapturedAt().AsTime()),
			cmp.Compare(strings.ToLower(a.PodName), strings.ToLower(b.PodName)),
			cmp.Compare(a.Rec.GetProfileId(), b.Rec.GetProfileId()),
		)
	})
	return out
}

// Download streams one profile file of pod to the writer that start
// returns, and returns the number of bytes written.
//
// typ must be heap or goroutine (ErrUnknownType). The pod is resolved to
// one of its registered agents that has a pressure stream: an online one
// before others, then the most recently registered (ties: the greatest
// id). The profile is looked up in the cache; on a miss one list round of
// that agent refreshes it, and a profile still missing, or without a file
// of typ, is ErrProfileNotFound.
//
// start is called once, with the file name
// <pod>-<role>-<profile_id>-<type>.pprof (every character outside
// [A-Za-z0-9._-] of pod, role and profile id replaced by '_'), right before
// the first byte is written, or after a successful download of an empty
// file. When Download fails before calling start, nothing was written and
// the caller can still report the error (for instance an error the agent
// sent instead of the file, which wraps streams.ErrProfileUnavailable);
// after that, a failure only means the content is truncated. When ctx ends
// the download stops at once; the stream drains the rest of the agent's
// chunks without blocking the stream.
func (c *Cache) Download(ctx context.Context, pod, profileID, typ string, start func(filename string) io.Writer) (written int64, err error) {
	defer func() { c.countDownload(ctx, written, err) }()
	if typ != TypeHeap && typ != TypeGoroutine {
		return 0, fmt.Errorf("%w %q: use %s or %s", ErrUnknownType, typ, TypeHeap, TypeGoroutine)
	}
	a, st, ok := c.resolve(pod)
	if !ok {
		return 0, fmt.Errorf("%w: no registered agent of pod %q has a pressure profile stream", ErrProfileNotFound, pod)
	}
	info, ok := c.lookup(a.PodName, profileID, typ)
	if !ok {
		_, refreshErr := c.join(a, st).Wait(ctx)
		if refreshErr != nil && ctx.Err() != nil {
			return 0, refreshErr
		}
		if info, ok = c.lookup(a.PodName, profileID, typ); !ok {
			if refreshErr != nil {
				return 0, fmt.Errorf("%w: pod %q has no %s profile %q in the cache, and listing its profiles again failed: %v",
					ErrProfileNotFound, pod, typ, profileID, refreshErr)
			}
			return 0, fmt.Errorf("%w: pod %q has no %s profile %q", ErrProfileNotFound, pod, typ, profileID)
		}
	}

	name := filename(a.PodName, a.Role.WireName(), profileID, typ)
	var w io.Writer
	err = st.Fetch(ctx, profileID, typ, info.GetFilepath(), func(b []byte) error {
		if w == nil {
			w = start(name)
		}
		n, err := w.Write(b)
		written += int64(n)
		if err != nil {
			return fmt.Errorf("write profile: %w", err)
		}
		return nil
	})
	if err != nil {
		return written, fmt.Errorf("download %s profile %q of pod %q: %w", typ, profileID, a.PodName, err)
	}
	if w == nil {
		start(name)
	}
	return written, nil
}

func (c *Cache) countDownload(ctx context.Context, written int64, err error) {
	c.metrics.downloadBytes.Add(float64(written))
	switch {
	case err == nil:
		c.metrics.downloads.WithLabelValues(resultOK).Inc()
	case ctx.Err() != nil:
		c.metrics.downloads.WithLabelValues(resultCanceled).Inc()
	default:
		c.metrics.downloads.WithLabelValues(resultError).Inc()
	}
}

// resolve picks the agent of pod to download from (see pickAgent).
func (c *Cache) resolve(pod string) (registry.Agent, *streams.Pressure, bool) {
	if pod == "" {
		return registry.Agent{}, nil, false
	}
	candidates := c.reg.List(registry.Filter{PodName: pod})
	slices.SortFunc(candidates, compareCandidates)
	for _, a := range candidates {
		if st, ok := c.streams.Pressure(a.ID); ok {
			return a, st, true
		}
	}
	return registry.Agent{}, nil, false
}

// compareCandidates orders the agents of one pod by preference: online
// first, then the most recently registered, then the greatest id, so that
// the choice never depends on map order (W5).
func compareCandidates(a, b registry.Agent) int {
	online := func(x registry.Agent) int {
		if x.Status == registry.StatusOnline {
			return 0
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(online(a), online(b)),
		b.RegisteredAt.Compare(a.RegisteredAt),
		cmp.Compare(b.ID, a.ID),
	)
}

// lookup finds the file of type typ of a cached profile of pod.
func (c *Cache) lookup(pod, profileID, typ string) (*fodcv1.PressureProfileInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key{pod: strings.ToLower(pod), id: profileID}]
	if !ok {
		return nil, false
	}
	for _, p := range e.Rec.GetProfiles() {
		if p.GetType() == typ {
			return p, true
		}
	}
	return nil, false
}

// filename builds the download file name: pod, role and profile id with
// every character outside [A-Za-z0-9._-] replaced by '_'.
func filename(pod, role, profileID, typ string) string {
	return sanitize(pod) + "-" + sanitize(role) + "-" + sanitize(profileID) + "-" + typ + ".pprof"
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
