package decode

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// fromMessage converts reply into a series.Batch for info's node.
//
// Every sample gets its labels as a sorted series.Labels without empty
// values and with invalid UTF-8 replaced by U+FFFD. The node's identity is
// added as node_<k> for each registered label k (except pod_name and
// container_name), node_role, pod_name and node_address ("ip:port") when
// the value is not empty. These identity labels win: a sample's label of the
// same name and value stays one label, one with another value is kept as
// exported_<name>. Samples under a name the proxy writes itself
// (ReservedName) and samples whose container_name the agent did not
// register are dropped. The agent id is never added: it changes on every
// reconnect.
//
// A point's time is Metric.timestamp if set, else reply.timestamp if set,
// else receivedAt. With window false every Metric becomes one Series with
// one Point. With window true Metrics with equal name and labels form one
// Series whose points ascend in time; of several points with the same time
// the last one in the reply is kept. A series' Help is the first non-empty
// description and its Type the first specified type in reply order.
//
// The result's Series are in the order build gives them. fromMessage never
// modifies reply, and the result keeps none of its memory alive except
// strings longer than 1 KiB: a reply can be released right away.
//
// It is the reference the tests hold Batch to: Batch must produce exactly
// what fromMessage produces for the unmarshalled message.
func fromMessage(info NodeInfo, reply *fodcv1.StreamMetricsRequest, receivedAt time.Time, window bool) series.Batch {
	b, _ := fromMessageIn(info, reply, receivedAt, window, TimeRange{})
	return b
}

// fromMessageIn is fromMessage that first leaves out, and counts, the
// metrics whose time is outside valid: the reference of Decode.
func fromMessageIn(info NodeInfo, reply *fodcv1.StreamMetricsRequest, receivedAt time.Time, window bool, valid TimeRange) (series.Batch, int) {
	// The time of a metric, as in the doc comment above; ok is false when
	// it lies outside valid. Seconds that milliseconds cannot hold are
	// outside any bounded range.
	timeOf := func(ts *timestamppb.Timestamp, fallback int64) (ms int64, ok bool) {
		if ts == nil {
			return fallback, fallback >= validMin(valid) && fallback <= validMax(valid)
		}
		ms = toMillis(ts)
		if valid == (TimeRange{}) {
			return ms, true
		}
		if sec := ts.GetSeconds(); sec > 1e15 || sec < -1e15 {
			return ms, false
		}
		return ms, ms >= validMin(valid) && ms <= validMax(valid)
	}
	defaultMs, defaultOK := timeOf(reply.GetTimestamp(), receivedAt.UnixMilli())
	dropped := 0
	var metrics []*fodcv1.Metric
	var times []int64
	for _, m := range reply.GetMetrics() {
		ms, ok := defaultMs, defaultOK
		if m.GetTimestamp() != nil {
			ms, ok = timeOf(m.GetTimestamp(), 0)
		}
		if !ok {
			dropped++
			continue
		}
		metrics = append(metrics, m)
		times = append(times, ms)
	}
	return fromMetrics(info, metrics, times, window), dropped
}

func validMin(r TimeRange) int64 {
	if r.Min.IsZero() {
		return math.MinInt64
	}
	return r.Min.UnixMilli()
}

func validMax(r TimeRange) int64 {
	if r.Max.IsZero() {
		return math.MaxInt64
	}
	return r.Max.UnixMilli()
}

// fromMetrics builds the batch of metrics whose times are times.
func fromMetrics(info NodeInfo, metrics []*fodcv1.Metric, times []int64, window bool) series.Batch {
	out := series.Batch{Node: info.Node}
	if len(metrics) == 0 {
		return out
	}
	extra := nodeLabels(info)
	// Series under the proxy's own names are dropped.
	{
		var keptM []*fodcv1.Metric
		var keptT []int64
		for i, m := range metrics {
			if !ReservedName(validUTF8(m.GetName())) {
				keptM, keptT = append(keptM, m), append(keptT, times[i])
			}
		}
		metrics, times = keptM, keptT
	}

	// One backing array for every label set of the reply: one allocation
	// instead of one per sample .
	total := 0
	for _, m := range metrics {
		total += len(m.GetLabels()) + len(extra)
	}
	buf := make(series.Labels, 0, total)
	keys := make([]key, 0, len(metrics))
	for i, m := range metrics {
		start := len(buf)
		buf = appendLabels(buf, m.GetLabels(), extra)
		if !ownedContainer(buf[start:], info.Containers) {
			buf = buf[:start]
			continue
		}
		keys = append(keys, key{
			name:   validUTF8(m.GetName()),
			labels: buf[start:len(buf):len(buf)],
			ms:     times[i],
			idx:    int32(i),
			value:  m.GetValue(),
			help:   m.GetDescription(),
			typ:    m.GetType(),
		})
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
	// Checked plainly, name by name: the promise the renderer relies on.
	out.CleanLabels = len(out.Series) > 0
	for _, s := range out.Series {
		for _, l := range s.Labels {
			if !series.ValidLabelName(l.Name) {
				out.CleanLabels = false
			}
		}
	}
	return out
}
