package recorder

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/scrape"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const gauge = fodcv1.MetricType_METRIC_TYPE_GAUGE

func newRecorder(t testing.TB, opts Options) *Recorder {
	t.Helper()
	if opts.BudgetBytes == 0 {
		opts.BudgetBytes = 64 << 20
	}
	r, err := New(opts)
	require.NoError(t, err)
	return r
}

// fam builds a gauge family whose samples are name{k="v"} pairs given as
// "v" label values of label "s", each with value and timestamp.
func fam(name string, samples ...scrape.Sample) []scrape.Family {
	return []scrape.Family{{Name: name, Help: name + " help", Type: gauge, Samples: samples}}
}

func smp(name, series string, v float64, ts int64) scrape.Sample {
	return scrape.Sample{Name: name, Labels: []scrape.Label{{Name: "s", Value: series}}, Value: v, TimestampMs: ts}
}

// got is one reported sample.
type got struct {
	series string
	t      int64
	v      float64
}

func collect(ms []*fodcv1.Metric) []got {
	out := make([]got, 0, len(ms))
	for _, m := range ms {
		out = append(out, got{series: m.GetName() + "/" + m.GetLabels()["s"], t: m.GetTimestamp().AsTime().UnixMilli(), v: m.GetValue()})
	}
	return out
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"ok", Options{BudgetBytes: 1}, true},
		{"zero budget", Options{}, false},
		{"negative budget", Options{BudgetBytes: -1}, false},
		{"chunk samples too large", Options{BudgetBytes: 1, ChunkSamples: maxChunkSamples + 1}, false},
		{"negative chunk samples", Options{BudgetBytes: 1, ChunkSamples: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opts)
			if tc.ok {
				require.NoError(t, err)
				require.NotNil(t, r)
				return
			}
			require.Error(t, err)
			require.Nil(t, r)
		})
	}
}

// TestWindowKeepsEachSampleTime recreates the misalignment of PROTOCOL.md
// §8: the upstream recorder pairs the i-th value of every series with the
// i-th timestamp of one shared ring, so a series that appears late, skips
// scrapes (a port failed) or shares the recorder with extra batches (KTM)
// gets other scrapes' times. Here every value encodes its own time
// (v = t/1000 + series offset), so any pairing error shows.
func TestWindowKeepsEachSampleTime(t *testing.T) {
	r := newRecorder(t, Options{ChunkSamples: 4})
	want := map[string][]got{}
	add := func(target string, ts int64, names ...string) {
		var ss []scrape.Sample
		for i, n := range names {
			v := float64(ts)/1000 + float64(i)*0.25
			ss = append(ss, smp("m", n, v, 0))
			want[n] = append(want[n], got{series: "m/" + n, t: ts, v: v})
		}
		r.Append(target, ts, fam("m", ss...))
	}
	for i := range 12 {
		ts := int64(1_000_000 + i*10_000 + (i%3)*7) // jittered
		switch {
		case i < 3: // port 2 not up yet: "late" appears at scrape 3
			add("port1", ts, "always")
		case i == 6 || i == 7: // port 2 fails: "late" skips two scrapes
			add("port1", ts, "always")
			r.MarkTargetDown("port2")
		default:
			add("port1", ts, "always")
			add("port2", ts+3, "late")
		}
		if i%4 == 1 { // an extra batch of another source between scrapes
			add("ktm", ts+5_000, "ktm")
		}
	}

	all := collect(r.Window(time.Time{}, time.Time{}, false, false))
	bySeries := map[string][]got{}
	for _, g := range all {
		bySeries[g.series] = append(bySeries[g.series], g)
	}
	require.Len(t, bySeries, 3)
	for name, w := range want {
		require.Equal(t, w, bySeries["m/"+name], name)
	}
	require.Len(t, bySeries["m/late"], 7, "late joined at scrape 3 and skipped two scrapes")
	for _, g := range all {
		offset := map[string]float64{"m/always": 0, "m/late": 0, "m/ktm": 0}[g.series]
		require.InDelta(t, float64(g.t)/1000+offset, g.v, 1e-9, "value reported with its own time: %+v", g)
	}
}

func TestWindowBounds(t *testing.T) {
	r := newRecorder(t, Options{ChunkSamples: 2})
	for _, ts := range []int64{1000, 2000, 3000, 4000, 5000} {
		r.Append("a", ts, fam("m", smp("m", "x", float64(ts), 0)))
	}
	ms := func(ms int64) time.Time { return time.UnixMilli(ms) }
	tests := []struct {
		name             string
		start, end       time.Time
		hasStart, hasEnd bool
		want             []int64
	}{
		{"both bounds inclusive", ms(2000), ms(4000), true, true, []int64{2000, 3000, 4000}},
		{"open start", time.Time{}, ms(2000), false, true, []int64{1000, 2000}},
		{"open end", ms(4000), time.Time{}, true, false, []int64{4000, 5000}},
		{"open both", time.Time{}, time.Time{}, false, false, []int64{1000, 2000, 3000, 4000, 5000}},
		{"single point", ms(3000), ms(3000), true, true, []int64{3000}},
		{"sub-millisecond start includes next ms", ms(1999).Add(500 * time.Microsecond), ms(2000), true, true, []int64{2000}},
		{"start just after a sample excludes it", ms(2000).Add(time.Nanosecond), ms(3000), true, true, []int64{3000}},
		{"end just before a sample excludes it", ms(2000), ms(3000).Add(-time.Nanosecond), true, true, []int64{2000}},
		{"whole seconds like the proxy sends", time.Unix(2, 0), time.Unix(4, 0), true, true, []int64{2000, 3000, 4000}},
		{"empty range", ms(2500), ms(2600), true, true, nil},
		{"inverted range", ms(4000), ms(2000), true, true, nil},
		{"before everything", ms(0), ms(999), true, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var times []int64
			for _, g := range collect(r.Window(tc.start, tc.end, tc.hasStart, tc.hasEnd)) {
				require.InDelta(t, float64(g.t), g.v, 0)
				times = append(times, g.t)
			}
			require.Equal(t, tc.want, times)
		})
	}
}

func TestLatest(t *testing.T) {
	r := newRecorder(t, Options{})
	hist := []scrape.Family{{
		Name: "lat_seconds", Help: "Latency.", Type: fodcv1.MetricType_METRIC_TYPE_HISTOGRAM,
		Samples: []scrape.Sample{
			{Name: "lat_seconds_bucket", Labels: []scrape.Label{{Name: "le", Value: "+Inf"}}, Value: 4},
			{Name: "lat_seconds_count", Value: 4},
			{Name: "lat_seconds_sum", Value: 0.5, TimestampMs: 1_500}, // the exposition's own time
		},
	}}
	r.Append("a", 1_000, hist)
	hist[0].Samples[0].Value, hist[0].Samples[1].Value, hist[0].Samples[2].Value = 6, 6, 0.75
	hist[0].Samples[2].TimestampMs = 2_500
	r.Append("a", 2_000, hist)

	latest := r.Latest()
	require.Len(t, latest, 3)
	type row struct {
		name   string
		labels map[string]string
		v      float64
		t      int64
	}
	var rows []row
	for _, m := range latest {
		require.Equal(t, "Latency.", m.GetDescription(), "HELP kept on every component")
		require.Equal(t, fodcv1.MetricType_METRIC_TYPE_HISTOGRAM, m.GetType())
		rows = append(rows, row{m.GetName(), m.GetLabels(), m.GetValue(), m.GetTimestamp().AsTime().UnixMilli()})
	}
	require.Equal(t, []row{
		{"lat_seconds_bucket", map[string]string{"le": "+Inf"}, 6, 2_000},
		{"lat_seconds_count", nil, 6, 2_000},
		{"lat_seconds_sum", nil, 0.75, 2_500},
	}, rows)

	// The result is a copy: changing it does not change the recorder.
	latest[0].Labels["le"] = "changed"
	require.Equal(t, "+Inf", r.Latest()[0].GetLabels()["le"])
}

func TestStaleSeries(t *testing.T) {
	r := newRecorder(t, Options{ChunkSamples: 3})
	names := func(ms []*fodcv1.Metric) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.GetLabels()["s"])
		}
		return out
	}
	r.Append("a", 1000, fam("m", smp("m", "x", 1, 0), smp("m", "y", 1, 0)))
	r.Append("b", 1000, fam("m", smp("m", "z", 1, 0)))
	require.Equal(t, []string{"x", "y", "z"}, names(r.Latest()))

	r.Append("a", 2000, fam("m", smp("m", "x", 2, 0))) // y disappeared from a
	require.Equal(t, []string{"x", "z"}, names(r.Latest()), "y is no longer current")
	require.Equal(t, []got{{"m/x", 1000, 1}, {"m/x", 2000, 2}, {"m/y", 1000, 1}, {"m/z", 1000, 1}},
		collect(r.Window(time.Time{}, time.Time{}, false, false)), "y kept in the window")

	r.MarkTargetDown("b")
	require.Equal(t, []string{"x"}, names(r.Latest()))
	r.MarkTargetDown("unknown") // no effect

	r.Append("a", 3000, fam("m", smp("m", "x", 3, 0), smp("m", "y", 3, 0))) // y is back
	require.Equal(t, []string{"x", "y"}, names(r.Latest()))
	require.Equal(t, []got{{"m/y", 1000, 1}, {"m/y", 3000, 3}},
		collect(r.Window(time.UnixMilli(0), time.UnixMilli(5000), true, true))[3:5], "y continues its history")
	st := r.Stats()
	require.Equal(t, 3, st.Series)
	require.EqualValues(t, 6, st.Samples)
	require.EqualValues(t, 1000, st.OldestMs)
	require.EqualValues(t, 3000, st.NewestMs)
}

func TestOutOfOrderAndDefaults(t *testing.T) {
	now := time.UnixMilli(9_000)
	r := newRecorder(t, Options{Now: func() time.Time { return now }})
	r.Append("a", 5000, fam("m", smp("m", "x", 1, 0)))
	r.Append("a", 5000, fam("m", smp("m", "x", 2, 0)))    // duplicate time
	r.Append("a", 6000, fam("m", smp("m", "x", 3, 4000))) // older exposition timestamp
	r.Append("a", 0, fam("m", smp("m", "x", 4, 0)))       // no scrape time: the clock
	require.Equal(t, []got{{"m/x", 5000, 1}, {"m/x", 9000, 4}}, collect(r.Window(time.Time{}, time.Time{}, false, false)))
	require.EqualValues(t, 2, r.Stats().OutOfOrder)
	require.Len(t, r.Latest(), 1, "a dropped sample still keeps its series current")
}

func TestSpecialValuesThroughRecorder(t *testing.T) {
	r := newRecorder(t, Options{ChunkSamples: 4})
	vals := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, 1 << 53, 12_183_074_510, 1e308, -3.5, 42}
	for i, v := range vals {
		r.Append("a", int64(1000+i*1000+i%2), fam("m", smp("m", "x", v, 0)))
	}
	ms := r.Window(time.Time{}, time.Time{}, false, false)
	require.Len(t, ms, len(vals))
	for i, m := range ms {
		require.Equal(t, math.Float64bits(vals[i]), math.Float64bits(m.GetValue()), "sample %d", i)
		require.EqualValues(t, 1000+i*1000+i%2, m.GetTimestamp().AsTime().UnixMilli())
	}
}

func TestBudgetHighCardinality(t *testing.T) {
	const (
		budget  = 4 << 20
		series  = 50_000
		scrapes = 20
	)
	reg := prometheus.NewRegistry()
	r := newRecorder(t, Options{BudgetBytes: budget, ChunkSamples: 4, Registerer: reg})
	fams := make([]scrape.Family, 1)
	fams[0] = scrape.Family{Name: "hc", Help: "High cardinality.", Type: gauge}
	for i := range series {
		fams[0].Samples = append(fams[0].Samples, smp("hc", fmt.Sprintf("series-%06d", i), float64(i), 0))
	}
	for s := range scrapes {
		for i := range fams[0].Samples {
			fams[0].Samples[i].Value += 1.5
		}
		r.Append("a", int64(1000+s*10_000), fams)
		st := r.Stats()
		require.LessOrEqual(t, st.Bytes, int64(budget), "after scrape %d: %+v", s, st)
	}
	st := r.Stats()
	require.Positive(t, st.RejectedSeries, "series metadata is capped at half the budget")
	require.Positive(t, st.Evicted)
	require.Less(t, st.Series, series)
	require.Len(t, r.Latest(), st.Series, "every held series is current")
	require.Len(t, r.Window(time.Time{}, time.Time{}, false, false), int(st.Samples))
	require.InDelta(t, float64(st.Bytes), testutil.ToFloat64(collectorFor(t, reg, "fodc_agent_recorder_bytes")), 0)
	require.InDelta(t, float64(st.Evicted), testutil.ToFloat64(r.m.evicted), 0)

	// The cardinality spike goes away: the other series stop being current
	// but keep their samples for Window until the budget needs the room;
	// series left with no samples are then deleted.
	small := []scrape.Family{{Name: "hc", Type: gauge, Samples: fams[0].Samples[:10]}}
	r.Append("a", 1_000_000, small)
	require.Len(t, r.Latest(), 10)
	require.Equal(t, st.Series, r.Stats().Series)

	r.budget = r.Stats().Bytes / 4
	r.Append("a", 1_010_000, small)
	after := r.Stats()
	require.LessOrEqual(t, after.Bytes, r.budget)
	require.Less(t, after.Series, st.Series/2, "stale series deleted once empty")
	require.Len(t, r.Latest(), 10)
}

func collectorFor(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "copy"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	require.Failf(t, "metric not found", "%s", name)
	return nil
}

func TestEvictionOldestFirst(t *testing.T) {
	const (
		chunk = 5
		base  = 1_000_000
	)
	r := newRecorder(t, Options{BudgetBytes: 1 << 20, ChunkSamples: chunk})
	// "early" starts at base, "late" 500 ms later; both every 10 ms.
	appendUpTo := func(from, to int64) {
		for ts := from; ts < to; ts += 10 {
			r.Append("early", base+ts, fam("m", smp("m", "early", float64(ts), 0)))
			if ts >= 500 {
				r.Append("late", base+ts, fam("m", smp("m", "late", float64(ts), 0)))
			}
		}
	}
	appendUpTo(0, 1500)
	held := r.Stats()
	require.Zero(t, held.Evicted)

	// Shrink the budget to about half of what is held and append once more.
	r.budget = held.Bytes / 2
	appendUpTo(1500, 1510)
	st := r.Stats()
	require.Positive(t, st.Evicted)
	require.LessOrEqual(t, st.Bytes, r.budget)

	first := map[string]int64{}
	last := map[string]int64{}
	count := map[string]int{}
	for _, g := range collect(r.Window(time.Time{}, time.Time{}, false, false)) {
		ts := g.t - base
		require.InDelta(t, float64(ts), g.v, 0)
		if _, ok := first[g.series]; !ok {
			first[g.series] = ts
		}
		require.Greater(t, ts, last[g.series]-1, "time order")
		last[g.series] = ts
		count[g.series]++
	}
	require.Len(t, count, 2)
	// Each series keeps a contiguous run of its newest samples...
	for s, n := range count {
		require.EqualValues(t, (last[s]-first[s])/10+1, n, "no gaps in %s", s)
		require.EqualValues(t, 1500, last[s], "newest sample of %s kept", s)
	}
	// ...and eviction went by age across series, not per series: "early"
	// lost everything "late" never had plus about as much as "late" lost.
	require.Greater(t, first["m/early"], int64(500))
	require.InDelta(t, first["m/early"], first["m/late"], chunk*10)
	require.Equal(t, base+min(first["m/early"], first["m/late"]), st.OldestMs)
	require.EqualValues(t, base+1500, st.NewestMs)
	require.EqualValues(t, 150+100+2-st.Samples, st.Evicted, "evicted + held = appended")
}

func TestConcurrentUse(t *testing.T) {
	r := newRecorder(t, Options{BudgetBytes: 256 << 10, ChunkSamples: 8})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			target := fmt.Sprintf("t%d", w)
			for i := range 300 {
				var ss []scrape.Sample
				for s := range 20 {
					ss = append(ss, smp("m", fmt.Sprintf("%s-%d", target, s), float64(i), 0))
				}
				r.Append(target, int64(1000+i*10), fam("m", ss...))
				if i%50 == 0 {
					r.MarkTargetDown(target)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 100 {
				for _, m := range r.Window(time.UnixMilli(1500), time.UnixMilli(3000), true, true) {
					ts := m.GetTimestamp().AsTime().UnixMilli()
					if ts < 1500 || ts > 3000 || m.GetValue() != float64((ts-1000)/10) {
						t.Errorf("bad sample %v at %d", m.GetValue(), ts)
						return
					}
				}
				_ = r.Latest()
				_ = r.Stats()
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, r.Stats().Bytes, int64(256<<10))
}
