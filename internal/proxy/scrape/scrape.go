// Package scrape runs the proxy's on-demand scrapes of its agents: it
// selects agents from the registry, sends each one a metrics command over
// its stream (streams.Metrics), waits for every answer within the caller's
// budget, and decodes what came back into series carrying the node's
// identity. Nothing is kept after a scrape.
package scrape

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Reasons an agent contributed nothing to a scrape.
var (
	ErrUnconnected = errors.New("agent missed its heartbeats")
	// ErrOffline means the agent's registration stream ended: the node is
	// still listed (and reported down) until the cleanup timeout.
	ErrOffline  = errors.New("agent offline")
	ErrNoStream = errors.New("agent has no metrics stream open")
)

// Scraper runs scrapes. It is safe for concurrent use; identical
// concurrent requests to one agent share a single command (see
// streams.Metrics.Request), each caller decodes the reply for itself.
type Scraper struct {
	registry *registry.Registry
	streams  *streams.Table
	limits   decode.Limits
	logger   *slog.Logger
	metrics  *metrics
	// decoding admits as many replies into decoding at once as there are
	// cores: more would not decode faster, and each reply being decoded
	// holds a few bytes of working memory per series (300 MB for 100
	// agents of 10,000 series decoding at once).
	decoding chan struct{}

	mu       sync.Mutex           // guards rejected
	rejected map[string]Rejection // by agent id; the agents' last refused reply
}

// Rejection is an agent's last reply refused for being over a limit.
type Rejection struct {
	Reason string    // a decode.Reason* constant
	Detail string    // the error text
	At     time.Time // when the reply arrived
}

// maxRejections bounds the rejections remembered: one per agent, and the
// registry bounds the agents; this is the backstop.
const maxRejections = 10000

// New returns a Scraper of the agents in reg, reached through table, whose
// replies must stay within limits.
func New(reg *registry.Registry, table *streams.Table, limits decode.Limits, logger *slog.Logger, promReg prometheus.Registerer) (*Scraper, error) {
	if reg == nil || table == nil || logger == nil || promReg == nil {
		return nil, errors.New("scrape: registry, stream table, logger and registerer are required")
	}
	m, err := newMetrics(promReg)
	if err != nil {
		return nil, err
	}
	return &Scraper{registry: reg, streams: table, limits: limits, logger: logger.With("component", "scrape"), metrics: m,
		decoding: make(chan struct{}, runtime.GOMAXPROCS(0)), rejected: make(map[string]Rejection)}, nil
}

// LastRejection returns the agent's last reply refused for a limit, if its
// latest reply was refused.
func (c *Scraper) LastRejection(agentID string) (Rejection, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rejected[agentID]
	return r, ok
}

func (c *Scraper) noteRejection(agentID string, r *Rejection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r == nil {
		delete(c.rejected, agentID)
		return
	}
	if _, ok := c.rejected[agentID]; !ok && len(c.rejected) >= maxRejections {
		for id := range c.rejected { // drop any one; the backstop is rarely hit
			if _, live := c.registry.Get(id); !live {
				delete(c.rejected, id)
				break
			}
		}
		if len(c.rejected) >= maxRejections {
			return
		}
	}
	c.rejected[agentID] = *r
}

// Result is one selected agent's part of a scrape.
type Result struct {
	Agent registry.Agent
	// Batch holds the series of a window scrape with the node's identity;
	// empty when Err is set.
	Batch series.Batch
	// Packed holds the series of a latest scrape, packed for the text
	// renderer; nil when Err is set.
	Packed *series.Packed
	// Err says why the agent contributed nothing.
	Err error
	// Duration is how long the agent took to answer, or how long the
	// proxy waited for it.
	Duration time.Duration
}

// Up reports whether the agent answered.
func (r *Result) Up() bool { return r.Err == nil }

// Scrape asks every agent that f selects for the window w (latest values
// when w is zero) and waits for all of them until ctx ends. Each agent's
// wait is bounded by ctx, so a silent agent costs the scrape one deadline
// and is reported with its error while the others are returned. Offline
// and unconnected agents are selected too (so that their down status is
// reported) but never asked. Results are in the registry's order (pod name,
// then agent id).
func (c *Scraper) Scrape(ctx context.Context, f registry.Filter, w series.Window) []Result {
	kind := "latest"
	if !w.IsLatest() {
		kind = "window"
	}
	start := time.Now()
	agents := c.registry.List(f)
	results := make([]Result, len(agents))
	var wg sync.WaitGroup
	for i := range agents {
		results[i].Agent = agents[i]
		wg.Go(func() { c.scrapeOne(ctx, &results[i], w, kind) })
	}
	wg.Wait()
	c.metrics.rounds.WithLabelValues(kind).Inc()
	c.metrics.duration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	return results
}

func (c *Scraper) scrapeOne(ctx context.Context, r *Result, w series.Window, kind string) {
	a := r.Agent
	if a.Status == registry.StatusOffline {
		r.Err = ErrOffline
		c.metrics.requests.WithLabelValues(kind, "offline").Inc()
		return
	}
	if a.Status != registry.StatusOnline {
		r.Err = ErrUnconnected
		c.metrics.requests.WithLabelValues(kind, "unconnected").Inc()
		return
	}
	req, ok := c.streams.Metrics(a.ID)
	if !ok {
		r.Err = ErrNoStream
		c.metrics.requests.WithLabelValues(kind, "no_stream").Inc()
		return
	}
	start := time.Now()
	reply, err := req.Request(ctx, w)
	received := time.Now()
	defer reply.Release() // decoding copies what it keeps
	r.Duration = received.Sub(start)
	if err != nil {
		result := "error"
		switch {
		case errors.Is(err, streams.ErrBusy):
			result = "busy"
		case ctx.Err() != nil:
			// The caller's budget ran out. (A stream that ended under the
			// request also fails with a context error, the stream's: that
			// is an error, not a timeout.)
			result = "timeout"
			err = fmt.Errorf("no answer within %s: %w", r.Duration.Round(time.Millisecond), err)
		}
		r.Err = err
		c.metrics.requests.WithLabelValues(kind, result).Inc()
		c.logger.Debug("Agent did not answer metrics request", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
		return
	}
	var st decode.Stats
	c.decoding <- struct{}{}
	if w.IsLatest() {
		r.Packed, st, err = c.limits.DecodeLatest(NodeInfo(a), reply.Bytes, received, decode.SaneRange(received))
	} else {
		r.Batch, st, err = c.limits.Decode(NodeInfo(a), reply.Bytes, received, true, decode.SaneRange(received))
	}
	<-c.decoding
	if st.OutOfRange > 0 {
		c.metrics.rejected.WithLabelValues(reasonTimestamp).Add(float64(st.OutOfRange))
		c.logger.Debug("Dropped samples with times out of range", "agent_id", a.ID, "pod_name", a.PodName, "samples", st.OutOfRange)
	}
	if st.Reserved > 0 {
		c.metrics.rejected.WithLabelValues(reasonReserved).Add(float64(st.Reserved))
		c.logger.Debug("Dropped samples under the proxy's own names", "agent_id", a.ID, "pod_name", a.PodName, "samples", st.Reserved)
	}
	if st.ForeignContainer > 0 {
		c.metrics.rejected.WithLabelValues(reasonForeignContainer).Add(float64(st.ForeignContainer))
		c.logger.Debug("Dropped samples of containers the agent did not register", "agent_id", a.ID, "pod_name", a.PodName, "samples", st.ForeignContainer)
	}
	var le *decode.LimitError
	if errors.As(err, &le) {
		c.metrics.repliesRejected.WithLabelValues(le.Reason).Inc()
		c.noteRejection(a.ID, &Rejection{Reason: le.Reason, Detail: err.Error(), At: received})
		c.logger.Warn("Agent reply refused: over a limit", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
		r.Batch, r.Packed = series.Batch{}, nil
		r.Err = fmt.Errorf("reply refused: %w", err)
		c.metrics.requests.WithLabelValues(kind, "rejected").Inc()
		return
	}
	if err != nil {
		c.metrics.decodeErrors.Inc()
		c.logger.Warn("Undecodable metrics reply", "agent_id", a.ID, "pod_name", a.PodName, "bytes", len(reply.Bytes), "err", err)
		r.Batch, r.Packed = series.Batch{}, nil
		r.Err = fmt.Errorf("undecodable reply: %w", err)
		c.metrics.requests.WithLabelValues(kind, "decode_error").Inc()
		return
	}
	c.noteRejection(a.ID, nil)
	c.metrics.requests.WithLabelValues(kind, "ok").Inc()
}

// NodeInfo is the identity of a registered agent as decoding needs it.
func NodeInfo(a registry.Agent) decode.NodeInfo {
	return decode.NodeInfo{
		Node: series.Node{
			AgentID: a.ID,
			PodName: a.PodName,
			Role:    a.Role.WireName(),
			IP:      a.Primary.IP,
			Port:    a.Primary.Port,
		},
		Labels:     a.Labels,
		Containers: a.ContainerNames,
	}
}
