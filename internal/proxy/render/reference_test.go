package render

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// referenceText is a deliberately plain rendering of well-formed typed
// input (valid names, one type per family, counters, gauges and
// histograms whose bucket and count values are not negative): maps, a
// stable sort and fmt, without any of WriteText's optimisations. It
// states the output order in one place: families by name; inside a
// family by label set without le, then bucket, _sum, _count, then le as
// a number, then input order; repeats of an earlier series left out.
func referenceText(batches []series.Batch) string {
	type sample struct {
		s     *series.Series
		comp  int
		bound float64
		rest  series.Labels // labels without le
		key   string        // rest, spelled out
	}
	type fam struct {
		kind      string
		helpExact string
		helpAny   string
		samples   []sample
	}
	fams := map[string]*fam{}
	labelKey := func(ls series.Labels) string {
		var b strings.Builder
		for _, l := range ls {
			fmt.Fprintf(&b, "%q=%q,", l.Name, l.Value)
		}
		return b.String()
	}
	kinds := map[fodcv1.MetricType]string{tC: "counter", tG: "gauge", tH: "histogram"}
	for bi := range batches {
		for si := range batches[bi].Series {
			s := &batches[bi].Series[si]
			name, rest, comp, bound := referenceKey(s)
			f := fams[name]
			if f == nil {
				f = &fam{kind: kinds[s.Type]}
				fams[name] = f
			}
			if s.Help != "" {
				if f.helpExact == "" && s.Name == name {
					f.helpExact = s.Help
				}
				if f.helpAny == "" {
					f.helpAny = s.Help
				}
			}
			f.samples = append(f.samples, sample{s: s, comp: comp, bound: bound, rest: rest, key: labelKey(rest)})
		}
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	escQ := strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	var out strings.Builder
	for _, n := range names {
		f := fams[n]
		help := f.helpExact
		if help == "" {
			help = f.helpAny
		}
		if help != "" {
			fmt.Fprintf(&out, "# HELP %s %s\n", n, esc.Replace(help))
		}
		fmt.Fprintf(&out, "# TYPE %s %s\n", n, f.kind)
		sort.SliceStable(f.samples, func(i, j int) bool {
			a, b := f.samples[i], f.samples[j]
			if a.key != b.key {
				return lessLabels(a.rest, b.rest)
			}
			if a.comp != b.comp {
				return a.comp < b.comp
			}
			return a.bound < b.bound
		})
		seen := map[string]bool{}
		for _, smp := range f.samples {
			key := fmt.Sprintf("%s|%d|%v", smp.key, smp.comp, smp.bound)
			if seen[key] {
				continue
			}
			seen[key] = true
			out.WriteString(smp.s.Name)
			if len(smp.s.Labels) > 0 {
				parts := make([]string, 0, len(smp.s.Labels))
				for _, l := range smp.s.Labels {
					parts = append(parts, l.Name+`="`+escQ.Replace(l.Value)+`"`)
				}
				out.WriteString("{" + strings.Join(parts, ",") + "}")
			}
			v := smp.s.Points[len(smp.s.Points)-1].Value
			var vs string
			switch {
			case math.IsNaN(v):
				vs = "NaN"
			case math.IsInf(v, 1):
				vs = "+Inf"
			case math.IsInf(v, -1):
				vs = "-Inf"
			default:
				vs = strconv.FormatFloat(v, 'g', -1, 64)
			}
			out.WriteString(" " + vs + "\n")
		}
	}
	return out.String()
}

// referenceKey is where the reference puts a sample: its family, its
// labels without le, its component (bucket, _sum, _count) and its bound.
func referenceKey(s *series.Series) (name string, rest series.Labels, comp int, bound float64) {
	name = s.Name
	for _, l := range s.Labels {
		if l.Name == "le" && s.Type == tH {
			bound, _ = strconv.ParseFloat(l.Value, 64)
			continue
		}
		rest = append(rest, l)
	}
	if s.Type == tH {
		switch {
		case strings.HasSuffix(name, "_bucket"):
			name = strings.TrimSuffix(name, "_bucket")
		case strings.HasSuffix(name, "_sum"):
			name, comp = strings.TrimSuffix(name, "_sum"), 1
		case strings.HasSuffix(name, "_count"):
			name, comp = strings.TrimSuffix(name, "_count"), 2
		}
	}
	return name, rest, comp, bound
}

func lessLabels(a, b series.Labels) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].Name != b[i].Name {
			return a[i].Name < b[i].Name
		}
		if a[i].Value != b[i].Value {
			return a[i].Value < b[i].Value
		}
	}
	return len(a) < len(b)
}

// sortLikeDecode puts each batch in output order, stably, as decoding
// does for a reply: WriteText then merges runs instead of sorting.
func sortLikeDecode(batches []series.Batch) {
	for _, b := range batches {
		sort.SliceStable(b.Series, func(i, j int) bool {
			an, ar, ac, ab := referenceKey(&b.Series[i])
			bn, br, bc, bb := referenceKey(&b.Series[j])
			switch {
			case an != bn:
				return an < bn
			case lessLabels(ar, br) || lessLabels(br, ar):
				return lessLabels(ar, br)
			case ac != bc:
				return ac < bc
			}
			return ab < bb
		})
	}
}

// randomTypedBatches builds agents' batches of well-formed typed series
// with shared families, repeated series across and within batches,
// escapes in label values and HELP, and special float values.
func randomTypedBatches(rng *rand.Rand, agents, perAgent int) []series.Batch {
	values := []string{"a", "b", `q"uote`, `back\slash`, "new\nline", "ünïcode", "x"}
	bounds := []string{"0.1", "1", "1.0", "10", "+Inf", "2.5e-3"}
	specials := []float64{0, 1, -1, 2.5, 1e21, 1e-7, math.NaN(), math.Inf(1), math.Inf(-1), 123456789}
	helps := []string{"", "", "Plain help.", `Help with \ and` + "\nnewline."}
	labels := func() series.Labels {
		var ls series.Labels
		for _, n := range []string{"a", "instance", "pod_name", "zone"} {
			if rng.IntN(3) > 0 {
				ls = append(ls, series.Label{Name: n, Value: values[rng.IntN(len(values))]})
			}
		}
		return ls
	}
	withLe := func(ls series.Labels, le string) series.Labels {
		out := append(series.Labels{}, ls...)
		out = append(out, series.Label{Name: "le", Value: le})
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	point := func(v float64) []series.Point { return []series.Point{{TimestampMs: 1, Value: v}} }
	var batches []series.Batch
	for a := range agents {
		var ss []series.Series
		for len(ss) < perAgent {
			i := rng.IntN(12)
			help := helps[rng.IntN(len(helps))]
			v := specials[rng.IntN(len(specials))]
			switch i % 3 {
			case 0:
				ss = append(ss, series.Series{Name: fmt.Sprintf("c%d_total", i), Help: help, Type: tC, Labels: labels(), Points: point(v)})
			case 1:
				// Several points: the last one is written.
				ss = append(ss, series.Series{Name: fmt.Sprintf("g%d", i), Help: help, Type: tG, Labels: labels(),
					Points: []series.Point{{TimestampMs: 1, Value: -5}, {TimestampMs: 2, Value: v}}})
			default:
				name := fmt.Sprintf("h%d_seconds", i)
				ls := labels()
				for _, le := range bounds {
					if rng.IntN(4) > 0 {
						ss = append(ss, series.Series{Name: name + "_bucket", Type: tH, Labels: withLe(ls, le), Points: point(float64(rng.IntN(100)))})
					}
				}
				ss = append(ss,
					series.Series{Name: name + "_sum", Help: help, Type: tH, Labels: ls, Points: point(v)},
					series.Series{Name: name + "_count", Type: tH, Labels: ls, Points: point(float64(rng.IntN(100)))})
			}
		}
		rng.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
		batches = append(batches, series.Batch{Node: series.Node{AgentID: fmt.Sprint(a)}, Series: ss})
	}
	return batches
}

// TestWriteTextMatchesReference compares WriteText byte for byte with the
// plain reference rendering on random well-formed input, small and large
// enough for the parallel sort.
func TestWriteTextMatchesReference(t *testing.T) {
	tests := []struct {
		name            string
		rounds          int
		agents, perSize int  // agents: at most (random), or exactly when negative
		sorted          bool // each batch in output order, as decoded
	}{
		{"small", 200, 3, 20, false},
		{"medium", 10, 8, 300, false},
		{"parallel sort", 1, -8, parallelSortMin/8 + 500, false},
		{"small sorted", 200, 12, 20, true},
		{"medium sorted", 10, 40, 300, true},
		{"parallel merge", 1, -8, parallelSortMin/8 + 500, true},
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := range tc.rounds {
				agents := -tc.agents
				if tc.agents > 0 {
					agents = 1 + rng.IntN(tc.agents)
				}
				batches := randomTypedBatches(rng, agents, tc.perSize)
				if tc.sorted {
					sortLikeDecode(batches)
				}
				var buf bytes.Buffer
				st, err := WriteText(&buf, batches)
				require.NoError(t, err)
				want := referenceText(batches)
				if buf.String() != want {
					got, exp := strings.Split(buf.String(), "\n"), strings.Split(want, "\n")
					for i := range min(len(got), len(exp)) {
						require.Equal(t, exp[i], got[i], "round %d: first difference at line %d", round, i+1)
					}
					require.Len(t, got, len(exp), "round %d", round)
				}
				require.Zero(t, st.Dropped, "round %d", round)
				require.Equal(t, strings.Count(want, "\n")-strings.Count(want, "# "), st.Series, "round %d", round)
			}
		})
	}
}
