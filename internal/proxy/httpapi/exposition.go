package httpapi

import (
	"errors"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/scrape"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Per-agent series appended to every /metrics answer, so that a partial
// answer is visible to Prometheus (like its own `up`).
const (
	agentUpName       = "fodc_agent_up"
	agentUpHelp       = "1 if the agent answered this collection, 0 if not."
	agentDurationName = "fodc_agent_collect_duration_seconds"
	agentDurationHelp = "How long the proxy waited for the agent's answer in this collection."
	agentRejectedName = "fodc_agent_reply_rejected"
	agentRejectedHelp = "1 when the proxy refused the agent's reply in this collection for being over a limit; reason names the limit."
)

// agentStatusBatch builds the up and duration series of every selected
// agent. The agent id is a label here on purpose: these series describe the
// agent process, not the node's data. The labels come from the registry
// entry only, never from its status, so an agent that goes offline keeps
// its series (at 0) until the entry is removed or replaced by the node's
// next registration.
func agentStatusBatch(results []scrape.Result) series.Batch {
	out := make([]series.Series, 0, 2*len(results))
	for i := range results {
		r := &results[i]
		labels := series.Labels{{Name: "agent_id", Value: r.Agent.ID}}
		if addr := decode.NodeAddress(scrape.NodeInfo(r.Agent).Node); addr != "" {
			labels = append(labels, series.Label{Name: "node_address", Value: addr})
		}
		labels = append(labels, series.Label{Name: "node_role", Value: r.Agent.Role.WireName()})
		if r.Agent.PodName != "" {
			labels = append(labels, series.Label{Name: "pod_name", Value: r.Agent.PodName})
		}
		up := 0.0
		if r.Up() {
			up = 1
		}
		out = append(out,
			series.Series{Name: agentUpName, Help: agentUpHelp, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Labels: labels, Points: []series.Point{{Value: up}}},
			series.Series{Name: agentDurationName, Help: agentDurationHelp, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Labels: labels, Points: []series.Point{{Value: r.Duration.Seconds()}}},
		)
		if le, ok := errors.AsType[*decode.LimitError](r.Err); ok {
			rl := append(slices.Clone(labels), series.Label{Name: "reason", Value: le.Reason})
			slices.SortFunc(rl, func(x, y series.Label) int { return strings.Compare(x.Name, y.Name) })
			out = append(out, series.Series{Name: agentRejectedName, Help: agentRejectedHelp, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE, Labels: rl, Points: []series.Point{{Value: 1}}})
		}
	}
	return series.Batch{Series: out}
}

// gatheredBatch converts the proxy's own registry into series so that they
// go through the same renderer as the agents' series.
func gatheredBatch(mfs []*dto.MetricFamily) series.Batch {
	var out []series.Series
	for _, mf := range mfs {
		name, help := mf.GetName(), mf.GetHelp()
		add := func(suffix string, typ fodcv1.MetricType, ls series.Labels, v float64) {
			out = append(out, series.Series{Name: name + suffix, Help: help, Type: typ, Labels: ls, Points: []series.Point{{Value: v}}})
		}
		for _, m := range mf.GetMetric() {
			ls := labelsOf(m.GetLabel())
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add("", fodcv1.MetricType_METRIC_TYPE_COUNTER, ls, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add("", fodcv1.MetricType_METRIC_TYPE_GAUGE, ls, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add("", fodcv1.MetricType_METRIC_TYPE_UNTYPED, ls, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				const typ = fodcv1.MetricType_METRIC_TYPE_HISTOGRAM
				sawInf := false
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), +1) {
						sawInf = true
					}
					add("_bucket", typ, withLabel(ls, "le", formatFloat(b.GetUpperBound())), float64(b.GetCumulativeCount()))
				}
				if !sawInf {
					add("_bucket", typ, withLabel(ls, "le", "+Inf"), float64(h.GetSampleCount()))
				}
				add("_sum", typ, ls, h.GetSampleSum())
				add("_count", typ, ls, float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				const typ = fodcv1.MetricType_METRIC_TYPE_SUMMARY
				for _, q := range s.GetQuantile() {
					add("", typ, withLabel(ls, "quantile", formatFloat(q.GetQuantile())), q.GetValue())
				}
				add("_sum", typ, ls, s.GetSampleSum())
				add("_count", typ, ls, float64(s.GetSampleCount()))
			}
		}
	}
	return series.Batch{Series: out}
}

func labelsOf(lps []*dto.LabelPair) series.Labels {
	ls := make(series.Labels, 0, len(lps))
	for _, lp := range lps {
		if lp.GetValue() != "" {
			ls = append(ls, series.Label{Name: lp.GetName(), Value: lp.GetValue()})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
	return ls
}

func withLabel(ls series.Labels, name, value string) series.Labels {
	out := make(series.Labels, 0, len(ls)+1)
	out = append(out, ls...)
	out = append(out, series.Label{Name: name, Value: value})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconvFloat(f)
}

func strconvFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// gaugeBatch is one gauge family with a series per key of values, the key
// as the label called label.
func gaugeBatch[V ~int | ~int32](name, help, label string, values map[string]V) series.Batch {
	out := make([]series.Series, 0, len(values))
	for k, v := range values {
		out = append(out, series.Series{
			Name: name, Help: help, Type: fodcv1.MetricType_METRIC_TYPE_GAUGE,
			Labels: series.Labels{{Name: label, Value: k}},
			Points: []series.Point{{Value: float64(v)}},
		})
	}
	return series.Batch{Series: out}
}

// consistencyBatch is the schema consistency verdict per group as a gauge,
// under upstream's metric name so that existing dashboards keep working.
func consistencyBatch(statuses map[string]fodcv1.ConsistencyStatus) series.Batch {
	return gaugeBatch("banyandb_fodc_schema_consistency_status",
		"Schema consistency verdict per group (1=CONSISTENT, 2=INCONSISTENT, 3=UNKNOWN).", "group", statuses)
}

// configDifferencesBatch is, per role group, how many configuration
// parameters differ between its nodes (last collection).
func configDifferencesBatch(diffs map[string]int) series.Batch {
	return gaugeBatch("fodc_proxy_config_differing_params",
		"Configuration parameters whose values differ between nodes of the same role and tier, as of the last /cluster/config collection.", "role", diffs)
}

// nodesWithoutAgentBatch is, per role, how many nodes of the last topology
// collection have no registered agent in any status.
func nodesWithoutAgentBatch(counts map[string]int) series.Batch {
	return gaugeBatch("fodc_proxy_nodes_without_agent",
		"Nodes named by the agents' topology reports (as of the last collection) that have no registered agent, by role.", "role", counts)
}
