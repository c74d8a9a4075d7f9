package registry

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the registry's self-metrics. Without a Registerer they still
// exist but are not exported, so callers never check for nil.
type metrics struct {
	accepted      prometheus.Counter
	rejected      prometheus.Counter
	supersessions prometheus.Counter
	removals      *prometheus.CounterVec
	// foreign counts registrations refused because a live entry of the
	// same node belongs to another principal.
	foreign prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Registry) (*metrics, error) {
	f := promauto.With(reg)
	registrations := f.NewCounterVec(prometheus.CounterOpts{
		Name: "fodc_proxy_registrations_total",
		Help: "Agent registrations, by result (accepted or rejected).",
	}, []string{"result"})
	m := &metrics{
		accepted: registrations.WithLabelValues("accepted"),
		rejected: registrations.WithLabelValues("rejected"),
		supersessions: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_supersessions_total",
			Help: "Registry entries replaced because the same node registered again.",
		}),
		foreign: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_registrations_refused_foreign_principal_total",
			Help: "Registrations refused because a live entry of the same pod belongs to another principal (certificate, token or, unauthenticated, transport connection).",
		}),
		removals: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_removals_total",
			Help: "Agents removed from the registry, by reason.",
		}, []string{"reason"}),
	}
	for _, reason := range allReasons {
		m.removals.WithLabelValues(string(reason))
	}
	if reg != nil {
		if err := reg.Register(&agentsCollector{r: r}); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// agentsDesc describes the fodc_proxy_agents gauge.
var agentsDesc = prometheus.NewDesc("fodc_proxy_agents",
	"Agents in the registry, by status (online, unconnected or offline) and role (such as liaison or datanode-hot).",
	[]string{"status", "role"}, nil)

// agentsCollector reports the registry's agent counts at scrape time, all
// read under one lock so that they add up to the table size and are never
// stale. Every role that has an entry gets one series per status, zero
// included; a role without entries has no series.
type agentsCollector struct {
	r *Registry
}

// Describe implements prometheus.Collector.
func (c *agentsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- agentsDesc }

// Collect implements prometheus.Collector.
func (c *agentsCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.r.countsByRole()
	roleNames := make(map[string]bool)
	for k := range counts {
		roleNames[k.role] = true
	}
	for _, role := range slices.Sorted(maps.Keys(roleNames)) {
		for _, st := range allStatuses {
			ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue,
				float64(counts[roleStatus{role: role, status: st}]), string(st), role)
		}
	}
}
