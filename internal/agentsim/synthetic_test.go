package agentsim

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// seriesKey identifies a series by name and sorted labels.
func seriesKey(m *fodcv1.Metric) string {
	keys := slices.Sorted(maps.Keys(m.GetLabels()))
	var b strings.Builder
	b.WriteString(m.GetName())
	for _, k := range keys {
		b.WriteString("," + k + "=" + m.GetLabels()[k])
	}
	return b.String()
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestSyntheticLatest(t *testing.T) {
	for _, n := range []int{0, 1, 2, 9, 10, 17, 32, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			reply := Synthetic("banyand-data-0", n, 1)(&fodcv1.StreamMetricsResponse{})
			require.NotNil(t, reply.GetTimestamp())
			require.Len(t, reply.GetMetrics(), n)
			seen := map[string]bool{}
			for _, m := range reply.GetMetrics() {
				key := seriesKey(m)
				require.False(t, seen[key], "duplicate series %s", key)
				seen[key] = true
				require.Nil(t, m.GetTimestamp(), "latest metrics carry no timestamp")
				require.Equal(t, "banyand-data-0", m.GetLabels()["pod_name"])
				require.Equal(t, "ROLE_DATA", m.GetLabels()["node_role"])
				require.NotEqual(t, fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED, m.GetType(), key)
				histPart := strings.HasSuffix(m.GetName(), "_bucket") || strings.HasSuffix(m.GetName(), "_sum") || strings.HasSuffix(m.GetName(), "_count")
				require.Equal(t, histPart, m.GetDescription() == "", "description of %s", key)
				require.GreaterOrEqual(t, m.GetValue(), 0.0)
			}
		})
	}
}

func TestSyntheticFamilies(t *testing.T) {
	now := time.Unix(1_795_723_733, 0)
	g := newSynthetic(syntheticOptions{pod: "p", role: "ROLE_DATA", typed: true, series: 32, seed: 3, now: fixedClock(now)})
	reply := g.reply(&fodcv1.StreamMetricsResponse{})
	byName := map[string][]*fodcv1.Metric{}
	for _, m := range reply.GetMetrics() {
		byName[m.GetName()] = append(byName[m.GetName()], m)
	}
	require.Len(t, byName["banyandb_system_cpu_num"], 1)
	require.Equal(t, fodcv1.MetricType_METRIC_TYPE_GAUGE, byName["banyandb_system_cpu_num"][0].GetType())
	require.Len(t, byName["go_goroutines"], 1)
	require.NotEmpty(t, byName["banyandb_measure_total_written"])
	for _, m := range byName["banyandb_measure_total_written"] {
		require.Equal(t, fodcv1.MetricType_METRIC_TYPE_COUNTER, m.GetType())
		require.NotEmpty(t, m.GetLabels()["group"])
	}

	// Histogram: cumulative buckets per group, +Inf equal to _count.
	const hist = "banyandb_liaison_grpc_total_latency"
	counts := map[string]float64{}
	for _, m := range byName[hist+"_count"] {
		require.Equal(t, fodcv1.MetricType_METRIC_TYPE_HISTOGRAM, m.GetType())
		require.NotEmpty(t, m.GetLabels()["kind"])
		counts[m.GetLabels()["group"]] = m.GetValue()
	}
	require.Len(t, counts, 3, "32 series = 2 gauges + 3 units of 8 + 6 counters")
	require.Len(t, byName[hist+"_sum"], 3)
	buckets := map[string][]float64{}
	for _, m := range byName[hist+"_bucket"] {
		grp := m.GetLabels()["group"]
		buckets[grp] = append(buckets[grp], m.GetValue())
		if m.GetLabels()["le"] == "+Inf" {
			require.Equal(t, counts[grp], m.GetValue(), "+Inf bucket of %s", grp)
		}
	}
	for grp, vs := range buckets {
		require.Len(t, vs, len(syntheticBuckets))
		require.True(t, slices.IsSorted(vs), "buckets of %s are cumulative: %v", grp, vs)
		require.Positive(t, vs[len(vs)-1])
	}
}

func TestSyntheticGrowsAndIsDeterministic(t *testing.T) {
	t0 := time.Unix(1_795_723_700, 0)
	at := func(seed int64, now time.Time) map[string]float64 {
		g := newSynthetic(syntheticOptions{pod: "p", role: "ROLE_DATA", typed: true, series: 40, seed: seed, now: fixedClock(now)})
		out := map[string]float64{}
		for _, m := range g.reply(&fodcv1.StreamMetricsResponse{}).GetMetrics() {
			out[seriesKey(m)] = m.GetValue()
		}
		return out
	}
	before, after := at(1, t0), at(1, t0.Add(time.Minute))
	grew := 0
	for key, v := range before {
		if strings.Contains(key, "total_written") || strings.Contains(key, "_count") {
			require.Greater(t, after[key], v, "counter %s grows", key)
			grew++
		}
	}
	require.Positive(t, grew)
	require.Equal(t, before, at(1, t0), "same seed and time give the same values")
	require.NotEqual(t, before, at(2, t0), "another seed gives other values")
}

func TestSyntheticWindow(t *testing.T) {
	now := time.Unix(1_795_724_000, 0)
	const series = 12
	g := newSynthetic(syntheticOptions{pod: "p", role: "ROLE_DATA", typed: true, series: series, seed: 1, now: fixedClock(now)})
	ts := func(s int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: s} }
	tests := []struct {
		name       string
		start, end *timestamppb.Timestamp
		wantSteps  []int64
	}{
		{"aligned bounds inclusive", ts(1_795_723_700), ts(1_795_723_730), []int64{1_795_723_700, 1_795_723_710, 1_795_723_720, 1_795_723_730}},
		{"unaligned", ts(1_795_723_703), ts(1_795_723_733), []int64{1_795_723_710, 1_795_723_720, 1_795_723_730}},
		{"nanos round the start up", &timestamppb.Timestamp{Seconds: 1_795_723_700, Nanos: 1}, ts(1_795_723_719), []int64{1_795_723_710}},
		{"empty", ts(1_795_723_701), ts(1_795_723_709), nil},
		{"start only: up to now", ts(1_795_723_980), nil, []int64{1_795_723_980, 1_795_723_990, 1_795_724_000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reply := g.reply(&fodcv1.StreamMetricsResponse{StartTime: tc.start, EndTime: tc.end})
			require.Len(t, reply.GetMetrics(), len(tc.wantSteps)*series)
			var steps []int64
			for i, m := range reply.GetMetrics() {
				require.NotNil(t, m.GetTimestamp())
				require.Zero(t, m.GetTimestamp().GetNanos())
				if i%series == 0 {
					steps = append(steps, m.GetTimestamp().GetSeconds())
				}
			}
			require.Equal(t, tc.wantSteps, steps)
			// Each sample equals the latest value at that time.
			for i, step := range steps {
				latest := newSynthetic(syntheticOptions{pod: "p", role: "ROLE_DATA", typed: true, series: series, seed: 1, now: fixedClock(time.Unix(step, 0))}).
					reply(&fodcv1.StreamMetricsResponse{}).GetMetrics()
				for j, want := range latest {
					got := proto.CloneOf(reply.GetMetrics()[i*series+j])
					got.Timestamp = nil
					require.True(t, proto.Equal(want, got), "sample %d of step %d", j, step)
				}
			}
		})
	}
	t.Run("end only: five minutes", func(t *testing.T) {
		reply := g.reply(&fodcv1.StreamMetricsResponse{EndTime: ts(1_795_723_800)})
		require.Len(t, reply.GetMetrics(), 31*series)
	})
	t.Run("capped", func(t *testing.T) {
		reply := g.reply(&fodcv1.StreamMetricsResponse{StartTime: ts(1_795_000_000), EndTime: ts(1_795_724_000)})
		require.Len(t, reply.GetMetrics(), maxSyntheticSteps*series)
		last := reply.GetMetrics()[len(reply.GetMetrics())-1]
		require.Equal(t, int64(1_795_724_000), last.GetTimestamp().GetSeconds(), "the latest steps are kept")
	})
}

func TestSyntheticIdentity(t *testing.T) {
	tests := []struct {
		name       string
		opts       syntheticOptions
		wantLabels map[string]string
		wantAbsent []string
		typed      bool
	}{
		{
			name:       "HEAD liaison",
			opts:       syntheticOptions{pod: "l-0", role: "ROLE_LIAISON", container: "liaison", nodeLabels: map[string]string{"type": "hot", "zone": "z1", "pod_name": "x", "empty": ""}, typed: true},
			wantLabels: map[string]string{"pod_name": "l-0", "node_role": "ROLE_LIAISON", "container_name": "liaison", "node_type": "hot", "node_zone": "z1"},
			wantAbsent: []string{"node_pod_name", "node_empty"},
			typed:      true,
		},
		{
			name:       "v0.10.0 data",
			opts:       syntheticOptions{pod: "d-0", role: "ROLE_DATA"},
			wantLabels: map[string]string{"pod_name": "d-0", "node_role": "ROLE_DATA"},
			wantAbsent: []string{"container_name"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.series = 20
			for _, m := range newSynthetic(tc.opts).reply(&fodcv1.StreamMetricsResponse{}).GetMetrics() {
				for k, v := range tc.wantLabels {
					require.Equal(t, v, m.GetLabels()[k], "label %s of %s", k, m.GetName())
				}
				for _, k := range tc.wantAbsent {
					require.NotContains(t, m.GetLabels(), k)
				}
				require.Equal(t, tc.typed, m.GetType() != fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED)
			}
		})
	}
}

func BenchmarkSyntheticLatest(b *testing.B) {
	gen := Synthetic("banyand-data-0", 1000, 1)
	cmd := &fodcv1.StreamMetricsResponse{}
	b.ReportAllocs()
	for b.Loop() {
		gen(cmd)
	}
}
