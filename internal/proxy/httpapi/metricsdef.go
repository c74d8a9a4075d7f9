package httpapi

import "github.com/prometheus/client_golang/prometheus"

// metrics are the API's own series, all declared here.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	dropped       *prometheus.CounterVec
	droppedLabels prometheus.Counter
	rejected      *prometheus.CounterVec
	answers       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_http_requests_total",
			Help: "HTTP requests served, by handler and status code.",
		}, []string{"handler", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fodc_proxy_http_request_duration_seconds",
			Help:    "HTTP request latency, by handler.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"handler"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_series_removed_total",
			Help: "Series left out of answers, by reason (duplicate, invalid: bad name or type conflict).",
		}, []string{"reason"}),
		droppedLabels: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_labels_removed_total",
			Help: "Labels left out of answers because their name is invalid or repeated.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_http_requests_rejected_total",
			Help: "HTTP requests refused with 503 because their endpoint class was full, by class (metrics, cluster, downloads).",
		}, []string{"class"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_metrics_answers_total",
			Help: "/metrics answers sent, by format (text, openmetrics) and content coding (identity, gzip, zstd).",
		}, []string{"format", "encoding"}),
	}
	for _, c := range []string{classMetrics, classCluster, classDownloads} {
		m.rejected.WithLabelValues(c)
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.dropped, m.droppedLabels, m.rejected, m.answers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
