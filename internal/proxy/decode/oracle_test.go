package decode

import (
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// fromMessage converts reply into a series.Batch for info's node.
//
// Every sample gets its labels as a sorted series.Labels without empty
// values and with invalid UTF-8 replaced by U+FFFD. The node's identity is
// added as node_<k> for each registered label k (except pod_name and
// container_name), node_role, pod_name and node_address ("ip:port"), each
// only when the sample does not carry that label already and the value is
// not empty. The agent id is never added: it changes on every reconnect.
//
// A point's time is Metric.timestamp if set, else reply.timestamp if set,
// else receivedAt. With window false every Metric becomes one Series with
// one Point. With window true Metrics with equal name and labels form one
// Series whose points ascend in time; of several points with the same time
// the last one in the reply is kept. A series' Help is the first non-empty
// description and its Type the first specified type in reply order.
//
// The result's Series are sorted by name, then label set. fromMessage never
// modifies reply, and the result keeps none of its memory alive except
// strings longer than 1 KiB: a reply can be released right away.
//
// It is the reference the tests hold Batch to: Batch must produce exactly
// what fromMessage produces for the unmarshalled message.
func fromMessage(info NodeInfo, reply *fodcv1.StreamMetricsRequest, receivedAt time.Time, window bool) series.Batch {
	out := series.Batch{Node: info.Node}
	metrics := reply.GetMetrics()
	if len(metrics) == 0 {
		return out
	}
	extra := nodeLabels(info)
	defaultMs := receivedAt.UnixMilli()
	if ts := reply.GetTimestamp(); ts != nil {
		defaultMs = toMillis(ts)
	}

	// One backing array for every label set of the reply: one allocation
	// instead of one per sample .
	total := 0
	for _, m := range metrics {
		total += len(m.GetLabels()) + len(extra)
	}
	buf := make(series.Labels, 0, total)
	keys := make([]key, len(metrics))
	for i, m := range metrics {
		start := len(buf)
		buf = appendLabels(buf, m.GetLabels(), extra)
		ms := defaultMs
		if ts := m.GetTimestamp(); ts != nil {
			ms = toMillis(ts)
		}
		keys[i] = key{
			name:   validUTF8(m.GetName()),
			labels: buf[start:len(buf):len(buf)],
			ms:     ms,
			idx:    int32(i),
			value:  m.GetValue(),
			help:   m.GetDescription(),
			typ:    m.GetType(),
		}
	}
	// An upper bound of the string bytes the series keep, to size the
	// first string block of small replies.
	upper := 0
	for _, l := range buf {
		upper += len(l.Name) + len(l.Value)
	}
	for _, m := range metrics {
		upper += len(m.GetName()) + len(m.GetDescription())
	}
	out.Series = build(keys, window, newSharer(upper, false))
	return out
}
