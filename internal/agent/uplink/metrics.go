package uplink

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/fodc-go/fodc/internal/protocol"
)

type metrics struct {
	connected       prometheus.Gauge
	registrations   prometheus.Counter
	reconnects      prometheus.Counter
	heartbeats      prometheus.Counter
	commands        *prometheus.CounterVec
	replyErrors     *prometheus.CounterVec
	streamsDisabled *prometheus.CounterVec
	probes          prometheus.Counter
	probeFailures   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		connected: f.NewGauge(prometheus.GaugeOpts{
			Name: "fodc_agent_uplink_connected",
			Help: "1 while the agent is registered with the proxy, else 0.",
		}),
		registrations: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_registrations_total",
			Help: "Successful registrations with the proxy.",
		}),
		reconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_reconnects_total",
			Help: "Connection attempts after the first one.",
		}),
		heartbeats: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_heartbeats_total",
			Help: "Heartbeats sent to the proxy.",
		}),
		commands: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_commands_total",
			Help: "Commands received from the proxy by stream.",
		}, []string{"stream"}),
		replyErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_reply_errors_total",
			Help: "Replies and heartbeats that could not be sent, by stream.",
		}, []string{"stream"}),
		streamsDisabled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_streams_unimplemented_total",
			Help: "Streams switched off for a connection because the proxy does not implement them.",
		}, []string{"stream"}),
		probes: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_liveness_probes_total",
			Help: "Liveness probes sent to the proxy after heartbeats.",
		}),
		probeFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_uplink_liveness_probe_failures_total",
			Help: "Liveness probes the proxy did not answer within a heartbeat interval; two in a row end the session.",
		}),
	}
	for _, k := range []protocol.Kind{protocol.KindMetrics, protocol.KindTopology, protocol.KindNodeConfig} {
		m.commands.WithLabelValues(k.String())
		m.replyErrors.WithLabelValues(k.String())
		m.streamsDisabled.WithLabelValues(k.String())
	}
	m.replyErrors.WithLabelValues(protocol.KindRegister.String())
	return m
}
