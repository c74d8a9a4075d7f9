package render

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

var received = time.Date(2026, 11, 26, 21, 0, 0, 0, time.UTC)

// sampleKey is name{labels} with labels sorted. With normalize set, le
// and quantile values are rewritten to their shortest float form, as the
// parser reports bucket bounds and quantiles.
func sampleKey(name string, labels map[string]string, normalize bool) string {
	names := make([]string, 0, len(labels))
	for k := range labels {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range names {
		v := labels[k]
		if normalize && (k == "le" || k == "quantile") {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				v = strconv.FormatFloat(f, 'g', -1, 64)
			}
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, v)
	}
	b.WriteByte('}')
	return b.String()
}

// parseText parses text with the expfmt parser (legacy names, as
// Prometheus text 0.0.4 requires) and flattens it to one value per sample.
func parseText(t *testing.T, text []byte) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	require.NoError(t, err, "expfmt parse:\n%s", text)
	out := make(map[string]float64)
	add := func(name string, base map[string]string, extraName, extraValue string, v float64) {
		ls := make(map[string]string, len(base)+1)
		for k, v := range base {
			ls[k] = v
		}
		if extraName != "" {
			ls[extraName] = extraValue
		}
		key := sampleKey(name, ls, false)
		_, dup := out[key]
		require.False(t, dup, "duplicate sample %s", key)
		out[key] = v
	}
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			ls := make(map[string]string)
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, ls, "", "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, ls, "", "", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, ls, "", "", m.GetUntyped().GetValue())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, ls, "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64), q.GetValue())
				}
				if s.SampleSum != nil {
					add(name+"_sum", ls, "", "", s.GetSampleSum())
				}
				if s.SampleCount != nil {
					add(name+"_count", ls, "", "", float64(s.GetSampleCount()))
				}
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					v := float64(b.GetCumulativeCount())
					if b.CumulativeCountFloat != nil {
						v = b.GetCumulativeCountFloat()
					}
					add(name+"_bucket", ls, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64), v)
				}
				if h.SampleSum != nil {
					add(name+"_sum", ls, "", "", h.GetSampleSum())
				}
				if h.SampleCount != nil || h.SampleCountFloat != nil {
					v := float64(h.GetSampleCount())
					if h.SampleCountFloat != nil {
						v = h.GetSampleCountFloat()
					}
					add(name+"_count", ls, "", "", v)
				}
			default:
				t.Fatalf("unexpected type %v of %s", mf.GetType(), name)
			}
		}
	}
	return out
}

// expected flattens the first occurrence of every series of batches.
func expected(batches []series.Batch) map[string]float64 {
	out := make(map[string]float64)
	for _, b := range batches {
		for _, s := range b.Series {
			ls := make(map[string]string, len(s.Labels))
			for _, l := range s.Labels {
				ls[l.Name] = l.Value
			}
			key := sampleKey(s.Name, ls, true)
			if _, ok := out[key]; !ok {
				out[key] = s.Points[len(s.Points)-1].Value
			}
		}
	}
	return out
}

func requireSameValues(t *testing.T, want, got map[string]float64) {
	t.Helper()
	require.Equal(t, len(want), len(got))
	for k, w := range want {
		g, ok := got[k]
		require.True(t, ok, "missing %s", k)
		if math.IsNaN(w) {
			require.True(t, math.IsNaN(g), "%s: want NaN, got %v", k, g)
			continue
		}
		require.Equal(t, w, g, k)
	}
}

// session is one recorded agent and its three metrics replies (latest,
// latest, window).
type session struct {
	info    decode.NodeInfo
	replies []*fodcv1.StreamMetricsRequest
}

func loadSession(t testing.TB, name string, port int) session {
	t.Helper()
	rec, err := fixture.Load(name)
	require.NoError(t, err)
	regs := rec.Frames(fixture.MethodRegisterAgent, fixture.AgentToProxy)
	require.NotEmpty(t, regs)
	m, err := regs[0].Message()
	require.NoError(t, err)
	reg := m.(*fodcv1.RegisterAgentRequest)
	s := session{info: decode.NodeInfo{
		Node: series.Node{
			AgentID: "agent-" + name, PodName: reg.GetPodName(), Role: reg.GetNodeRole(),
			IP: "127.0.0.1", Port: port,
		},
		Labels:     reg.GetLabels(),
		Containers: reg.GetContainerNames(),
	}}
	for _, f := range rec.Frames(fixture.MethodStreamMetrics, fixture.AgentToProxy) {
		m, err := f.Message()
		require.NoError(t, err)
		s.replies = append(s.replies, m.(*fodcv1.StreamMetricsRequest))
	}
	require.Len(t, s.replies, 3)
	return s
}

var sessions = []string{"head-agent-liaison-fake", "v0.10.3-agent-data-node", "head-agent-data-node"}

func latestBatches(t testing.TB) []series.Batch {
	var out []series.Batch
	for i, name := range sessions {
		s := loadSession(t, name, 17913+i)
		out = append(out, decodeMessage(t, s.info, s.replies[0], received, false))
	}
	return out
}

func TestFixtureParseBack(t *testing.T) {
	batches := latestBatches(t)
	var buf bytes.Buffer
	st, err := WriteText(&buf, batches)
	require.NoError(t, err)
	want := expected(batches)
	require.Equal(t, Stats{Series: len(want), Families: st.Families}, st, "nothing dropped or duplicated")
	requireSameValues(t, want, parseText(t, buf.Bytes()))

	text := buf.String()
	// The liaison's HEAD agent sends type-less samples; its histogram and
	// summary are inferred, its HELP kept and escaped.
	require.Contains(t, text, "# TYPE fixture_request_duration_seconds histogram\n")
	require.Contains(t, text, "# TYPE fixture_rpc_duration_seconds summary\n")
	require.Contains(t, text, "# TYPE fixture_untyped_samples untyped\n")
	require.Contains(t, text, `# HELP fixture_help_escapes HELP with a backslash \\\\ and a newline \\n escape.`+"\n")
	require.Contains(t, text, `path="C:\\\\data\\\\bydb"`)
	// One HELP and TYPE per family.
	types := regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(text, -1)
	seen := map[string]bool{}
	for _, m := range types {
		require.False(t, seen[m[1]], "second TYPE for %s", m[1])
		seen[m[1]] = true
	}
	require.Equal(t, st.Families, len(types))
}

// TestFixtureDeterministic shuffles the series of every batch and rebuilds
// every reply's label maps: the output must not change by a byte.
func TestFixtureDeterministic(t *testing.T) {
	var want []byte
	for round := range 4 {
		var batches []series.Batch
		for i, name := range sessions {
			s := loadSession(t, name, 17913+i)
			reply := s.replies[0]
			if round > 0 {
				ms := slices.Clone(reply.Metrics)
				rand.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
				for k, m := range ms {
					labels := make(map[string]string, len(m.Labels))
					for lk, lv := range m.Labels {
						labels[lk] = lv
					}
					ms[k] = &fodcv1.Metric{Name: m.Name, Labels: labels, Value: m.Value, Description: m.Description, Type: m.Type, Timestamp: m.Timestamp}
				}
				reply = &fodcv1.StreamMetricsRequest{Metrics: ms, Timestamp: reply.Timestamp}
			}
			b := decodeMessage(t, s.info, reply, received, false)
			if round > 1 {
				rand.Shuffle(len(b.Series), func(i, j int) { b.Series[i], b.Series[j] = b.Series[j], b.Series[i] })
			}
			batches = append(batches, b)
		}
		var buf bytes.Buffer
		_, err := WriteText(&buf, batches)
		require.NoError(t, err)
		if round == 0 {
			want = buf.Bytes()
			continue
		}
		require.Equal(t, string(want), buf.String(), "round %d", round)
	}
}

// TestPromtool feeds real fixture output to promtool check metrics and
// accepts lint findings only.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("FODC_REQUIRE_TOOLS") == "1" {
			t.Fatalf("promtool required: %v", err)
		}
		t.Skipf("promtool not installed: %v", err)
	}
	cases := map[string][]series.Batch{"all agents": latestBatches(t)}
	for i, name := range sessions[:2] {
		s := loadSession(t, name, 17913+i)
		cases[name] = []series.Batch{decodeMessage(t, s.info, s.replies[0], received, false)}
	}
	// Hostile synthetic input too: escapes, special values, conflicts.
	cases["synthetic"] = []series.Batch{
		batch("a",
			withHelp(smp("esc", tG, math.NaN(), "msg", "say \"hi\"\n", "path", `C:\x`), "Back \\ slash\nnew line."),
			smp("inf_total", tC, math.Inf(1)),
			smp("lat_bucket", tH, 1, "le", "+Inf"), smp("lat_sum", tH, math.Inf(-1)), smp("lat_count", tH, 1),
			smp("q", tU, 1, "quantile", "0.5"), smp("q_sum", tU, 1), smp("q_count", tU, 1),
			smp("jobs_count", tU, 3),
		),
		batch("b", smp("lat_count", tC, 2), smp("esc", tC, 1, "msg", "other")),
	}
	lintLine := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]* \S`)
	for name, batches := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			st, err := WriteText(&buf, batches)
			require.NoError(t, err)
			require.Positive(t, st.Series)
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = bytes.NewReader(buf.Bytes())
			out, err := cmd.CombinedOutput()
			// promtool exits 3 for lint problems, 1 for parse errors.
			if err != nil {
				exit, ok := err.(*exec.ExitError)
				require.True(t, ok, "run promtool: %v", err)
				require.Equal(t, 3, exit.ExitCode(), "promtool:\n%s", out)
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				line := sc.Text()
				require.False(t, strings.HasPrefix(line, "error"), "promtool: %s", line)
				require.Regexp(t, lintLine, line)
				metric, _, _ := strings.Cut(line, " ")
				require.Contains(t, buf.String(), "# TYPE "+metric+" ", "lint line about an unknown family: %s", line)
			}
		})
	}
}

// windowElement is one /metrics-windows array element.
type windowElement struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	AgentID     string            `json:"agent_id"`
	IP          string            `json:"ip"`
	Port        int               `json:"port"`
	PodName     string            `json:"pod_name"`
	Data        []struct {
		Timestamp string          `json:"timestamp"`
		Value     json.RawMessage `json:"value"`
	} `json:"data"`
}

func decodeWindows(t *testing.T, b []byte) []windowElement {
	t.Helper()
	require.True(t, json.Valid(b), "invalid JSON: %s", b)
	var out []windowElement
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// TestWriteWindowsFixture decodes our rendering of recorded window replies
// and compares every point with what the upstream proxy served for the
// same reply.
func TestWriteWindowsFixture(t *testing.T) {
	dir, err := fixture.Dir()
	require.NoError(t, err)
	for i, name := range sessions[:2] {
		t.Run(name, func(t *testing.T) {
			s := loadSession(t, name, 17913+i)
			window := s.replies[2]
			b := decodeMessage(t, s.info, window, received, true)
			var buf bytes.Buffer
			st, err := WriteWindows(&buf, []series.Batch{b})
			require.NoError(t, err)
			got := decodeWindows(t, buf.Bytes())
			require.Len(t, got, len(b.Series))
			require.Equal(t, len(got), st.Series)

			// Order: name, then label set.
			for j := 1; j < len(got); j++ {
				require.LessOrEqual(t, got[j-1].Name, got[j].Name)
			}
			points := 0
			byKey := make(map[string]windowElement)
			for _, e := range got {
				require.Equal(t, s.info.Node.AgentID, e.AgentID)
				require.Equal(t, "127.0.0.1", e.IP)
				require.Equal(t, 17913+i, e.Port)
				require.Equal(t, s.info.Node.PodName, e.PodName)
				points += len(e.Data)
				delete(e.Labels, "node_address") // the upstream proxy does not add it
				byKey[sampleKey(e.Name, e.Labels, false)] = e
			}
			require.Equal(t, len(window.Metrics), points)

			// Every recorded sample is in the output at its own time.
			for _, m := range window.Metrics {
				e, ok := byKey[sampleKey(m.Name, m.Labels, false)]
				require.True(t, ok, "%s%v", m.Name, m.Labels)
				ts := m.Timestamp.AsTime().UTC().Format(time.RFC3339Nano)
				idx := slices.IndexFunc(e.Data, func(d struct {
					Timestamp string          `json:"timestamp"`
					Value     json.RawMessage `json:"value"`
				}) bool {
					return d.Timestamp == ts
				})
				require.GreaterOrEqual(t, idx, 0, "%s at %s", m.Name, ts)
				require.Equal(t, strconv.FormatFloat(m.Value, 'f', -1, 64), string(e.Data[idx].Value))
			}

			// The upstream proxy served the same reply: same series, points and values.
			raw, err := os.ReadFile(filepath.Join(dir, name+".http", "metrics-windows_last30s.txt"))
			require.NoError(t, err)
			var upstream []windowElement
			require.NoError(t, json.Unmarshal(raw, &upstream))
			require.Len(t, got, len(upstream))
			for _, u := range upstream {
				e, ok := byKey[sampleKey(u.Name, u.Labels, false)]
				require.True(t, ok, "%s%v", u.Name, u.Labels)
				require.Equal(t, u.Description, e.Description)
				require.Equal(t, len(u.Data), len(e.Data), u.Name)
				for j := range u.Data {
					require.Equal(t, u.Data[j].Timestamp, e.Data[j].Timestamp)
					uv, err := strconv.ParseFloat(string(u.Data[j].Value), 64)
					require.NoError(t, err)
					ev, err := strconv.ParseFloat(string(e.Data[j].Value), 64)
					require.NoError(t, err)
					require.Equal(t, uv, ev)
				}
			}
		})
	}
}

func TestWriteWindows(t *testing.T) {
	pts := func(vs ...float64) []series.Point {
		out := make([]series.Point, len(vs))
		for i, v := range vs {
			out[i] = series.Point{TimestampMs: 1764187200000 + int64(i)*1500, Value: v}
		}
		return out
	}
	b1 := series.Batch{
		Node: series.Node{AgentID: "b", PodName: "pod-b", IP: "10.0.0.2", Port: 17913},
		Series: []series.Series{
			{Name: "m", Help: "Help \"q\"\n", Labels: series.Labels{{Name: "k", Value: "v\x01\xff"}}, Points: pts(math.NaN(), math.Inf(1), math.Inf(-1), 1e21, 1e-7, 0.5, 1234567)},
			{Name: "empty"},
		},
	}
	b2 := series.Batch{
		Node: series.Node{AgentID: "a", PodName: "pod-a"},
		Series: []series.Series{
			{Name: "m", Labels: series.Labels{{Name: "k", Value: "v\x01\xff"}, {Name: "pod_name", Value: "own"}}, Points: pts(2)},
			{Name: "m", Labels: series.Labels{{Name: "k", Value: "v\x01\xff"}}, Points: pts(3)},
			{Name: "a\u2028", Points: pts(4)},
		},
	}
	var buf bytes.Buffer
	st, err := WriteWindows(&buf, []series.Batch{b1, b2})
	require.NoError(t, err)
	require.Equal(t, Stats{Series: 4, Families: 2, Dropped: 1}, st)
	require.Equal(t, `[{"name":"a\u2028","description":"","labels":{},"agent_id":"a","ip":"","port":0,"pod_name":"pod-a","data":[{"timestamp":"2025-11-26T20:00:00Z","value":4}]},`+
		`{"name":"m","description":"","labels":{"k":"v\u0001\ufffd"},"agent_id":"a","ip":"","port":0,"pod_name":"pod-a","data":[{"timestamp":"2025-11-26T20:00:00Z","value":3}]},`+
		`{"name":"m","description":"Help \"q\"\n","labels":{"k":"v\u0001\ufffd"},"agent_id":"b","ip":"10.0.0.2","port":17913,"pod_name":"pod-b","data":[`+
		`{"timestamp":"2025-11-26T20:00:00Z","value":"NaN"},{"timestamp":"2025-11-26T20:00:01.5Z","value":"+Inf"},{"timestamp":"2025-11-26T20:00:03Z","value":"-Inf"},`+
		`{"timestamp":"2025-11-26T20:00:04.5Z","value":1e+21},{"timestamp":"2025-11-26T20:00:06Z","value":1e-7},{"timestamp":"2025-11-26T20:00:07.5Z","value":0.5},`+
		`{"timestamp":"2025-11-26T20:00:09Z","value":1234567}]},`+
		`{"name":"m","description":"","labels":{"k":"v\u0001\ufffd","pod_name":"own"},"agent_id":"a","ip":"","port":0,"pod_name":"own","data":[{"timestamp":"2025-11-26T20:00:00Z","value":2}]}]`,
		buf.String())
	got := decodeWindows(t, buf.Bytes())
	require.Len(t, got, 4)
	require.Equal(t, "v\x01\uFFFD", got[1].Labels["k"])
	require.Equal(t, "a\u2028", got[0].Name)

	buf.Reset()
	st, err = WriteWindows(&buf, nil)
	require.NoError(t, err)
	require.Equal(t, "[]", buf.String())
	require.Equal(t, Stats{}, st)
}
