package render

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Metric types, short.
const (
	tU  = fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED
	tG  = fodcv1.MetricType_METRIC_TYPE_GAUGE
	tC  = fodcv1.MetricType_METRIC_TYPE_COUNTER
	tH  = fodcv1.MetricType_METRIC_TYPE_HISTOGRAM
	tS  = fodcv1.MetricType_METRIC_TYPE_SUMMARY
	tUT = fodcv1.MetricType_METRIC_TYPE_UNTYPED
)

// smp builds a one-point series; kv are label pairs, sorted by the caller.
func smp(name string, typ fodcv1.MetricType, v float64, kv ...string) series.Series {
	ls := make(series.Labels, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, series.Label{Name: kv[i], Value: kv[i+1]})
	}
	return series.Series{Name: name, Type: typ, Labels: ls, Points: []series.Point{{TimestampMs: 1, Value: v}}}
}

func withHelp(s series.Series, help string) series.Series {
	s.Help = help
	return s
}

func batch(agent string, ss ...series.Series) series.Batch {
	return series.Batch{Node: series.Node{AgentID: agent}, Series: ss}
}

func TestWriteText(t *testing.T) {
	tests := []struct {
		name    string
		batches []series.Batch
		want    string
		stats   Stats
	}{
		{
			name: "typed counter and gauge",
			batches: []series.Batch{batch("a",
				smp("temp", tG, 21.5),
				withHelp(smp("req_total", tC, 5, "code", "500"), "Requests."),
				smp("req_total", tC, 1027, "code", "200"),
			)},
			want: `# HELP req_total Requests.
# TYPE req_total counter
req_total{code="200"} 1027
req_total{code="500"} 5
# TYPE temp gauge
temp 21.5
`,
			stats: Stats{Series: 3, Families: 2},
		},
		{
			name: "typed histogram: label set, component, numeric le",
			batches: []series.Batch{batch("a",
				smp("lat_count", tH, 3, "a", "y"),
				smp("lat_bucket", tH, 3, "a", "y", "le", "+Inf"),
				withHelp(smp("lat_sum", tH, 1.5, "a", "y"), "Latency sum."),
				smp("lat_bucket", tH, 1, "a", "y", "le", "5"),
				smp("lat_bucket", tH, 0, "a", "y", "le", "0.25"),
				smp("lat_bucket", tH, 1, "a", "x", "le", "10"),
				smp("lat_bucket", tH, 1, "a", "x", "le", "+Inf"),
				smp("lat_count", tH, 1, "a", "x"),
				smp("lat_bucket", tH, 0, "a", "x", "le", "1"),
			)},
			want: `# HELP lat Latency sum.
# TYPE lat histogram
lat_bucket{a="x",le="1"} 0
lat_bucket{a="x",le="10"} 1
lat_bucket{a="x",le="+Inf"} 1
lat_count{a="x"} 1
lat_bucket{a="y",le="0.25"} 0
lat_bucket{a="y",le="5"} 1
lat_bucket{a="y",le="+Inf"} 3
lat_sum{a="y"} 1.5
lat_count{a="y"} 3
`,
			stats: Stats{Series: 9, Families: 1},
		},
		{
			name: "typed summary: help of the family-named sample wins",
			batches: []series.Batch{batch("a",
				withHelp(smp("rpc_sum", tS, 17.5), "Sum help."),
				smp("rpc_count", tS, 20),
				smp("rpc", tS, 0.9, "quantile", "0.99"),
				withHelp(smp("rpc", tS, 0.1, "quantile", "0.5"), "RPC latency."),
			)},
			want: `# HELP rpc RPC latency.
# TYPE rpc summary
rpc{quantile="0.5"} 0.1
rpc{quantile="0.99"} 0.9
rpc_sum 17.5
rpc_count 20
`,
			stats: Stats{Series: 4, Families: 1},
		},
		{
			name: "untyped inference: histogram and summary",
			batches: []series.Batch{batch("a",
				smp("x_bucket", tU, 2, "le", "+Inf"),
				smp("x_bucket", tU, 1, "le", "1"),
				smp("x_count", tU, 2),
				smp("x_sum", tU, 3),
				smp("y", tU, 0.5, "quantile", "0.5"),
				smp("y_count", tU, 4),
			)},
			want: `# TYPE x histogram
x_bucket{le="1"} 1
x_bucket{le="+Inf"} 2
x_sum 3
x_count 2
# TYPE y summary
y{quantile="0.5"} 0.5
y_count 4
`,
			stats: Stats{Series: 6, Families: 2},
		},
		{
			name: "x_count counter is not a histogram",
			batches: []series.Batch{batch("a",
				withHelp(smp("jobs_count", tU, 7), "Jobs done."),
				smp("hits_sum", tU, 1),
				smp("errors_count", tC, 3),
				smp("lonely_bucket", tU, 1, "le", "1"),
				smp("_bucket", tU, 1, "le", "1"), // no family name left: its own family
				smp("_sum", tU, 2),
			)},
			want: `# TYPE _bucket untyped
_bucket{le="1"} 1
# TYPE _sum untyped
_sum 2
# TYPE errors_count counter
errors_count 3
# TYPE hits_sum untyped
hits_sum 1
# HELP jobs_count Jobs done.
# TYPE jobs_count untyped
jobs_count 7
# TYPE lonely_bucket untyped
lonely_bucket{le="1"} 1
`,
			stats: Stats{Series: 6, Families: 6},
		},
		{
			name: "untyped samples absorbed into typed families, filling HELP",
			batches: []series.Batch{
				batch("new", smp("foo_total", tC, 1, "pod", "a"), smp("lat_bucket", tH, 1, "le", "1"), smp("lat_sum", tH, 1)),
				batch("old",
					withHelp(smp("foo_total", tU, 2, "pod", "b"), "Foo."),
					smp("lat_bucket", tU, 2, "le", "+Inf", "pod", "b"),
					smp("lat_count", tU, 2, "pod", "b"),
					smp("lat", tU, 9), // does not fit a histogram and cannot be its own family
				),
			},
			want: `# HELP foo_total Foo.
# TYPE foo_total counter
foo_total{pod="a"} 1
foo_total{pod="b"} 2
# TYPE lat histogram
lat_bucket{le="1"} 1
lat_sum 1
lat_bucket{le="+Inf",pod="b"} 2
lat_count{pod="b"} 2
`,
			stats: Stats{Series: 6, Families: 2, Dropped: 1},
		},
		{
			name: "type conflicts: first typed declaration decides",
			batches: []series.Batch{
				batch("a",
					smp("m", tG, 1, "pod", "a"),
					smp("h_bucket", tH, 1, "le", "+Inf"), smp("h_sum", tH, 1), smp("h_count", tH, 1),
					smp("h2_count", tC, 5, "pod", "a"),
				),
				batch("b",
					smp("m", tC, 2, "pod", "b"),
					smp("h_count", tC, 5, "pod", "b"),                                                   // collides with histogram h: dropped
					smp("h2_bucket", tH, 1, "le", "+Inf"), smp("h2_sum", tH, 1), smp("h2_count", tH, 1), // h2 collides with the counter: dropped
				),
			},
			want: `# TYPE h histogram
h_bucket{le="+Inf"} 1
h_sum 1
h_count 1
# TYPE h2_count counter
h2_count{pod="a"} 5
# TYPE m gauge
m{pod="a"} 1
m{pod="b"} 2
`,
			stats: Stats{Series: 6, Families: 3, Dropped: 4},
		},
		{
			name: "typed family blocks untyped inference",
			batches: []series.Batch{batch("a",
				smp("w", tG, 1),
				smp("w_bucket", tU, 1, "le", "1"),
				smp("w_sum", tU, 2),
				smp("z", tU, 9),
				smp("z_bucket", tU, 1, "le", "1"),
				smp("z_count", tU, 1),
			)},
			want: `# TYPE w gauge
w 1
# TYPE w_bucket untyped
w_bucket{le="1"} 1
# TYPE w_sum untyped
w_sum 2
# TYPE z histogram
z_bucket{le="1"} 1
z_count 1
`,
			stats: Stats{Series: 5, Families: 4, Dropped: 1},
		},
		{
			name: "samples that cannot be written are dropped",
			batches: []series.Batch{batch("a",
				smp("h_bucket", tH, 1),                 // no le
				smp("h_bucket", tH, 1, "le", "abc"),    // le not a number
				smp("h_bucket", tH, 1, "le", "0x1p-2"), // hex float, refused by parsers
				smp("h_bucket", tH, -1, "le", "1"),     // negative bucket
				smp("h_sum", tH, 1, "le", "1"),         // le on _sum
				smp("h", tH, 1),                        // the family name itself
				smp("s", tS, 1),                        // no quantile
				smp("s_sum", tS, 1, "quantile", "0.5"), // quantile on _sum
				smp("bad-name", tG, 1),
				smp("", tG, 1),
				smp("_sum", tH, 1), // empty family name
				series.Series{Name: "nopoints", Type: tG},
				smp("ok", tG, 1, "__reserved", "x", "bad-label", "y", "empty", "", "fine", "1"),
			)},
			want: `# TYPE ok gauge
ok{fine="1"} 1
`,
			stats: Stats{Series: 1, Families: 1, Dropped: 12, DroppedLabels: 3},
		},
		{
			name: "duplicates: first batch wins, equal bounds are equal",
			batches: []series.Batch{
				batch("a", smp("up", tG, 1, "pod", "p"), smp("b_bucket", tH, 1, "le", "1"), smp("b_count", tH, 1)),
				batch("b", smp("up", tG, 0, "pod", "p"), smp("b_bucket", tH, 2, "le", "1.0"), smp("up", tG, 5, "pod", "q")),
				batch("c", smp("up", tU, 7, "pod", "p")),
			},
			want: `# TYPE b histogram
b_bucket{le="1"} 1
b_count 1
# TYPE up gauge
up{pod="p"} 1
up{pod="q"} 5
`,
			stats: Stats{Series: 4, Families: 2, Duplicates: 3},
		},
		{
			name: "escaping of HELP and label values",
			batches: []series.Batch{batch("a",
				withHelp(smp("esc", tG, 1, "msg", "say \"hi\"\nbye", "path", `C:\data`), "A \\ backslash\nand \"quotes\"."),
				smp("esc", tG, 2, "msg", "bad\xffutf8"),
			)},
			want: `# HELP esc A \\ backslash\nand "quotes".
# TYPE esc gauge
esc{msg="bad` + "\uFFFD" + `utf8"} 2
esc{msg="say \"hi\"\nbye",path="C:\\data"} 1
`,
			stats: Stats{Series: 2, Families: 1},
		},
		{
			name: "special values and float formatting",
			batches: []series.Batch{batch("a",
				smp("v", tG, math.NaN(), "k", "a"),
				smp("v", tG, math.Inf(1), "k", "b"),
				smp("v", tG, math.Inf(-1), "k", "c"),
				smp("v", tG, 1e21, "k", "d"),
				smp("v", tG, 0.1, "k", "e"),
				smp("v", tG, math.Copysign(0, -1), "k", "f"),
				smp("v", tG, 123456789, "k", "g"),
				smp("v", tG, 1.5e-7, "k", "h"),
				series.Series{Name: "v", Type: tG, Labels: series.Labels{{Name: "k", Value: "i"}},
					Points: []series.Point{{TimestampMs: 1, Value: 1}, {TimestampMs: 2, Value: 2}}},
			)},
			want: `# TYPE v gauge
v{k="a"} NaN
v{k="b"} +Inf
v{k="c"} -Inf
v{k="d"} 1e+21
v{k="e"} 0.1
v{k="f"} -0
v{k="g"} 1.23456789e+08
v{k="h"} 1.5e-07
v{k="i"} 2
`,
			stats: Stats{Series: 9, Families: 1},
		},
		{
			name:    "empty input writes nothing",
			batches: []series.Batch{batch("a"), {Series: []series.Series{{Name: "nopoints"}}}},
			want:    "",
			stats:   Stats{Dropped: 1},
		},
		{
			name: "typed untyped and proxy's own batch",
			batches: []series.Batch{
				{Series: []series.Series{withHelp(smp("fodc_proxy_agent_up", tG, 1, "agent_id", "a"), "Whether the agent answered.")}},
				batch("a", smp("raw", tUT, 3)),
			},
			want: `# HELP fodc_proxy_agent_up Whether the agent answered.
# TYPE fodc_proxy_agent_up gauge
fodc_proxy_agent_up{agent_id="a"} 1
# TYPE raw untyped
raw 3
`,
			stats: Stats{Series: 2, Families: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			st, err := WriteText(&buf, tt.batches)
			require.NoError(t, err)
			require.Equal(t, tt.want, buf.String())
			require.Equal(t, tt.stats, st)
			if buf.Len() > 0 {
				parseText(t, buf.Bytes())
			}
		})
	}
}

// TestWriteTextDoesNotModifyInput guards the label cleaning copy.
func TestWriteTextDoesNotModifyInput(t *testing.T) {
	s := smp("ok", tG, 1, "__x", "1", "b", "2")
	before := append(series.Labels(nil), s.Labels...)
	var buf bytes.Buffer
	_, err := WriteText(&buf, []series.Batch{batch("a", s)})
	require.NoError(t, err)
	require.Equal(t, before, s.Labels)
	require.Equal(t, "# TYPE ok gauge\nok{b=\"2\"} 1\n", buf.String())
}

type failWriter struct{ n int }

var errWrite = errors.New("write failed")

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errWrite
}

func TestWriteErrors(t *testing.T) {
	var ss []series.Series
	for i := range 5000 {
		ss = append(ss, smp("m", tG, float64(i), "i", strings.Repeat("x", 10)+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676))))
	}
	fw := &failWriter{}
	_, err := WriteText(fw, []series.Batch{batch("a", ss...)})
	require.ErrorIs(t, err, errWrite)
	require.Equal(t, 1, fw.n, "stop at the first failed write")
	fw = &failWriter{}
	_, err = WriteWindows(fw, []series.Batch{batch("a", ss...)})
	require.ErrorIs(t, err, errWrite)
	require.Equal(t, 1, fw.n)
}

// TestWriteTextRandomParses throws random mixes of names, suffixes, types,
// le/quantile labels and values from several batches at WriteText: the
// output must always parse, without duplicate samples, and every input
// series must be accounted for.
func TestWriteTextRandomParses(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	bases := []string{"a", "b", "a_count", "c_sum", "_"}
	suffixes := []string{"", "", "_bucket", "_sum", "_count"}
	types := []fodcv1.MetricType{tU, tU, tG, tC, tH, tS, tUT}
	bounds := []string{"0.5", "1", "1.0", "+Inf", "x", "NaN"}
	values := []float64{0, 1, -1, 2.5, math.NaN(), math.Inf(1), math.Inf(-1)}
	for round := range 300 {
		var batches []series.Batch
		total := 0
		for a := range 1 + rng.IntN(3) {
			var ss []series.Series
			for range rng.IntN(12) {
				var kv []string
				switch rng.IntN(4) {
				case 0:
					kv = append(kv, "le", bounds[rng.IntN(len(bounds))])
				case 1:
					kv = append(kv, "pod", fmt.Sprint(rng.IntN(2)))
				case 2:
					kv = append(kv, "pod", fmt.Sprint(rng.IntN(2)), "quantile", bounds[rng.IntN(len(bounds))])
				}
				ss = append(ss, smp(bases[rng.IntN(len(bases))]+suffixes[rng.IntN(len(suffixes))],
					types[rng.IntN(len(types))], values[rng.IntN(len(values))], kv...))
			}
			total += len(ss)
			batches = append(batches, batch(fmt.Sprint(a), ss...))
		}
		var buf bytes.Buffer
		st, err := WriteText(&buf, batches)
		require.NoError(t, err)
		require.Equal(t, total, st.Series+st.Duplicates+st.Dropped, "round %d", round)
		require.Equal(t, st.Series, strings.Count(buf.String(), "\n")-strings.Count(buf.String(), "# "), "round %d", round)
		if buf.Len() > 0 {
			got := parseText(t, buf.Bytes())
			written := simpleLines(t, buf.String())
			require.Len(t, written, st.Series, "round %d", round)
			for k, w := range written {
				g, ok := got[k]
				require.True(t, ok, "round %d: %s not parsed back:\n%s", round, k, buf.String())
				if strings.Contains(k, "_count") && !(w >= 0 && w == math.Trunc(w) && w < 1e18) {
					continue // expfmt keeps summary counts as uint64
				}
				require.True(t, g == w || math.IsNaN(g) && math.IsNaN(w), "round %d: %s: %v != %v", round, k, g, w)
			}
			for k, v := range got {
				if _, ok := written[k]; !ok {
					// The parser makes up a zero _count for histograms
					// with non-integer bucket values.
					require.True(t, strings.Contains(k, "_count{") && v == 0, "round %d: extra %s", round, k)
				}
			}
		}
	}
}

// simpleLines reads back WriteText output whose label values need no
// escaping, keyed like parseText: le and quantile normalised in histogram
// and summary families only.
func simpleLines(t *testing.T, text string) map[string]float64 {
	out := make(map[string]float64)
	kinds := make(map[string]string)
	var fam string
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			var kind string
			fam, kind, _ = strings.Cut(rest, " ")
			kinds[fam] = kind
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		require.True(t, ok, line)
		name, labels, _ := strings.Cut(series, "{")
		ls := make(map[string]string)
		if labels = strings.TrimSuffix(labels, "}"); labels != "" {
			for _, kv := range strings.Split(labels, ",") {
				k, v, _ := strings.Cut(kv, "=")
				v = strings.Trim(v, `"`)
				norm := kinds[fam] == "histogram" && k == "le" || kinds[fam] == "summary" && k == "quantile"
				if f, err := strconv.ParseFloat(v, 64); norm && err == nil {
					v = strconv.FormatFloat(f, 'g', -1, 64)
				}
				ls[k] = v
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		require.NoError(t, err)
		out[sampleKey(name, ls, false)] = v
	}
	return out
}

// OpenMetrics: counters declared without _total and sampled with it,
// counters without _total (BanyanDB's) unknown under their own name so that
// no series is renamed, untyped as unknown, quotes escaped in HELP, and
// always "# EOF" last.
func TestWriteOpenMetrics(t *testing.T) {
	gauge := fodcv1.MetricType_METRIC_TYPE_GAUGE
	counter := fodcv1.MetricType_METRIC_TYPE_COUNTER
	b := series.Batch{Series: []series.Series{
		{Name: "requests_total", Help: `Requests "served".`, Type: counter, Points: []series.Point{{Value: 3}}},
		{Name: "bytes_sent", Type: counter, Points: []series.Point{{Value: 7}}},
		{Name: "temp", Type: gauge, Labels: series.Labels{{Name: "room", Value: "a"}}, Points: []series.Point{{Value: 1.5}}},
		{Name: "raw", Points: []series.Point{{Value: 2}}},
	}}
	var buf bytes.Buffer
	_, err := WriteOpenMetrics(&buf, []series.Batch{b})
	require.NoError(t, err)
	require.Equal(t, `# TYPE bytes_sent unknown
bytes_sent 7
# TYPE raw unknown
raw 2
# HELP requests Requests \"served\".
# TYPE requests counter
requests_total 3
# TYPE temp gauge
temp{room="a"} 1.5
# EOF
`, buf.String())

	buf.Reset()
	_, err = WriteOpenMetrics(&buf, nil)
	require.NoError(t, err)
	require.Equal(t, "# EOF\n", buf.String(), "an empty answer is still complete")

	// A counter whose OpenMetrics name would clash with another family is
	// written as unknown under its text name.
	clash := series.Batch{Series: []series.Series{
		{Name: "jobs_total", Type: counter, Points: []series.Point{{Value: 1}}},
		{Name: "jobs", Type: gauge, Points: []series.Point{{Value: 2}}},
	}}
	buf.Reset()
	_, err = WriteOpenMetrics(&buf, []series.Batch{clash})
	require.NoError(t, err)
	require.Contains(t, buf.String(), "# TYPE jobs_total unknown\njobs_total 1\n")
}

// TestWriteTextDecodedLabels renders decoded replies: labels decoding
// vouches for are written as they are, and a reply with a label name the
// format cannot carry is checked like hand-built input, its bad label
// dropped and counted.
func TestWriteTextDecodedLabels(t *testing.T) {
	reply := func(label string) []byte {
		raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
			{Name: "m", Type: tG, Value: 1, Labels: map[string]string{"a": "x", label: "v"}},
			{Name: "m", Type: tG, Value: 2, Labels: map[string]string{"a": "y"}},
		}})
		require.NoError(t, err)
		return raw
	}
	info := decode.NodeInfo{Node: series.Node{PodName: "p"}}
	for _, tc := range []struct {
		label   string
		clean   bool
		want    string
		dropped int
	}{
		{"ok_name", true, "# TYPE m gauge\nm{a=\"x\",ok_name=\"v\",pod_name=\"p\"} 1\nm{a=\"y\",pod_name=\"p\"} 2\n", 0},
		{"bad-name", false, "# TYPE m gauge\nm{a=\"x\",pod_name=\"p\"} 1\nm{a=\"y\",pod_name=\"p\"} 2\n", 1},
		{"__reserved", false, "# TYPE m gauge\nm{a=\"x\",pod_name=\"p\"} 1\nm{a=\"y\",pod_name=\"p\"} 2\n", 1},
	} {
		b, err := decode.Batch(info, reply(tc.label), time.Now(), false)
		require.NoError(t, err)
		require.Equal(t, tc.clean, b.CleanLabels, tc.label)
		var out bytes.Buffer
		st, err := WriteText(&out, []series.Batch{b})
		require.NoError(t, err)
		require.Equal(t, tc.want, out.String(), tc.label)
		require.Equal(t, tc.dropped, st.DroppedLabels, tc.label)
	}
}

// TestAppendTextFloatMatchesStrconv holds the integer shortcut of
// appendTextFloat to strconv's shortest formatting, around every edge.
func TestAppendTextFloatMatchesStrconv(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 999999, -999999, 1e6, -1e6, 1e6 - 0.5, 1234567, 1e15, 1e21,
		math.MaxInt64, math.MinInt64, math.SmallestNonzeroFloat64, math.MaxFloat64}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 10000 {
		values = append(values, float64(rng.Int64N(4e6)-2e6), rng.NormFloat64()*1e7)
	}
	for _, v := range values {
		require.Equal(t, strconv.FormatFloat(v, 'g', -1, 64), string(appendTextFloat(nil, v)), "%v", v)
	}
}
