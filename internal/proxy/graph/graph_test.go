package graph

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fodc-go/fodc/internal/proxy/series"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func queueSeries(name, op, group, remote string, extra series.Labels, vals ...float64) series.Series {
	ls := series.Labels{{Name: "group", Value: group}, {Name: "operation", Value: op}, {Name: "remote_node", Value: remote}}
	ls = append(ls, extra...)
	s := series.Series{Name: name, Labels: ls}
	for i, v := range vals {
		s.Points = append(s.Points, series.Point{TimestampMs: int64(i) * 10_000, Value: v})
	}
	return s
}

func TestPipelineFromPublishersThenSubscribers(t *testing.T) {
	le := func(v string) series.Labels { return series.Labels{{Name: "le", Value: v}} }
	liaison := series.Batch{Node: series.Node{PodName: "liaison-0"}, Series: []series.Series{
		// 100 messages in 20 s, 10 failed, latencies mostly under 10 ms.
		queueSeries(pubPrefix+"started", "write", "g", "data-0", nil, 0, 50, 100),
		queueSeries(pubPrefix+"err", "write", "g", "data-0", nil, 0, 5, 10),
		queueSeries(pubPrefix+"latency_bucket", "write", "g", "data-0", le("0.01"), 0, 45, 90),
		queueSeries(pubPrefix+"latency_bucket", "write", "g", "data-0", le("0.1"), 0, 50, 100),
		queueSeries(pubPrefix+"latency_bucket", "write", "g", "data-0", le("+Inf"), 0, 50, 100),
		queueSeries("unrelated_total", "write", "g", "data-0", nil, 0, 1),
	}}
	data0 := series.Batch{Node: series.Node{PodName: "data-0"}, Series: []series.Series{
		// The receiver's view of the edge the liaison recorded is ignored...
		queueSeries(subPrefix+"started", "write", "g", "liaison-0", nil, 0, 999),
		// ...its view of an edge nobody published is used; a counter reset
		// counts from zero.
		queueSeries(subPrefix+"started", "file_sync", "g", "data-hot-9", nil, 100, 110, 5),
	}}
	hot := series.Batch{Node: series.Node{PodName: "data-hot-1"}, Series: []series.Series{
		queueSeries(pubPrefix+"started", "file_sync", "g", "data-warm-0", nil, 0, 10),
		queueSeries(pubPrefix+"sent_bytes", "file_sync", "g", "data-warm-0", nil, 0, 1000),
	}}
	edges := Pipeline([]series.Batch{liaison, data0, hot}, func(s string) string { return s })
	require.Len(t, edges, 3)

	hotWarm := edges[0]
	require.Equal(t, "data-hot-1", hotWarm.Source)
	require.Equal(t, "data-warm-0", hotWarm.Target)
	require.InDelta(t, 1.0, hotWarm.Rate, 1e-9)
	require.NotNil(t, hotWarm.BytesPerSecond)
	require.InDelta(t, 100.0, *hotWarm.BytesPerSecond, 1e-9)

	fromSub := edges[1]
	require.Equal(t, "data-hot-9", fromSub.Source)
	require.Equal(t, "data-0", fromSub.Target)
	require.Equal(t, "subscriber", fromSub.RecordedBy)
	require.InDelta(t, 15.0/20, fromSub.Rate, 1e-9, "10 then a reset to 5")

	w := edges[2]
	require.Equal(t, Edge{Source: "liaison-0", Target: "data-0", Operation: "write", Group: "g", RecordedBy: "publisher",
		Rate: 5, ErrorRatio: 0.1, P99Seconds: w.P99Seconds}, w)
	require.NotNil(t, w.P99Seconds)
	// 99th of 100: between 0.01 (90) and 0.1 (100): 0.01 + 0.09 * 9/10.
	require.InDelta(t, 0.091, *w.P99Seconds, 1e-9)
}

func TestQuantileEdges(t *testing.T) {
	_, ok := quantile(0.99, map[float64]float64{0.1: 5})
	require.False(t, ok, "no +Inf bucket")
	_, ok = quantile(0.99, map[float64]float64{0.1: 0, posInf(): 0})
	require.False(t, ok, "no observations")
	v, ok := quantile(0.99, map[float64]float64{0.1: 1, posInf(): 10})
	require.True(t, ok)
	require.Equal(t, 0.1, v, "in the +Inf bucket: the highest finite bound")
}

func posInf() float64 { return math.Inf(1) }
