package agentsvc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's own series, all declared here.
type metrics struct {
	streamsOpen      *prometheus.GaugeVec
	streamsRejected  *prometheus.CounterVec
	streamErrors     *prometheus.CounterVec
	slowDisconnects  *prometheus.CounterVec
	repliesDiscarded *prometheus.CounterVec
	heartbeats       prometheus.Counter
	// registrationsRejected counts registrations and heartbeats refused
	// for a limit, by reason.
	registrationsRejected *prometheus.CounterVec
	// authFailures counts streams refused by authentication, by code.
	authFailures *prometheus.CounterVec
	// messagesTooLarge counts messages over --grpc-max-msg-size.
	messagesTooLarge *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fodc_proxy_agent_streams_open",
			Help: "Agent streams currently open, by stream kind.",
		}, []string{"stream"}),
		streamsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_streams_rejected_total",
			Help: "Agent streams refused at open, by stream kind and reason.",
		}, []string{"stream", "reason"}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_stream_errors_total",
			Help: "Agent streams that ended with an error, by stream kind and gRPC code.",
		}, []string{"stream", "code"}),
		slowDisconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_slow_disconnects_total",
			Help: "Agent streams closed because the agent left a command unanswered past --agent-reply-timeout.",
		}, []string{"stream"}),
		repliesDiscarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_replies_discarded_total",
			Help: "Agent replies dropped because their caller had given up or no command was outstanding.",
		}, []string{"stream", "reason"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_heartbeats_total",
			Help: "Heartbeats received from agents.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_auth_failures_total",
			Help: "Agent streams refused by authentication (no or a wrong token, no certificate where one is required), by gRPC code.",
		}, []string{"code"}),
		registrationsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_registrations_rejected_total",
			Help: "Registrations and heartbeats refused for being over a limit, by reason (labels, containers, name_length, value_length, rate).",
		}, []string{"reason"}),
	}
	m.messagesTooLarge = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fodc_proxy_agent_messages_too_large_total",
		Help: "Agent messages refused for being over --grpc-max-msg-size (gRPC ends the stream), by stream kind.",
	}, []string{"stream"})
	for _, r := range []string{reasonLabels, reasonContainers, reasonNameLength, reasonValueLength, reasonRate} {
		m.registrationsRejected.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.streamsOpen, m.streamsRejected, m.streamErrors, m.slowDisconnects, m.repliesDiscarded, m.heartbeats, m.registrationsRejected, m.authFailures, m.messagesTooLarge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
