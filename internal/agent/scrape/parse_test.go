package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

const (
	textCT         = "text/plain; version=0.0.4; charset=utf-8"
	omCT           = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	scrapeMs int64 = 1_795_723_720_000
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func family(t *testing.T, fams []Family, name string) Family {
	t.Helper()
	for _, f := range fams {
		if f.Name == name {
			return f
		}
	}
	require.Failf(t, "family not found", "%q", name)
	return Family{}
}

func ls(kv ...string) []Label {
	var out []Label
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestParseText(t *testing.T) {
	fams, err := Parse(readTestdata(t, "text.prom"), textCT, scrapeMs, 0)
	require.NoError(t, err)

	names := make([]string, 0, len(fams))
	for _, f := range fams {
		names = append(names, f.Name)
	}
	require.Equal(t, []string{
		"banyandb_query_latency_seconds", "banyandb_write_total", "fixture_escaped_label_info",
		"fixture_untyped", "go_gc_duration_seconds", "go_goroutines",
	}, names, "families sorted by name")

	tests := []struct {
		name string
		help string
		typ  fodcv1.MetricType
		want []Sample
	}{
		{
			name: "banyandb_write_total",
			help: "Total writes.\nSecond line with a backslash \\ here.",
			typ:  fodcv1.MetricType_METRIC_TYPE_COUNTER,
			want: []Sample{
				{Name: "banyandb_write_total", Labels: ls("group", "sw_metric", "node_role", "ROLE_DATA"), Value: 1027, TimestampMs: scrapeMs},
				{Name: "banyandb_write_total", Labels: ls("group", "sw_record", "node_role", "ROLE_DATA"), Value: 33, TimestampMs: 1795723714930},
			},
		},
		{
			name: "go_goroutines",
			help: "Number of goroutines that currently exist.",
			typ:  fodcv1.MetricType_METRIC_TYPE_GAUGE,
			want: []Sample{{Name: "go_goroutines", Value: 139, TimestampMs: scrapeMs}},
		},
		{
			name: "fixture_escaped_label_info",
			help: "Label values with escapes.",
			typ:  fodcv1.MetricType_METRIC_TYPE_GAUGE,
			want: []Sample{{
				Name:        "fixture_escaped_label_info",
				Labels:      ls("msg", `say "hi"`, "path", `C:\data\bydb`, "text", "line1\nline2"),
				Value:       1,
				TimestampMs: scrapeMs,
			}},
		},
		{
			name: "banyandb_query_latency_seconds",
			help: "Query latency.",
			typ:  fodcv1.MetricType_METRIC_TYPE_HISTOGRAM,
			want: []Sample{
				{Name: "banyandb_query_latency_seconds_bucket", Labels: ls("le", "0.005", "op", "get"), Value: 3, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_bucket", Labels: ls("le", "0.1", "op", "get"), Value: 7, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_bucket", Labels: ls("le", "+Inf", "op", "get"), Value: 9, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_sum", Labels: ls("op", "get"), Value: 0.731, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_count", Labels: ls("op", "get"), Value: 9, TimestampMs: scrapeMs},
			},
		},
		{
			name: "go_gc_duration_seconds",
			help: "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.",
			typ:  fodcv1.MetricType_METRIC_TYPE_SUMMARY,
			want: []Sample{
				{Name: "go_gc_duration_seconds", Labels: ls("quantile", "0"), Value: 9.0062e-05, TimestampMs: scrapeMs},
				{Name: "go_gc_duration_seconds", Labels: ls("quantile", "0.5"), Value: 0.001049979, TimestampMs: scrapeMs},
				{Name: "go_gc_duration_seconds", Labels: ls("quantile", "1"), Value: 0.001356657, TimestampMs: scrapeMs},
				{Name: "go_gc_duration_seconds_sum", Value: 0.002801626, TimestampMs: scrapeMs},
				{Name: "go_gc_duration_seconds_count", Value: 5, TimestampMs: scrapeMs},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := family(t, fams, tc.name)
			require.Equal(t, tc.help, f.Help)
			require.Equal(t, tc.typ, f.Type)
			require.Equal(t, tc.want, f.Samples)
		})
	}

	t.Run("untyped with special values", func(t *testing.T) {
		f := family(t, fams, "fixture_untyped")
		require.Equal(t, fodcv1.MetricType_METRIC_TYPE_UNTYPED, f.Type)
		require.Empty(t, f.Help)
		require.Len(t, f.Samples, 2)
		require.Equal(t, ls("kind", "plain"), f.Samples[0].Labels)
		require.True(t, math.IsInf(f.Samples[0].Value, -1))
		require.Equal(t, ls("kind", "nan"), f.Samples[1].Labels)
		require.True(t, math.IsNaN(f.Samples[1].Value))
	})
}

func TestParseOpenMetrics(t *testing.T) {
	fams, err := Parse(readTestdata(t, "openmetrics.txt"), omCT, scrapeMs, 0)
	require.NoError(t, err)

	tests := []struct {
		name string
		help string
		typ  fodcv1.MetricType
		want []Sample
	}{
		{
			// The OpenMetrics counter family "banyandb_write" exposes its
			// value as banyandb_write_total; _created is not a sample.
			name: "banyandb_write_total",
			help: `Total writes with a "quote".`,
			typ:  fodcv1.MetricType_METRIC_TYPE_COUNTER,
			want: []Sample{{Name: "banyandb_write_total", Labels: ls("group", "sw_metric"), Value: 1027, TimestampMs: 1795723714930}},
		},
		{
			name: "process_resident_memory_bytes",
			help: "Resident memory size in bytes.",
			typ:  fodcv1.MetricType_METRIC_TYPE_GAUGE,
			want: []Sample{{Name: "process_resident_memory_bytes", Value: 4.671488e+07, TimestampMs: scrapeMs}},
		},
		{
			name: "banyandb_query_latency_seconds",
			help: "Query latency.",
			typ:  fodcv1.MetricType_METRIC_TYPE_HISTOGRAM,
			want: []Sample{
				{Name: "banyandb_query_latency_seconds_bucket", Labels: ls("le", "0.005", "op", "get"), Value: 3, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_bucket", Labels: ls("le", "+Inf", "op", "get"), Value: 9, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_sum", Labels: ls("op", "get"), Value: 0.731, TimestampMs: scrapeMs},
				{Name: "banyandb_query_latency_seconds_count", Labels: ls("op", "get"), Value: 9, TimestampMs: scrapeMs},
			},
		},
		{
			name: "rpc_seconds",
			typ:  fodcv1.MetricType_METRIC_TYPE_SUMMARY,
			want: []Sample{
				{Name: "rpc_seconds", Labels: ls("quantile", "0.9"), Value: 0.25, TimestampMs: scrapeMs},
				{Name: "rpc_seconds_sum", Value: 12.5, TimestampMs: scrapeMs},
				{Name: "rpc_seconds_count", Value: 50, TimestampMs: scrapeMs},
			},
		},
		{
			name: "fixture_label",
			typ:  fodcv1.MetricType_METRIC_TYPE_GAUGE,
			want: []Sample{{Name: "fixture_label", Labels: ls("msg", "a\nb \"c\"", "path", `C:\data`), Value: 2, TimestampMs: scrapeMs}},
		},
	}
	require.Len(t, fams, len(tests))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := family(t, fams, tc.name)
			require.Equal(t, tc.help, f.Help)
			require.Equal(t, tc.typ, f.Type)
			require.Equal(t, tc.want, f.Samples)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		ct         string
		maxSamples int
		tooMany    bool
	}{
		{name: "text syntax error", body: "foo{bar=\"x} 1\n", ct: textCT},
		{name: "text bad value", body: "foo abc\n", ct: textCT},
		{name: "openmetrics without EOF", body: "# TYPE foo gauge\nfoo 1\n", ct: omCT},
		{name: "openmetrics data after EOF", body: "foo 1\n# EOF\nbar 2\n", ct: omCT},
		{name: "sample limit", body: "a 1\nb 2\nc 3\n", ct: textCT, maxSamples: 2, tooMany: true},
		{name: "sample limit counts histogram components", body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", ct: textCT, maxSamples: 3, tooMany: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fams, err := Parse([]byte(tc.body), tc.ct, scrapeMs, tc.maxSamples)
			require.Error(t, err)
			require.Nil(t, fams)
			require.Equal(t, tc.tooMany, errors.Is(err, ErrTooManySamples), "err: %v", err)
			if tc.tooMany {
				require.Contains(t, err.Error(), FlagMaxSamples)
			}
		})
	}
}

func TestParseContentTypeFallback(t *testing.T) {
	// A missing or unknown content type is read as the text format.
	for _, ct := range []string{"", "text/plain", "application/json", "garbage;;"} {
		fams, err := Parse([]byte("# TYPE up gauge\nup 1\n"), ct, scrapeMs, 0)
		require.NoError(t, err, "content type %q", ct)
		require.Len(t, fams, 1)
		require.Equal(t, []Sample{{Name: "up", Value: 1, TimestampMs: scrapeMs}}, fams[0].Samples)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"text.prom", "openmetrics.txt"} {
		b := readTestdata(f, name)
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Add([]byte("a{b=\"\\\"\"} 1 2\n# EOF\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, openMetrics bool) {
		ct := textCT
		if openMetrics {
			ct = omCT
		}
		fams, err := Parse(body, ct, scrapeMs, 10_000)
		if err != nil {
			require.Nil(t, fams)
			return
		}
		for _, fam := range fams {
			require.NotEmpty(t, fam.Samples)
			for _, s := range fam.Samples {
				require.NotEmpty(t, s.Name)
				for i := 1; i < len(s.Labels); i++ {
					require.LessOrEqual(t, s.Labels[i-1].Name, s.Labels[i].Name, "labels sorted")
				}
			}
		}
	})
}

// benchBody renders the same realistic families (about 2,000 samples) in
// the text and the OpenMetrics format.
func benchBody(b *testing.B) (text, om []byte) {
	b.Helper()
	reg := prometheus.NewRegistry()
	f := promauto.With(reg)
	c := f.NewCounterVec(prometheus.CounterOpts{Name: "banyandb_write_total", Help: "Writes."}, []string{"group", "shard"})
	g := f.NewGaugeVec(prometheus.GaugeOpts{Name: "banyandb_queue_size", Help: "Queue size."}, []string{"group", "shard"})
	h := f.NewHistogramVec(prometheus.HistogramOpts{Name: "banyandb_query_latency_seconds", Help: "Latency."}, []string{"group"})
	for i := range 200 {
		grp, shard := fmt.Sprintf("group-%d", i%20), fmt.Sprintf("%d", i)
		c.WithLabelValues(grp, shard).Add(float64(i * 7))
		g.WithLabelValues(grp, shard).Set(float64(i) / 3)
	}
	for i := range 100 {
		h.WithLabelValues(fmt.Sprintf("group-%d", i)).Observe(float64(i) / 100)
	}
	mfs, err := reg.Gather()
	require.NoError(b, err)
	encode := func(format expfmt.Format) []byte {
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range mfs {
			require.NoError(b, enc.Encode(mf))
		}
		if c, ok := enc.(expfmt.Closer); ok {
			require.NoError(b, c.Close())
		}
		return buf.Bytes()
	}
	return encode(expfmt.FmtText), encode(expfmt.FmtOpenMetrics_1_0_0)
}

func BenchmarkParse(b *testing.B) {
	text, om := benchBody(b)
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{
		{"text", textCT, text},
		{"openmetrics", omCT, om},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			var n int
			for b.Loop() {
				fams, err := Parse(tc.body, tc.ct, scrapeMs, 0)
				if err != nil {
					b.Fatal(err)
				}
				n = 0
				for _, f := range fams {
					n += len(f.Samples)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
