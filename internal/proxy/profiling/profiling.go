// Package profiling runs on-demand profiles of nodes through our agents
// (the ExtStreamProfiles extension of this project) and keeps the results
// within a byte budget for listing and download.
//
// One profile per node (pod) runs at a time; a second request for a busy
// node is refused with ErrBusy. An agent without the extension stream (an
// upstream agent) is reported with ErrUnsupported. An agent that refuses a
// request (no pprof address, bad type) answers at once; its text is
// returned.
package profiling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fodc-go/fodc/internal/agent/ondemand"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Errors of one node's request, by Result.Code.
var (
	ErrBusy        = errors.New("busy: a profile of this node is already running")
	ErrUnsupported = errors.New("on-demand profiling not supported by this agent")
)

// Result codes.
const (
	CodeStarted     = "started"
	CodeBusy        = "busy"
	CodeUnsupported = "unsupported"
	CodeRefused     = "refused"
)

// Entry statuses.
const (
	StatusRunning = "running"
	StatusDone    = "done"
	StatusFailed  = "failed"
)

// readSlack is added to a profile's duration to wait for its chunks.
const readSlack = 45 * time.Second

// Options configures a Manager. Every field is required; the defaults
// live in the proxy's configuration.
type Options struct {
	Registry *registry.Registry
	Streams  *streams.Table
	// MaxBytes bounds the profiles kept in all, and so each one; the
	// oldest finished ones go first.
	MaxBytes int
	// MaxEntries bounds the profiles listed, finished or failed; the
	// oldest finished ones go first.
	MaxEntries int
	// AcceptTimeout bounds the wait for an agent's acceptance.
	AcceptTimeout time.Duration
}

// Entry is one requested profile.
type Entry struct {
	ID         string     `json:"profile_id"`
	AgentID    string     `json:"agent_id"`
	PodName    string     `json:"pod_name"`
	Role       string     `json:"role"`
	Type       string     `json:"type"`
	Seconds    uint32     `json:"seconds,omitempty"`
	Source     string     `json:"source_endpoint"`
	Status     string     `json:"status"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	SizeBytes  int        `json:"size_bytes"`
}

// Result is what became of one node's request.
type Result struct {
	AgentID   string `json:"agent_id"`
	PodName   string `json:"pod_name"`
	Code      string `json:"code"`
	ProfileID string `json:"profile_id,omitempty"`
	Error     string `json:"error,omitempty"`
}

type entry struct {
	Entry
	data []byte
}

// Manager starts profiles and keeps their results. It is safe for
// concurrent use; Close stops the running ones.
type Manager struct {
	opts    Options
	logger  *slog.Logger
	results *prometheus.CounterVec // requests and profiles, by result
	evicted prometheus.Counter
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	busy    map[string]bool
	entries []*entry // oldest first
	total   int
}

// New returns a Manager whose metrics go to reg.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	var errs []error
	if opts.Registry == nil || opts.Streams == nil {
		errs = append(errs, errors.New("profiling: registry and stream table are required"))
	}
	if opts.MaxBytes <= 0 || opts.MaxEntries <= 0 || opts.AcceptTimeout <= 0 {
		errs = append(errs, errors.New("profiling: byte and entry limits and the accept timeout must be positive"))
	}
	if logger == nil || reg == nil {
		errs = append(errs, errors.New("profiling: logger and registerer are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fodc_proxy_profiles_total",
		Help: "On-demand profile requests by result: started, busy, unsupported or refused at request time; done or failed once over.",
	}, []string{"result"})
	evicted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fodc_proxy_profiles_evicted_total",
		Help: "Finished on-demand profiles dropped to stay within --on-demand-profile-bytes and the entry limit.",
	})
	for _, c := range []prometheus.Collector{results, evicted} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{CodeStarted, CodeBusy, CodeUnsupported, CodeRefused, StatusDone, StatusFailed} {
		results.WithLabelValues(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{opts: opts, logger: logger, results: results, evicted: evicted, ctx: ctx, cancel: cancel, busy: make(map[string]bool)}, nil
}

// Close stops the running profiles and waits for them.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// Validate checks a request's type and duration.
func Validate(typ string, seconds uint32) error {
	if !ondemand.Known(typ) {
		return fmt.Errorf("unknown profile type %q (want cpu, heap, allocs, goroutine, mutex, block or trace)", typ)
	}
	if ondemand.Timed(typ) && (seconds < 1 || seconds > ondemand.MaxSeconds) {
		return fmt.Errorf("seconds %d out of range 1..%d", seconds, ondemand.MaxSeconds)
	}
	return nil
}

// Start requests a profile of every online agent f selects and returns
// one Result each, in pod-name order. A started profile runs on in the
// background; List and Get show it.
func (m *Manager) Start(ctx context.Context, f registry.Filter, typ string, seconds uint32) ([]Result, error) {
	if err := Validate(typ, seconds); err != nil {
		return nil, err
	}
	if !ondemand.Timed(typ) {
		seconds = 0
	}
	var agents []registry.Agent
	for _, a := range m.opts.Registry.List(f) {
		if a.Status == registry.StatusOnline {
			agents = append(agents, a)
		}
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].PodName < agents[j].PodName })
	out := make([]Result, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { out[i] = m.startOne(ctx, a, typ, seconds) })
	}
	wg.Wait()
	for _, r := range out {
		m.results.WithLabelValues(r.Code).Inc()
	}
	return out, nil
}

func (m *Manager) startOne(ctx context.Context, a registry.Agent, typ string, seconds uint32) Result {
	r := Result{AgentID: a.ID, PodName: a.PodName}
	h, ok := m.opts.Streams.Profiles(a.ID)
	if !ok {
		r.Code, r.Error = CodeUnsupported, ErrUnsupported.Error()
		return r
	}
	m.mu.Lock()
	if m.busy[a.PodName] {
		m.mu.Unlock()
		r.Code, r.Error = CodeBusy, ErrBusy.Error()
		return r
	}
	m.busy[a.PodName] = true
	m.mu.Unlock()
	release := func() {
		m.mu.Lock()
		delete(m.busy, a.PodName)
		m.mu.Unlock()
	}
	actx, cancel := context.WithTimeout(ctx, m.opts.AcceptTimeout)
	fetch, err := h.Start(actx, typ, seconds)
	cancel()
	if err != nil {
		release()
		r.Code, r.Error = CodeRefused, err.Error()
		return r
	}
	e := &entry{Entry: Entry{
		ID: uuid.NewString(), AgentID: a.ID, PodName: a.PodName, Role: a.RoleName, Type: typ, Seconds: seconds,
		Source: fetch.Source(), Status: StatusRunning, StartedAt: time.Now().UTC(),
	}}
	m.mu.Lock()
	m.entries = append(m.entries, e)
	m.mu.Unlock()
	m.wg.Go(func() {
		defer release()
		defer fetch.Close()
		rctx, cancel := context.WithTimeout(m.ctx, time.Duration(seconds)*time.Second+readSlack)
		defer cancel()
		data, err := fetch.Read(rctx, m.opts.MaxBytes)
		m.finish(e, data, err)
	})
	r.Code, r.ProfileID = CodeStarted, e.ID
	return r
}

// finish stores a profile's outcome and keeps the total within the budget.
func (m *Manager) finish(e *entry, data []byte, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now().UTC()
	e.FinishedAt = &now
	if err != nil {
		e.Status, e.Error = StatusFailed, err.Error()
		m.logger.Info("On-demand profile failed", "pod_name", e.PodName, "type", e.Type, "err", err)
	} else {
		e.Status, e.data, e.SizeBytes = StatusDone, data, len(data)
		m.total += len(data)
	}
	m.results.WithLabelValues(e.Status).Inc()
	for i := 0; (m.total > m.opts.MaxBytes || len(m.entries) > m.opts.MaxEntries) && i < len(m.entries); {
		old := m.entries[i]
		if old == e || old.Status == StatusRunning {
			i++
			continue
		}
		m.total -= len(old.data)
		m.entries = append(m.entries[:i], m.entries[i+1:]...)
		m.evicted.Inc()
	}
}

// List returns the entries whose pod f selects (only PodName and AgentID
// are looked at), newest first.
func (m *Manager) List(f registry.Filter) []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Entry{}
	for i := len(m.entries) - 1; i >= 0; i-- {
		e := m.entries[i]
		if (f.PodName != "" && e.PodName != f.PodName) || (f.AgentID != "" && e.AgentID != f.AgentID) {
			continue
		}
		out = append(out, e.Entry)
	}
	return out
}

// Get returns an entry and, when done, its profile.
func (m *Manager) Get(id string) (Entry, []byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.entries {
		if e.ID == id {
			return e.Entry, e.data, true
		}
	}
	return Entry{}, nil, false
}
