package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// ConfigSnapshot is one configuration collection and its consistency
// report.
type ConfigSnapshot struct {
	Nodes       []configreport.NodeConfig
	Report      configreport.Report
	CollectedAt time.Time
}

// Config returns every agent's node configuration and the consistency
// report across nodes. A collection younger than ConfigCacheTTL is reused;
// concurrent callers share one collection.
func (c *Views) Config(ctx context.Context) (ConfigSnapshot, error) {
	return c.config.Do(ctx, struct{}{}, func(context.Context) (ConfigSnapshot, error) { return c.collectConfig(), nil })
}

// ForgetConfig drops the kept configuration collection, so that the next
// Config collects anew (a collection already running is still joined).
func (c *Views) ForgetConfig() { c.config.Forget(struct{}{}) }

// stillCurrent reports whether a snapshot covers exactly the registered
// agents that are not offline and no agent it lists as unsupported has opened the stream since
// (an agent that just reconnected may not have opened it yet).
func (c *Views) stillCurrent(snap *ConfigSnapshot) bool {
	agents := c.opts.Registry.List(registry.Filter{ExcludeOffline: true})
	if len(agents) != len(snap.Nodes) {
		return false
	}
	for i, a := range agents {
		n := snap.Nodes[i] // both are in registry order
		if n.AgentID != a.ID {
			return false
		}
		if !n.Supported {
			if _, ok := c.opts.Streams.NodeConfig(a.ID); ok {
				return false
			}
		}
	}
	return true
}

// ConfigDifferences returns the number of differing parameters per role
// group of the last collection (nil before the first).
func (c *Views) ConfigDifferences() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastConfig == nil {
		return nil
	}
	return configreport.DifferingParams(c.lastConfig.Report)
}

// DriftByPod returns, per pod of the last collection, how many parameters
// of its role group it does not share with a strict majority of the group
// (nil before the first collection). In a group of two that disagree,
// both nodes count the parameter.
func (c *Views) DriftByPod() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastConfig == nil {
		return nil
	}
	out := map[string]int{}
	for _, g := range c.lastConfig.Report.Groups {
		for _, d := range g.Differences {
			for _, v := range d.Values {
				if 2*len(v.Nodes) <= len(g.Nodes) {
					for _, pod := range v.Nodes {
						out[pod]++
					}
				}
			}
		}
	}
	return out
}

func (c *Views) collectConfig() ConfigSnapshot {
	c.rounds.WithLabelValues("config").Inc()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ConfigTimeout)
	defer cancel()
	// Offline agents have no streams: they would only be listed as
	// unsupported.
	agents := c.opts.Registry.List(registry.Filter{ExcludeOffline: true})
	nodes := make([]configreport.NodeConfig, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		nodes[i] = configreport.NodeConfig{AgentID: a.ID, PodName: a.PodName, Address: a.Primary.String(), Role: a.Role.String()}
		cs, ok := c.opts.Streams.NodeConfig(a.ID)
		if !ok {
			continue // no extension: listed as not supported
		}
		nodes[i].Supported = true
		if a.Status != registry.StatusOnline {
			nodes[i].Err = "agent missed its heartbeats"
			continue
		}
		wg.Go(func() {
			reply, err := cs.Request(ctx)
			if err != nil {
				nodes[i].Err = err.Error()
				return
			}
			// Whatever the agent redacted or not, no secret is stored.
			nodes[i].Config = configreport.Redact(reply)
			nodes[i].CollectedAt = time.Now()
		})
	}
	wg.Wait()
	snap := ConfigSnapshot{Nodes: nodes, Report: configreport.Build(nodes, c.opts.ConfigIgnore), CollectedAt: time.Now()}
	c.mu.Lock()
	c.lastConfig = &snap
	c.mu.Unlock()
	return snap
}
