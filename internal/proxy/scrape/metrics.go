package scrape

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fodc-go/fodc/internal/proxy/decode"
)

// metrics are the scraper's own series, all declared here. The names say
// "collection" for continuity with earlier releases' dashboards.
type metrics struct {
	rounds          *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	requests        *prometheus.CounterVec
	decodeErrors    prometheus.Counter
	repliesRejected *prometheus.CounterVec
	rejected        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_collection_rounds_total",
			Help: "Metrics collections run, by kind (latest or window).",
		}, []string{"kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fodc_proxy_collection_duration_seconds",
			Help:    "Wall time of metrics collections across all selected agents, by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_requests_total",
			Help: "Per-agent metrics requests, by kind and result.",
		}, []string{"kind", "result"}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_reply_decode_errors_total",
			Help: "Agent metrics replies that could not be decoded; each leaves its agent out of the collections waiting for it.",
		}),
		repliesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_replies_rejected_total",
			Help: "Agent metrics replies refused whole for being over a limit, by reason (series_per_reply, labels_per_series, label_name_length, label_value_length, metric_name_length).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_samples_rejected_total",
			Help: "Samples from agents left out of answers, by reason (timestamp_out_of_range: before 2000-01-01 or more than a day past their arrival; reserved_name: under a name the proxy writes itself, fodc_agent_*, fodc_proxy_*, banyandb_fodc_*, up; foreign_container: a container_name the agent did not register).",
		}, []string{"reason"}),
	}
	for _, r := range []string{decode.ReasonSeriesPerReply, decode.ReasonLabelsPerSeries, decode.ReasonLabelNameLength, decode.ReasonLabelValueLength, decode.ReasonMetricNameLength} {
		m.repliesRejected.WithLabelValues(r)
	}
	m.rejected.WithLabelValues(reasonTimestamp)
	m.rejected.WithLabelValues(reasonReserved)
	m.rejected.WithLabelValues(reasonForeignContainer)
	for _, c := range []prometheus.Collector{m.rounds, m.duration, m.requests, m.decodeErrors, m.repliesRejected, m.rejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reasonReserved and reasonForeignContainer label samples dropped for a
// name the proxy owns and for a container the agent did not register.
const (
	reasonReserved         = "reserved_name"
	reasonForeignContainer = "foreign_container"
)

// reasonTimestamp labels samples dropped for a time outside
// decode.SaneRange.
const reasonTimestamp = "timestamp_out_of_range"
