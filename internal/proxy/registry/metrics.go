package registry

import (
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
var agentsDesc = prometheus.NewDesc("fodc_proxy_agents", "Agents in the registry, by status (online or unconnected).", []string{"status"}, nil)

// agentsCollector reports the registry's agent counts at scrape time, both
// read under one lock so that they add up to the total.
type agentsCollector struct {
	r *Registry
}

// Describe implements prometheus.Collector.
func (c *agentsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- agentsDesc }

// Collect implements prometheus.Collector.
func (c *agentsCollector) Collect(ch chan<- prometheus.Metric) {
	online, total := c.r.Counts()
	ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(online), string(StatusOnline))
	ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(total-online), string(StatusUnconnected))
}
