// Package cluster runs the proxy's cluster-wide collections: topology from
// every agent, and lifecycle reports with the schema consistency verdict.
// Concurrent callers share one collection in flight, a collection runs on
// its own deadline (a caller that gives up does not cancel it for the
// others), and agents that already failed are not waited for again.
package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/singleflight"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/lifecycle"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/topology"
	"github.com/fodc-go/fodc/internal/roles"
)

// Streams finds an agent's live streams; *agentsvc.Service is one.
type Streams interface {
	Topology(agentID string) (*agentsvc.TopologyStream, bool)
	Lifecycle(agentID string) (*agentsvc.LifecycleStream, bool)
	SchemaRegistry(agentID string) (*agentsvc.SchemaRegistryStream, bool)
	NodeConfig(agentID string) (*agentsvc.NodeConfigStream, bool)
}

// Options configures a Collector.
type Options struct {
	Registry *registry.Registry
	Streams  Streams
	// TopologyTimeout bounds a topology collection (default 10s).
	TopologyTimeout time.Duration
	// LifecycleTimeout bounds the wait for each agent's lifecycle report
	// (default 50s: agents allow 40s for their node's InspectAll).
	LifecycleTimeout time.Duration
	// FailedAgentWait is how long an agent whose previous lifecycle command
	// is still unanswered after LifecycleTimeout is waited for (default 1s).
	FailedAgentWait time.Duration
	// RegistryTimeout bounds each liaison's registry read (default 50s).
	RegistryTimeout time.Duration
	// LifecycleReuse serves the last lifecycle result to callers that come
	// within this age of it (default 5s; 0 disables).
	LifecycleReuse time.Duration
	// ConfigTimeout bounds a configuration collection (default 5s).
	ConfigTimeout time.Duration
	// ConfigCacheTTL reuses a configuration collection this young
	// (default 15s).
	ConfigCacheTTL time.Duration
	// ConfigIgnore lists the per-node parameters left out of the
	// consistency report (default configreport.DefaultIgnore()).
	ConfigIgnore *configreport.Ignore
	Now          func() time.Time
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Collector runs topology and lifecycle collections. It is safe for
// concurrent use.
type Collector struct {
	opts    Options
	now     func() time.Time
	logger  *slog.Logger
	flight  singleflight.Group
	checker *lifecycle.Checker

	mu         sync.Mutex // guards last and lastConfig
	last       *lifecycle.Result
	lastConfig *ConfigSnapshot

	rounds *prometheus.CounterVec
}

// New returns a Collector.
func New(opts Options) (*Collector, error) {
	if opts.Registry == nil || opts.Streams == nil {
		return nil, errors.New("cluster: registry and streams are required")
	}
	if opts.TopologyTimeout <= 0 {
		opts.TopologyTimeout = 10 * time.Second
	}
	if opts.LifecycleTimeout <= 0 {
		opts.LifecycleTimeout = 50 * time.Second
	}
	if opts.FailedAgentWait <= 0 {
		opts.FailedAgentWait = time.Second
	}
	if opts.RegistryTimeout <= 0 {
		opts.RegistryTimeout = 50 * time.Second
	}
	if opts.ConfigTimeout <= 0 {
		opts.ConfigTimeout = 5 * time.Second
	}
	if opts.ConfigCacheTTL <= 0 {
		opts.ConfigCacheTTL = 15 * time.Second
	}
	if opts.ConfigIgnore == nil {
		ig := configreport.DefaultIgnore()
		opts.ConfigIgnore = &ig
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
	return &Collector{
		opts:    opts,
		now:     now,
		logger:  logger.With("component", "cluster"),
		checker: lifecycle.NewChecker(),
		rounds: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_cluster_collections_total",
			Help: "Cluster-wide collections run, by kind (topology or lifecycle).",
		}, []string{"kind"}),
	}, nil
}

// shared runs fn once for all concurrent callers of key and waits for it
// until ctx ends.
func shared[T any](ctx context.Context, c *Collector, key string, fn func() T) (T, error) {
	ch := c.flight.DoChan(key, func() (any, error) { return fn(), nil })
	select {
	case r := <-ch:
		return r.Val.(T), nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Topology asks every agent for its topology and merges the answers.
func (c *Collector) Topology(ctx context.Context) (topology.Merged, error) {
	return shared(ctx, c, "topology", c.collectTopology)
}

func (c *Collector) collectTopology() topology.Merged {
	c.rounds.WithLabelValues("topology").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.TopologyTimeout)
	defer cancel()
	agents := c.opts.Registry.List(registry.Filter{})
	answers := make([]topology.AgentTopology, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		answers[i] = topology.AgentTopology{AgentID: a.ID, PodName: a.PodName}
		if a.Status != registry.StatusOnline {
			continue
		}
		ts, ok := c.opts.Streams.Topology(a.ID)
		if !ok {
			continue
		}
		wg.Go(func() {
			reply, err := ts.Request(ctx)
			if err != nil {
				c.logger.Debug("Agent did not answer topology request", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
				return
			}
			answers[i].Reply = reply
		})
	}
	wg.Wait()
	return topology.Merge(answers, c.statusByPod(agents))
}

// statusByPod attaches registry truth to topology nodes, preferring an
// online entry when a pod has several.
func (c *Collector) statusByPod(agents []registry.Agent) func(string) (topology.NodeStatus, bool) {
	byPod := map[string][]topology.NodeStatus{}
	for _, a := range agents {
		byPod[a.PodName] = append(byPod[a.PodName], topology.NodeStatus{Status: string(a.Status), LastHeartbeat: a.LastHeartbeat})
	}
	return func(pod string) (topology.NodeStatus, bool) { return topology.PreferOnline(byPod[pod]) }
}

// Lifecycle collects lifecycle reports, reads the schema registry through
// a liaison and judges schema consistency per group.
func (c *Collector) Lifecycle(ctx context.Context) (lifecycle.Result, error) {
	if reuse := c.opts.LifecycleReuse; reuse > 0 {
		c.mu.Lock()
		last := c.last
		c.mu.Unlock()
		if last != nil && c.now().Sub(last.CollectedAt) < reuse {
			return *last, nil
		}
	}
	return shared(ctx, c, "lifecycle", c.collectLifecycle)
}

// ConsistencyStatuses returns the last verdict per group.
func (c *Collector) ConsistencyStatuses() map[string]fodcv1.ConsistencyStatus {
	return c.checker.Statuses()
}

func (c *Collector) collectLifecycle() lifecycle.Result {
	c.rounds.WithLabelValues("lifecycle").Inc()
	agents := c.opts.Registry.List(registry.Filter{})
	summary := lifecycle.Summary{Total: len(agents)}
	var (
		mu      sync.Mutex
		reports []lifecycle.AgentReport
		wg      sync.WaitGroup
	)
	for _, a := range agents {
		ls, ok := c.opts.Streams.Lifecycle(a.ID)
		if !ok {
			continue
		}
		summary.Requested++
		wait := c.opts.LifecycleTimeout
		if since, pending := ls.Pending(); pending && c.now().Sub(since) > c.opts.LifecycleTimeout {
			// Its last collection failed and it sent nothing: do not hold
			// every caller for the full timeout again (W12).
			wait = c.opts.FailedAgentWait
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			reply, err := ls.Request(ctx, c.opts.LifecycleTimeout)
			if err != nil {
				c.logger.Debug("Agent did not answer lifecycle request", "agent_id", a.ID, "pod_name", a.PodName, "err", err)
				return
			}
			mu.Lock()
			reports = append(reports, lifecycle.AgentReport{AgentID: a.ID, PodName: a.PodName, Liaison: a.Role.Kind == roles.KindLiaison, Reply: reply})
			mu.Unlock()
		})
	}
	// The registry truth is read while the reports come in.
	regCh := make(chan lifecycle.Registry, 1)
	go func() { regCh <- c.readRegistry(agents) }()
	wg.Wait()
	reg := <-regCh

	summary.Responded = len(reports)
	summary.NotResponded = summary.Requested - summary.Responded
	groups := lifecycle.MergeGroups(reports)
	verdicts := c.checker.Check(groups, reports, reg, summary.NotResponded > 0)
	lifecycle.Apply(groups, verdicts, reg)
	res := lifecycle.Result{
		Groups:      groups,
		Statuses:    lifecycle.PodStatuses(reports),
		Summary:     summary,
		Error:       lifecycle.ErrorText(summary),
		CollectedAt: c.now(),
	}
	c.mu.Lock()
	c.last = &res
	c.mu.Unlock()
	return res
}

// readRegistry asks liaison agents one after another, in pod name order,
// until one reads the registry without a fatal error.
func (c *Collector) readRegistry(agents []registry.Agent) lifecycle.Registry {
	liaisons := slices.Clone(agents)
	liaisons = slices.DeleteFunc(liaisons, func(a registry.Agent) bool {
		_, ok := c.opts.Streams.SchemaRegistry(a.ID)
		return a.Role.Kind != roles.KindLiaison || a.Status != registry.StatusOnline || !ok
	})
	slices.SortFunc(liaisons, func(a, b registry.Agent) int {
		return cmp.Or(cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.ID, b.ID))
	})
	reg := lifecycle.Registry{}
	for _, a := range liaisons {
		rs, ok := c.opts.Streams.SchemaRegistry(a.ID)
		if !ok {
			continue
		}
		reg.Available = true
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RegistryTimeout)
		round, err := rs.Read(ctx)
		cancel()
		if err != nil {
			reg.Err = fmt.Errorf("liaison %s: %w", a.PodName, err)
			continue
		}
		groups, err := lifecycle.MergeRegistryChunks(round.Chunks)
		if err != nil {
			reg.Err = fmt.Errorf("liaison %s: %w", a.PodName, err)
			continue
		}
		return lifecycle.Registry{Groups: groups, Available: true}
	}
	return reg
}
