package decode

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

var (
	received = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
	replyTS  = timestamppb.New(time.Date(2026, 11, 26, 19, 0, 0, 500e6, time.UTC))
)

func ts(sec int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: sec} }

func ls(kv ...string) series.Labels {
	out := make(series.Labels, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, series.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestBatchLabels(t *testing.T) {
	node := series.Node{AgentID: "a1", PodName: "pod-0", Role: "ROLE_DATA", IP: "10.0.0.1", Port: 17913}
	tests := []struct {
		name   string
		info   NodeInfo
		labels map[string]string
		want   series.Labels
	}{
		{
			name:   "identity added, sorted, no agent id",
			info:   NodeInfo{Node: node},
			labels: map[string]string{"shard": "0", "group": "sw"},
			want: ls("group", "sw", "node_address", "10.0.0.1:17913", "node_role", "ROLE_DATA",
				"pod_name", "pod-0", "shard", "0"),
		},
		{
			name:   "node identity wins; the agent's other values are kept as exported_<name>",
			info:   NodeInfo{Node: node, Labels: map[string]string{"type": "hot"}},
			labels: map[string]string{"node_role": "ROLE_LIAISON", "pod_name": "other", "node_type": "cold", "type": "mine"},
			want: ls("exported_node_role", "ROLE_LIAISON", "exported_node_type", "cold", "exported_pod_name", "other",
				"node_address", "10.0.0.1:17913", "node_role", "ROLE_DATA", "node_type", "hot",
				"pod_name", "pod-0", "type", "mine"),
		},
		{
			name:   "the same value stays one label",
			info:   NodeInfo{Node: node},
			labels: map[string]string{"pod_name": "pod-0", "node_role": "ROLE_DATA"},
			want:   ls("node_address", "10.0.0.1:17913", "node_role", "ROLE_DATA", "pod_name", "pod-0"),
		},
		{
			name:   "a renamed label meets the agent's own exported_ label: the smaller value stays",
			info:   NodeInfo{Node: node},
			labels: map[string]string{"pod_name": "b", "exported_pod_name": "a"},
			want:   ls("exported_pod_name", "a", "node_address", "10.0.0.1:17913", "node_role", "ROLE_DATA", "pod_name", "pod-0"),
		},
		{
			name: "registered labels prefixed, pod and container names skipped, empty values skipped",
			info: NodeInfo{
				Node:   series.Node{Role: "ROLE_LIAISON"},
				Labels: map[string]string{"zone": "z1", "pod_name": "p", "container_name": "c", "empty": "", "role": "shadow"},
			},
			labels: map[string]string{"x": "1"},
			want:   ls("node_role", "ROLE_LIAISON", "node_zone", "z1", "x", "1"),
		},
		{
			name:   "empty sample values dropped, invalid UTF-8 repaired",
			info:   NodeInfo{},
			labels: map[string]string{"a": "", "b": "ok\xff", "c\xfe": "v"},
			want:   ls("b", "ok\uFFFD", "c\uFFFD", "v"),
		},
		{
			name:   "address without port, IPv6",
			info:   NodeInfo{Node: series.Node{IP: "::1"}},
			labels: nil,
			want:   ls("node_address", "::1"),
		},
		{
			name:   "IPv6 with port",
			info:   NodeInfo{Node: series.Node{IP: "fe80::1", Port: 80}},
			labels: nil,
			want:   ls("node_address", "[fe80::1]:80"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "m", Labels: tt.labels, Value: 1}}}
			b := fromMessage(tt.info, reply, received, false)
			require.Equal(t, tt.info.Node, b.Node)
			require.Len(t, b.Series, 1)
			require.Equal(t, tt.want, b.Series[0].Labels)
			// The decoder agrees with the reference, for the replies that
			// can go on the wire (invalid UTF-8 cannot).
			if raw, err := proto.Marshal(reply); err == nil {
				got, err := Batch(tt.info, raw, received, false)
				require.NoError(t, err)
				require.Len(t, got.Series, 1)
				require.Equal(t, tt.want, got.Series[0].Labels)
			}
		})
	}
}

func TestBatchTimestamps(t *testing.T) {
	tests := []struct {
		name    string
		replyTS *timestamppb.Timestamp
		metric  *timestamppb.Timestamp
		want    int64
	}{
		{"metric time wins", replyTS, &timestamppb.Timestamp{Seconds: 100, Nanos: 250e6}, 100250},
		{"reply time", replyTS, nil, replyTS.AsTime().UnixMilli()},
		{"receive time", nil, nil, received.UnixMilli()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := &fodcv1.StreamMetricsRequest{
				Timestamp: tt.replyTS,
				Metrics:   []*fodcv1.Metric{{Name: "m", Value: 2, Timestamp: tt.metric}},
			}
			b := fromMessage(NodeInfo{}, reply, received, false)
			require.Equal(t, []series.Point{{TimestampMs: tt.want, Value: 2}}, b.Series[0].Points)
		})
	}
}

func TestBatchLatestSortedOnePointEach(t *testing.T) {
	reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
		{Name: "b", Labels: map[string]string{"k": "2"}, Value: 1, Description: "B help", Type: fodcv1.MetricType_METRIC_TYPE_GAUGE},
		{Name: "a", Labels: map[string]string{"k": "1"}, Value: 2},
		{Name: "b", Labels: map[string]string{"k": "1"}, Value: 3},
		{Name: "a", Value: 4},
	}}
	b := fromMessage(NodeInfo{}, reply, received, false)
	got := make([]string, 0, len(b.Series))
	for _, s := range b.Series {
		require.Len(t, s.Points, 1)
		got = append(got, fmt.Sprintf("%s%s=%g", s.Name, s.Labels, s.Points[0].Value))
	}
	require.Equal(t, []string{`a{}=4`, `a{k="1"}=2`, `b{k="1"}=3`, `b{k="2"}=1`}, got)
	require.Equal(t, "B help", b.Series[3].Help)
	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_GAUGE, b.Series[3].Type)
	// Points are not shared: appending to one cannot clobber another.
	b.Series[0].Points = append(b.Series[0].Points, series.Point{Value: 9})
	b.Series[0].Labels = append(b.Series[0].Labels, series.Label{Name: "z", Value: "z"})
	require.Equal(t, 2.0, b.Series[1].Points[0].Value)
	require.Equal(t, ls("k", "1"), b.Series[1].Labels)
}

func TestBatchWindowGroups(t *testing.T) {
	lab := map[string]string{"k": "v"}
	reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
		{Name: "m", Labels: lab, Value: 3, Timestamp: ts(30)},
		{Name: "m", Labels: lab, Value: 1, Timestamp: ts(10), Type: fodcv1.MetricType_METRIC_TYPE_COUNTER},
		{Name: "m", Labels: map[string]string{"k": "w"}, Value: 7, Timestamp: ts(10)},
		{Name: "m", Labels: lab, Value: 2, Timestamp: ts(20), Description: "first help"},
		{Name: "m", Labels: lab, Value: 4, Timestamp: ts(30), Description: "second help"}, // same time: last wins
		{Name: "a", Value: 5, Timestamp: ts(5)},
	}}
	b := fromMessage(NodeInfo{Node: series.Node{PodName: "p"}}, reply, received, true)
	require.Equal(t, []series.Series{
		{Name: "a", Labels: ls("pod_name", "p"), Points: []series.Point{{TimestampMs: 5000, Value: 5}}},
		{
			Name: "m", Help: "first help", Type: fodcv1.MetricType_METRIC_TYPE_COUNTER,
			Labels: ls("k", "v", "pod_name", "p"),
			Points: []series.Point{{TimestampMs: 10000, Value: 1}, {TimestampMs: 20000, Value: 2}, {TimestampMs: 30000, Value: 4}},
		},
		{Name: "m", Labels: ls("k", "w", "pod_name", "p"), Points: []series.Point{{TimestampMs: 10000, Value: 7}}},
	}, b.Series)
}

func TestBatchEmpty(t *testing.T) {
	node := series.Node{AgentID: "x"}
	for _, window := range []bool{false, true} {
		b := fromMessage(NodeInfo{Node: node}, &fodcv1.StreamMetricsRequest{}, received, window)
		require.Equal(t, node, b.Node)
		require.Empty(t, b.Series)
		b = fromMessage(NodeInfo{Node: node}, nil, received, window)
		require.Empty(t, b.Series)
	}
}

// TestBatchDeterministic feeds the same reply with metrics shuffled; map
// order varies on every decode as well.
func TestBatchDeterministic(t *testing.T) {
	var ms []*fodcv1.Metric
	for i := range 50 {
		ms = append(ms, &fodcv1.Metric{
			Name:      fmt.Sprintf("m%d", i%7),
			Labels:    map[string]string{"a": fmt.Sprint(i % 5), "b": "x", "c": fmt.Sprint(i % 3), "d": "y"},
			Value:     float64(i),
			Timestamp: ts(int64(i % 4)),
		})
	}
	info := NodeInfo{Labels: map[string]string{"type": "hot", "zone": "z", "rack": "r"}, Node: series.Node{Role: "R"}}
	for _, window := range []bool{false, true} {
		want := fromMessage(info, &fodcv1.StreamMetricsRequest{Metrics: ms}, received, window)
		for range 5 {
			shuffled := slicesClone(ms)
			rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got := fromMessage(info, &fodcv1.StreamMetricsRequest{Metrics: shuffled}, received, window)
			if window {
				require.Equal(t, want, got)
			} else {
				// Latest keeps every metric; equal keys keep reply order, so
				// compare content regardless of value among equals.
				require.Equal(t, len(want.Series), len(got.Series))
				for i := range want.Series {
					require.Equal(t, want.Series[i].Name, got.Series[i].Name)
					require.Equal(t, want.Series[i].Labels, got.Series[i].Labels)
				}
			}
		}
	}
}

func slicesClone(ms []*fodcv1.Metric) []*fodcv1.Metric { return append([]*fodcv1.Metric(nil), ms...) }

func TestBatchFixture(t *testing.T) {
	rec, err := fixture.Load("head-agent-liaison-fake")
	require.NoError(t, err)
	frames := rec.Frames(fixture.MethodStreamMetrics, fixture.AgentToProxy)
	require.Len(t, frames, 3)
	info := NodeInfo{
		Node:       series.Node{AgentID: "id", PodName: "banyand-liaison-0", Role: "ROLE_LIAISON", IP: "127.0.0.1", Port: 17913},
		Labels:     map[string]string{"type": "hot", "zone": "z1"},
		Containers: []string{"liaison"},
	}

	m, err := frames[0].Message()
	require.NoError(t, err)
	reply := m.(*fodcv1.StreamMetricsRequest)
	b := fromMessage(info, reply, received, false)
	require.Len(t, b.Series, len(reply.Metrics))
	var found bool
	for _, s := range b.Series {
		// The HEAD agent stamps identity itself; the proxy only adds the address.
		require.Equal(t, "hot", s.Labels.Get("node_type"))
		require.Equal(t, "127.0.0.1:17913", s.Labels.Get("node_address"))
		require.Equal(t, "liaison", s.Labels.Get("container_name"))
		require.Equal(t, reply.Timestamp.AsTime().UnixMilli(), s.Points[0].TimestampMs)
		if s.Name == "fixture_queue_depth" {
			found = true
			require.Equal(t, 42.5, s.Points[0].Value)
			require.Equal(t, "Current queue depth.", s.Help)
		}
	}
	require.True(t, found)

	m, err = frames[2].Message()
	require.NoError(t, err)
	reply = m.(*fodcv1.StreamMetricsRequest)
	b = fromMessage(info, reply, received, true)
	require.Less(t, len(b.Series), len(reply.Metrics))
	points := 0
	for _, s := range b.Series {
		points += len(s.Points)
		for i := 1; i < len(s.Points); i++ {
			require.Less(t, s.Points[i-1].TimestampMs, s.Points[i].TimestampMs)
		}
		require.Zero(t, s.Points[0].TimestampMs%1000, "window samples have whole seconds")
	}
	require.Equal(t, len(reply.Metrics), points, "the agent sends no duplicate times")
}

// TestBatchContentAcrossBlocks checks that sharing and block copies keep
// every string intact, with enough data to span several blocks and values
// too long to copy.
func TestBatchContentAcrossBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	long := strings.Repeat("v", maxBlockCopy+1)
	var ms []*fodcv1.Metric
	for i := range 3000 {
		labels := map[string]string{
			"a":                  fmt.Sprint(rng.IntN(3)),
			fmt.Sprint("k", i%7): fmt.Sprintf("value-%d", rng.IntN(4)),
			"pod_name":           "p",
		}
		if i%100 == 0 {
			labels["long"] = long
		}
		ms = append(ms, &fodcv1.Metric{Name: fmt.Sprintf("m_%d", rng.IntN(50)), Labels: labels,
			Description: fmt.Sprintf("help %d", i%3), Value: float64(i), Timestamp: ts(int64(i % 5))})
	}
	for _, window := range []bool{false, true} {
		b := fromMessage(NodeInfo{Node: series.Node{Role: "R"}}, &fodcv1.StreamMetricsRequest{Metrics: ms}, received, window)
		want := make(map[string]bool)
		for _, m := range ms {
			want[m.Name+labelString(m.Labels)] = true
		}
		for _, s := range b.Series {
			require.True(t, want[s.Name+s.Labels.String()], "%s%s", s.Name, s.Labels)
		}
		if window {
			require.Len(t, b.Series, len(want))
			require.Less(t, len(b.Series), len(ms))
		} else {
			require.Len(t, b.Series, len(ms))
			for _, s := range b.Series {
				require.Equal(t, fmt.Sprintf("help %d", int(s.Points[0].Value)%3), s.Help)
			}
		}
	}
}

// labelString renders a reply's labels plus the node role like
// series.Labels.String.
func labelString(m map[string]string) string {
	ls := series.Labels{{Name: "node_role", Value: "R"}}
	for k, v := range m {
		ls = append(ls, series.Label{Name: k, Value: v})
	}
	sortLabels(ls)
	return ls.String()
}
