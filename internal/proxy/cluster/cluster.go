// Package cluster serves the proxy's cluster-wide views: topology from
// every agent, lifecycle reports with the schema consistency verdict, and
// node configuration with its consistency report. Concurrent callers share
// one collection in flight (package flight), a collection runs on its own
// deadline (a caller that gives up does not cancel it for the others), and
// agents that already failed are not waited for again.
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

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/flight"
	"github.com/fodc-go/fodc/internal/proxy/lifecycle"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
	"github.com/fodc-go/fodc/internal/proxy/topology"
	"github.com/fodc-go/fodc/internal/roles"
)

// Options configures Views. Every field is required; the defaults live in
// the proxy's configuration.
type Options struct {
	Registry *registry.Registry
	Streams  *streams.Table
	// TopologyTimeout bounds a topology collection.
	TopologyTimeout time.Duration
	// LifecycleTimeout bounds the wait for each agent's lifecycle report
	// (agents allow 40s for their node's InspectAll).
	LifecycleTimeout time.Duration
	// FailedAgentWait is how long an agent whose previous lifecycle command
	// is still unanswered after LifecycleTimeout is waited for.
	FailedAgentWait time.Duration
	// RegistryTimeout bounds each liaison's registry read.
	RegistryTimeout time.Duration
	// ConfigTimeout bounds a configuration collection.
	ConfigTimeout time.Duration
	// ConfigCacheTTL reuses a configuration collection this young.
	ConfigCacheTTL time.Duration
	// ConfigIgnore lists the per-node parameters left out of the
	// consistency report.
	ConfigIgnore configreport.Ignore
}

// Validate reports every missing or out-of-range field at once.
func (o Options) Validate() error {
	var errs []error
	if o.Registry == nil || o.Streams == nil {
		errs = append(errs, errors.New("cluster: registry and stream table are required"))
	}
	if o.TopologyTimeout <= 0 || o.LifecycleTimeout <= 0 || o.FailedAgentWait <= 0 || o.RegistryTimeout <= 0 ||
		o.ConfigTimeout <= 0 || o.ConfigCacheTTL <= 0 {
		errs = append(errs, errors.New("cluster: timeouts and the configuration cache TTL must be positive"))
	}
	return errors.Join(errs...)
}

// Views collects and serves the cluster-wide views. It is safe for
// concurrent use.
type Views struct {
	opts    Options
	logger  *slog.Logger
	checker *lifecycle.Checker

	topology   *flight.Group[struct{}, topology.Merged]
	lifecycle  *flight.Group[struct{}, lifecycle.Result]
	config     *flight.Group[struct{}, ConfigSnapshot]
	mu         sync.Mutex // guards lastConfig and topo
	lastConfig *ConfigSnapshot
	topo       *topoSnapshot // the nodes of the last topology collection

	rounds *prometheus.CounterVec
}

// New returns Views whose metrics go to reg.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Views, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if logger == nil || reg == nil {
		return nil, errors.New("cluster: logger and registerer are required")
	}
	rounds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fodc_proxy_cluster_collections_total",
		Help: "Cluster-wide collections run, by kind (topology, lifecycle or config).",
	}, []string{"kind"})
	if err := reg.Register(rounds); err != nil {
		return nil, err
	}
	v := &Views{
		opts:      opts,
		logger:    logger.With("component", "cluster"),
		checker:   lifecycle.NewChecker(),
		topology:  flight.New(flight.Options[struct{}, topology.Merged]{}),
		lifecycle: flight.New(flight.Options[struct{}, lifecycle.Result]{}),
		rounds:    rounds,
	}
	v.config = flight.New(flight.Options[struct{}, ConfigSnapshot]{
		Fresh: opts.ConfigCacheTTL,
		Valid: func(_ struct{}, snap ConfigSnapshot) bool { return v.stillCurrent(&snap) },
	})
	return v, nil
}

// Topology asks every online agent for its topology and merges the
// answers. Every node gets a status: the registry truth of the agents that
// belong to it (see NodesWithoutAgent), offline ones included, or
// StatusNoAgent.
func (c *Views) Topology(ctx context.Context) (topology.Merged, error) {
	return c.topology.Do(ctx, struct{}{}, func(context.Context) (topology.Merged, error) { return c.collectTopology(), nil })
}

func (c *Views) collectTopology() topology.Merged {
	c.rounds.WithLabelValues("topology").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.TopologyTimeout)
	defer cancel()
	// Offline entries are listed too: they give their nodes a status.
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
	m := topology.Merge(answers, nil)
	c.attach(&m, answers, agents)
	return m
}

// Lifecycle collects lifecycle reports, reads the schema registry through
// a liaison and judges schema consistency per group.
func (c *Views) Lifecycle(ctx context.Context) (lifecycle.Result, error) {
	return c.lifecycle.Do(ctx, struct{}{}, func(context.Context) (lifecycle.Result, error) { return c.collectLifecycle(), nil })
}

// ConsistencyStatuses returns the last verdict per group.
func (c *Views) ConsistencyStatuses() map[string]fodcv1.ConsistencyStatus {
	return c.checker.Statuses()
}

func (c *Views) collectLifecycle() lifecycle.Result {
	c.rounds.WithLabelValues("lifecycle").Inc()
	agents := c.opts.Registry.List(registry.Filter{ExcludeOffline: true})
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
		if since, pending := ls.Pending(); pending && time.Since(since) > c.opts.LifecycleTimeout {
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
		CollectedAt: time.Now(),
	}
	return res
}

// readRegistry asks liaison agents one after another, in pod name order,
// until one reads the registry without a fatal error.
func (c *Views) readRegistry(agents []registry.Agent) lifecycle.Registry {
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
