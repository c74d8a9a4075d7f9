package recorder

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/scrape"
)

// workload is a synthetic but realistic BanyanDB-like scrape history: about
// 2,000 series scraped every 10 s with a few ms of jitter. Its shape follows
// a real banyand /metrics page (see the fixtures): many idle or constant
// gauges, counters that grow by small integers, a few busy counters, integer
// and float gauges that wander, and latency histograms.
type workload struct {
	fams []scrape.Family // one scrape's families; values are overwritten per scrape
	ts   []int64         // scrape time of each scrape
	vals [][]float64     // vals[scrape][sample], in family order
}

// jitterMs is how far scrape times stray from the 10 s grid, ± (default 3;
// FODC_RECORDER_JITTER_MS changes it: the agent's own scrapes start on a
// ticker, within a millisecond of the grid).
var jitterMs = func() int {
	if n, err := strconv.Atoi(os.Getenv("FODC_RECORDER_JITTER_MS")); err == nil && n >= 0 {
		return n
	}
	return 3
}()

func newWorkload(scrapes int, seed uint64) *workload {
	rng := rand.New(rand.NewPCG(seed, 42))
	base := []scrape.Label{{Name: "node_role", Value: "ROLE_DATA"}, {Name: "pod_name", Value: "banyand-data-0"}}
	withLabels := func(kv ...string) []scrape.Label {
		var ls []scrape.Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, scrape.Label{Name: kv[i], Value: kv[i+1]})
		}
		ls = append(ls, base...)
		sortLabels(ls)
		return ls
	}
	type gen func(prev float64) float64
	var (
		w    workload
		gens []gen
		init []float64
	)
	addFamily := func(name string, typ fodcv1.MetricType, n int, mk func(i int) (scrape.Sample, gen, float64)) {
		f := scrape.Family{Name: name, Help: name + " help text.", Type: typ}
		for i := range n {
			s, g, v0 := mk(i)
			f.Samples = append(f.Samples, s)
			gens = append(gens, g)
			init = append(init, v0)
		}
		w.fams = append(w.fams, f)
	}
	const groups = 10
	// Counters: 600 series in 6 families.
	for fi, kind := range []string{"idle", "small", "small", "idle", "busy", "small"} {
		name := fmt.Sprintf("banyandb_measure_%s_ops_%d_total", kind, fi)
		addFamily(name, fodcv1.MetricType_METRIC_TYPE_COUNTER, 100, func(i int) (scrape.Sample, gen, float64) {
			s := scrape.Sample{Name: name, Labels: withLabels("group", fmt.Sprintf("g%d", i%groups), "shard", fmt.Sprint(i/groups))}
			switch kind {
			case "idle":
				return s, func(p float64) float64 {
					if rng.IntN(50) == 0 {
						return p + 1
					}
					return p
				}, float64(rng.IntN(10))
			case "busy":
				return s, func(p float64) float64 { return p + float64(150+rng.IntN(100)) }, float64(rng.IntN(1e7))
			default:
				return s, func(p float64) float64 { return p + float64(rng.IntN(6)) }, float64(rng.IntN(1e4))
			}
		})
	}
	// Gauges: 400 series in 4 families.
	addFamily("banyandb_system_config_value", fodcv1.MetricType_METRIC_TYPE_GAUGE, 100, func(i int) (scrape.Sample, gen, float64) {
		return scrape.Sample{Name: "banyandb_system_config_value", Labels: withLabels("key", fmt.Sprintf("k%d", i))},
			func(p float64) float64 { return p }, float64(rng.IntN(1 << 30))
	})
	addFamily("banyandb_queue_size", fodcv1.MetricType_METRIC_TYPE_GAUGE, 100, func(i int) (scrape.Sample, gen, float64) {
		return scrape.Sample{Name: "banyandb_queue_size", Labels: withLabels("queue", fmt.Sprintf("q%d", i))},
			func(p float64) float64 { return max(0, p+float64(rng.IntN(7)-3)) }, float64(rng.IntN(100))
	})
	addFamily("banyandb_memory_bytes", fodcv1.MetricType_METRIC_TYPE_GAUGE, 100, func(i int) (scrape.Sample, gen, float64) {
		return scrape.Sample{Name: "banyandb_memory_bytes", Labels: withLabels("area", fmt.Sprintf("a%d", i))},
			func(p float64) float64 { return max(0, p+float64((rng.IntN(33)-16)*4096)) }, float64(rng.IntN(1<<20) * 4096)
	})
	addFamily("banyandb_system_cpu_state", fodcv1.MetricType_METRIC_TYPE_GAUGE, 100, func(i int) (scrape.Sample, gen, float64) {
		return scrape.Sample{Name: "banyandb_system_cpu_state", Labels: withLabels("cpu", fmt.Sprint(i))},
			func(p float64) float64 { return min(1, max(0, p+(rng.Float64()-0.5)*0.01)) }, rng.Float64() / 10
	})
	// Histograms: 80 series of 12 buckets + sum + count = 1,120 series.
	bounds := []string{"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"}
	for hi := range 4 {
		name := fmt.Sprintf("banyandb_query_%d_latency_seconds", hi)
		f := scrape.Family{Name: name, Help: "Latency.", Type: fodcv1.MetricType_METRIC_TYPE_HISTOGRAM}
		for i := range 20 {
			ls := withLabels("group", fmt.Sprintf("g%d", i%groups), "op", fmt.Sprintf("op%d", i/groups))
			busy := i%3 != 0
			// A shared per-scrape observation count drives the buckets,
			// sum and count of one histogram consistently.
			var obs []int
			for bi, le := range bounds {
				bl := append([]scrape.Label{{Name: "le", Value: le}}, ls...)
				sortLabels(bl)
				f.Samples = append(f.Samples, scrape.Sample{Name: name + "_bucket", Labels: bl})
				bi := bi
				gens = append(gens, func(p float64) float64 {
					if bi == 0 {
						obs = obs[:0]
						n := 0
						if busy {
							n = rng.IntN(8)
						}
						for range n {
							obs = append(obs, min(len(bounds)-1, int(rng.ExpFloat64()*3)))
						}
					}
					for _, o := range obs {
						if o <= bi {
							p++
						}
					}
					return p
				})
				init = append(init, float64(1000*(bi+1)))
			}
			f.Samples = append(f.Samples, scrape.Sample{Name: name + "_sum", Labels: ls})
			gens = append(gens, func(p float64) float64 {
				for range obs {
					p += rng.ExpFloat64() * 0.01
				}
				return p
			})
			init = append(init, 123.456)
			f.Samples = append(f.Samples, scrape.Sample{Name: name + "_count", Labels: ls})
			gens = append(gens, func(p float64) float64 { return p + float64(len(obs)) })
			init = append(init, 12000)
		}
		w.fams = append(w.fams, f)
	}

	t := int64(1_795_723_720_000)
	prev := init
	for i := range scrapes {
		w.ts = append(w.ts, t+int64(i)*10_000+int64(rng.IntN(2*jitterMs+1)-jitterMs))
		cur := make([]float64, len(gens))
		for j, g := range gens {
			if i == 0 {
				cur[j] = prev[j]
			} else {
				cur[j] = g(prev[j])
			}
		}
		w.vals = append(w.vals, cur)
		prev = cur
	}
	return &w
}

func sortLabels(ls []scrape.Label) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// load sets the families to scrape i.
func (w *workload) load(i int) {
	k := 0
	for fi := range w.fams {
		for si := range w.fams[fi].Samples {
			s := &w.fams[fi].Samples[si]
			s.Value = w.vals[i][k]
			s.TimestampMs = w.ts[i]
			k++
		}
	}
}

func (w *workload) series() int { return len(w.vals[0]) }

func TestWorkloadShape(t *testing.T) {
	w := newWorkload(2, 1)
	require.Equal(t, 2120, w.series())
	w.load(1)
	require.Equal(t, w.ts[1], w.fams[0].Samples[0].TimestampMs)
}

// BenchmarkAppend ingests two hours of scrapes (FODC_RECORDER_SCRAPES
// changes how many) and reports what the recorder holds per sample, all
// overheads included (bytes/sample) and encoded chunks alone.
func BenchmarkAppend(b *testing.B) {
	scrapes := 720 // two hours at 10 s
	if n, err := strconv.Atoi(os.Getenv("FODC_RECORDER_SCRAPES")); err == nil && n > 0 {
		scrapes = n
	}
	w := newWorkload(scrapes, 1)
	for _, chunkSamples := range []int{120, DefaultChunkSamples, 480} {
		b.Run(fmt.Sprintf("chunk=%d", chunkSamples), func(b *testing.B) {
			var st Stats
			var encoded int64
			b.ReportAllocs()
			for b.Loop() {
				r, err := New(Options{BudgetBytes: 1 << 30, ChunkSamples: chunkSamples})
				if err != nil {
					b.Fatal(err)
				}
				for i := range scrapes {
					w.load(i)
					r.Append("data", w.ts[i], w.fams)
				}
				st = r.Stats()
				encoded = r.encodedBytes()
			}
			if st.Samples != int64(scrapes*w.series()) {
				b.Fatalf("held %d samples, want %d", st.Samples, scrapes*w.series())
			}
			b.ReportMetric(float64(st.Bytes)/float64(st.Samples), "bytes/sample")
			b.ReportMetric(float64(encoded)/float64(st.Samples), "chunk-bytes/sample")
			b.ReportMetric(float64(st.Samples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// encodedBytes sums the encoded chunk bytes only.
func (r *Recorder) encodedBytes() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var n int64
	for _, s := range r.sealed {
		for _, c := range s.sealed {
			n += int64(len(c.data))
		}
	}
	for _, c := range r.open {
		n += int64(len(c.app.w.b))
	}
	return n
}
