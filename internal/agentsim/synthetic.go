package agentsim

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

const (
	// syntheticStep is the spacing of the samples in a window reply.
	syntheticStep = 10 // seconds
	// maxSyntheticSteps caps a window reply, like the bounded flight
	// recorder of the real agent: only the latest steps are kept.
	maxSyntheticSteps = 360
	// syntheticDefaultWindow is the window used when a command has an end
	// but no start.
	syntheticDefaultWindow = 5 * time.Minute
	// syntheticEpoch is the Unix time at which every counter is zero.
	// Values depend only on the sample time, so the latest and the window
	// replies agree and two generators with the same seed agree.
	syntheticEpoch = 1_600_000_000
)

// syntheticGroups are BanyanDB's usual group names; later units get
// group_<n>.
var syntheticGroups = []string{"sw_metric", "sw_record", "sw_trace", "sw_property", "_schema", "sw_metricsMinute", "sw_metricsHour", "sw_metricsDay"}

// syntheticBuckets are the histogram's upper bounds and the fraction of the
// observations at or below each.
var syntheticBuckets = []struct {
	le   string
	frac float64
}{{"0.005", 0.2}, {"0.05", 0.55}, {"0.5", 0.85}, {"5", 0.97}, {"+Inf", 1}}

type valueKind int

const (
	kindCounter valueKind = iota // offset + rate*t, integral
	kindConst                    // offset
	kindWave                     // offset + rate*(1+sin), integral
	kindBucket                   // floor(rate*t*frac)
	kindSum                      // rate*t*frac (frac is the mean observation)
	kindCount                    // floor(rate*t)
)

// seriesDef is one synthetic series; its value is a pure function of time.
type seriesDef struct {
	name, help string
	typ        fodcv1.MetricType
	labels     map[string]string
	kind       valueKind
	rate       float64
	offset     float64
	frac       float64
}

func (d *seriesDef) value(unix int64) float64 {
	t := float64(max(unix-syntheticEpoch, 0))
	switch d.kind {
	case kindCounter:
		return math.Floor(d.offset + d.rate*t)
	case kindConst:
		return d.offset
	case kindWave:
		return math.Round(d.offset + d.rate*(1+math.Sin(t/300+d.frac)))
	case kindBucket:
		return math.Floor(math.Floor(d.rate*t) * d.frac)
	case kindSum:
		return math.Floor(d.rate*t) * d.frac
	case kindCount:
		return math.Floor(d.rate * t)
	}
	return 0
}

// syntheticOptions configures a generator.
type syntheticOptions struct {
	pod, role, container string
	nodeLabels           map[string]string // stamped as node_<k> (HEAD agents)
	typed                bool              // set Metric.type (v0.10.3 and HEAD)
	series               int
	seed                 int64
	now                  func() time.Time // default time.Now
}

// synthetic generates BanyanDB-like metrics replies. It is immutable after
// construction and safe for concurrent use.
type synthetic struct {
	series []seriesDef
	now    func() time.Time
}

// Synthetic returns a Config.Metrics function that answers like a HEAD agent
// on a BanyanDB data node called podName with seriesPerAgent series (0 or
// less: none): gauges banyandb_system_cpu_num and go_goroutines, then per
// group a banyandb_<kind>_total_written counter and a
// banyandb_liaison_grpc_total_latency histogram (_bucket, _sum, _count),
// filled up with more counters. Every series carries group/kind labels
// where they apply plus the agent-stamped identity labels node_role
// (ROLE_DATA) and pod_name, and its Metric.type. Counters grow with time.
// The same seed gives the same series and values.
//
// A latest command (no start or end) gets one Metric per series without
// Metric.timestamp. A window command gets one Metric per series for every
// multiple of 10 s of Unix time inside [start, end], each with
// Metric.timestamp set, capped at the latest 360 steps; a missing end means
// now and a missing start means five minutes before the end.
func Synthetic(podName string, seriesPerAgent int, seed int64) func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
	return newSynthetic(syntheticOptions{
		pod:    podName,
		role:   "ROLE_DATA",
		typed:  true,
		series: seriesPerAgent,
		seed:   seed,
	}).reply
}

func newSynthetic(o syntheticOptions) *synthetic {
	if o.now == nil {
		o.now = time.Now
	}
	rng := rand.New(rand.NewPCG(uint64(o.seed), 0x9e3779b97f4a7c15))
	identity := map[string]string{"node_role": o.role, "pod_name": o.pod}
	if o.container != "" {
		identity["container_name"] = o.container
	}
	for k, v := range o.nodeLabels {
		if v != "" && k != "pod_name" && k != "container_name" {
			identity["node_"+k] = v
		}
	}
	typ := func(t fodcv1.MetricType) fodcv1.MetricType {
		if o.typed {
			return t
		}
		return fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED
	}
	labels := func(extra ...string) map[string]string {
		m := maps.Clone(identity)
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	group := func(i int) string {
		if i < len(syntheticGroups) {
			return syntheticGroups[i]
		}
		return "group_" + strconv.Itoa(i)
	}
	kind := func(i int) string {
		if i%2 == 0 {
			return "measure"
		}
		return "stream"
	}
	counter := func(i int) seriesDef {
		name := fmt.Sprintf("banyandb_%s_total_written", kind(i))
		return seriesDef{
			name: name, help: "Total number of " + kind(i) + " elements written.",
			typ: typ(fodcv1.MetricType_METRIC_TYPE_COUNTER), labels: labels("group", group(i)),
			kind: kindCounter, rate: 1 + rng.Float64()*99, offset: math.Floor(rng.Float64() * 1000),
		}
	}

	n := max(o.series, 0)
	defs := make([]seriesDef, 0, n)
	fixed := []seriesDef{
		{
			name: "banyandb_system_cpu_num", help: "Number of logical CPUs.",
			typ: typ(fodcv1.MetricType_METRIC_TYPE_GAUGE), labels: labels(),
			kind: kindConst, offset: float64(int(4) << rng.IntN(4)),
		},
		{
			name: "go_goroutines", help: "Number of goroutines that currently exist.",
			typ: typ(fodcv1.MetricType_METRIC_TYPE_GAUGE), labels: labels(),
			kind: kindWave, offset: 80 + float64(rng.IntN(100)), rate: 20 + float64(rng.IntN(40)), frac: rng.Float64() * 2 * math.Pi,
		},
	}
	defs = append(defs, fixed[:min(n, len(fixed))]...)
	unitSize := 2 + len(syntheticBuckets) + 1 // counter, buckets, _sum, _count
	for i := 0; len(defs) < n; i++ {
		if n-len(defs) < unitSize {
			defs = append(defs, counter(i))
			continue
		}
		defs = append(defs, counter(i))
		const hist = "banyandb_liaison_grpc_total_latency"
		htyp := typ(fodcv1.MetricType_METRIC_TYPE_HISTOGRAM)
		rate, mean := 0.5+rng.Float64()*50, 0.01+rng.Float64()*0.1
		for _, b := range syntheticBuckets {
			defs = append(defs, seriesDef{
				name: hist + "_bucket", typ: htyp, labels: labels("group", group(i), "kind", kind(i), "le", b.le),
				kind: kindBucket, rate: rate, frac: b.frac,
			})
		}
		defs = append(defs,
			seriesDef{name: hist + "_sum", typ: htyp, labels: labels("group", group(i), "kind", kind(i)), kind: kindSum, rate: rate, frac: mean},
			seriesDef{name: hist + "_count", typ: htyp, labels: labels("group", group(i), "kind", kind(i)), kind: kindCount, rate: rate},
		)
	}
	return &synthetic{series: defs, now: o.now}
}

// reply answers one metrics command.
func (g *synthetic) reply(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
	now := g.now()
	out := &fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(now)}
	start, end := cmd.GetStartTime(), cmd.GetEndTime()
	if start == nil && end == nil {
		out.Metrics = make([]*fodcv1.Metric, 0, len(g.series))
		for i := range g.series {
			out.Metrics = append(out.Metrics, g.metric(&g.series[i], now.Unix(), false))
		}
		return out
	}
	endSec := now.Unix()
	if end != nil {
		endSec = end.GetSeconds()
	}
	startSec := endSec - int64(syntheticDefaultWindow/time.Second)
	if start != nil {
		startSec = start.GetSeconds()
		if start.GetNanos() > 0 {
			startSec++
		}
	}
	first := ceilDiv(startSec, syntheticStep) * syntheticStep
	if first > endSec {
		return out
	}
	steps := (endSec-first)/syntheticStep + 1
	if steps > maxSyntheticSteps {
		first += (steps - maxSyntheticSteps) * syntheticStep
		steps = maxSyntheticSteps
	}
	out.Metrics = make([]*fodcv1.Metric, 0, int(steps)*len(g.series))
	for t := first; t <= endSec; t += syntheticStep {
		for i := range g.series {
			out.Metrics = append(out.Metrics, g.metric(&g.series[i], t, true))
		}
	}
	return out
}

func (g *synthetic) metric(d *seriesDef, unix int64, stamped bool) *fodcv1.Metric {
	m := &fodcv1.Metric{
		Name:        d.name,
		Labels:      maps.Clone(d.labels),
		Value:       d.value(unix),
		Description: d.help,
		Type:        d.typ,
	}
	if stamped {
		m.Timestamp = &timestamppb.Timestamp{Seconds: unix}
	}
	return m
}

// ceilDiv returns ceil(a/b) for b > 0.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a > 0 {
		q++
	}
	return q
}
