package bench

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// MetricPrefix starts the name of every series the simulated agents send,
// so that scrapers can tell them from the proxy's own series.
const MetricPrefix = "bench_"

// podPlaceholder stands for the pod name in a marshalled template reply.
// Pod names all have its length, so replacing it in the bytes keeps every
// length prefix of the encoding valid.
const podPlaceholder = "bench-\x01\x02\x03\x04\x05\x06"

// PodName returns the pod name of simulated agent i (fixed width, so that
// every agent's reply is the template with the placeholder replaced).
func PodName(i int) string { return fmt.Sprintf("bench-%06d", i) }

// Shape describes the metrics every simulated agent reports.
type Shape struct {
	// Series is the number of series per agent.
	Series int
	// Families is the number of metric families the series are spread over.
	Families int
	// Labels is the number of extra labels per series, besides the
	// identity labels the agent stamps (node_role, pod_name,
	// container_name, node_type).
	Labels int
	// Cardinality is the number of distinct values of each extra label.
	Cardinality int
	// HistogramShare is the fraction of families that are histograms.
	HistogramShare float64
	// Buckets is the number of buckets of a histogram, +Inf included.
	Buckets int
	// Typed sets Metric.type (agents of v0.10.3 and later).
	Typed bool
	// Role is the node_role label (ROLE_DATA by default).
	Role string
	// NodeType is the node's "type" label, stamped as node_type (empty:
	// none).
	NodeType string
}

// validate reports every impossible combination at once.
func (s Shape) validate() error {
	var errs []error
	if s.Series < 0 {
		errs = append(errs, fmt.Errorf("--series (%d) must not be negative", s.Series))
	}
	if s.Families < 1 {
		errs = append(errs, fmt.Errorf("--families (%d) must be at least 1", s.Families))
	}
	if s.Labels < 0 || s.Cardinality < 1 {
		errs = append(errs, fmt.Errorf("--labels (%d) must not be negative and --label-cardinality (%d) must be at least 1", s.Labels, s.Cardinality))
	}
	if s.HistogramShare < 0 || s.HistogramShare > 1 {
		errs = append(errs, fmt.Errorf("--histogram-share (%g) must be within [0, 1]", s.HistogramShare))
	}
	if s.Buckets < 1 {
		errs = append(errs, fmt.Errorf("--buckets (%d) must be at least 1", s.Buckets))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	perFamily := (s.Series + s.Families - 1) / s.Families
	if combos := math.Pow(float64(s.Cardinality), float64(s.Labels)); combos < float64(perFamily) {
		errs = append(errs, fmt.Errorf("--label-cardinality^--labels (%d^%d) must be at least the series per family (%d), or series would repeat", s.Cardinality, s.Labels, perFamily))
	}
	return errors.Join(errs...)
}

// familyPlan is one family of the shape and its number of children (label
// combinations); a histogram child is Buckets+2 series.
type familyPlan struct {
	name     string
	typ      fodcv1.MetricType
	children int
}

// plan spreads the series over the families: histogram families come
// first and get whole histograms; the other families, counters and gauges
// alternately, take up the rest so that the total is exact. When every
// family is a histogram and the series do not divide evenly, the last
// family becomes a gauge holding the remainder.
func (s Shape) plan() []familyPlan {
	unit := s.Buckets + 2
	nh := int(math.Round(float64(s.Families) * s.HistogramShare))
	quota := func(i int) int {
		q := s.Series / s.Families
		if i < s.Series%s.Families {
			q++
		}
		return q
	}
	out := make([]familyPlan, 0, s.Families)
	left := s.Series
	for i := range nh {
		c := quota(i) / unit
		out = append(out, familyPlan{name: fmt.Sprintf("%sh%04d_seconds", MetricPrefix, i), typ: fodcv1.MetricType_METRIC_TYPE_HISTOGRAM, children: c})
		left -= c * unit
	}
	rest := s.Families - nh
	if rest == 0 && left > 0 {
		out[len(out)-1] = familyPlan{name: fmt.Sprintf("%sg%04d", MetricPrefix, nh-1), typ: fodcv1.MetricType_METRIC_TYPE_GAUGE, children: left + out[len(out)-1].children*unit}
		return out
	}
	for j := range rest {
		c := left / rest
		if j < left%rest {
			c++
		}
		i := nh + j
		if j%2 == 0 {
			out = append(out, familyPlan{name: fmt.Sprintf("%sc%04d_total", MetricPrefix, i), typ: fodcv1.MetricType_METRIC_TYPE_COUNTER, children: c})
		} else {
			out = append(out, familyPlan{name: fmt.Sprintf("%sg%04d", MetricPrefix, i), typ: fodcv1.MetricType_METRIC_TYPE_GAUGE, children: c})
		}
	}
	return out
}

// metrics builds one agent reply's series for the given pod; with stamp
// set every Metric carries ts as its timestamp. Values depend on step so
// that the points of a window differ.
func (s Shape) metrics(pod string, stamp *timestamppb.Timestamp, step int) []*fodcv1.Metric {
	identity := map[string]string{"node_role": s.role(), "pod_name": pod, "container_name": "banyandb"}
	if s.NodeType != "" {
		identity["node_type"] = s.NodeType
	}
	typ := func(t fodcv1.MetricType) fodcv1.MetricType {
		if s.Typed {
			return t
		}
		return fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED
	}
	labels := func(child int, extra ...string) map[string]string {
		m := make(map[string]string, len(identity)+s.Labels+len(extra)/2)
		for k, v := range identity {
			m[k] = v
		}
		// Child number in base Cardinality, one digit per label.
		for l := range s.Labels {
			m["l"+strconv.Itoa(l)] = "v" + strconv.Itoa(child%s.Cardinality)
			child /= s.Cardinality
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	out := make([]*fodcv1.Metric, 0, s.Series)
	add := func(name, help string, t fodcv1.MetricType, ls map[string]string, v float64) {
		out = append(out, &fodcv1.Metric{Name: name, Labels: ls, Value: v, Description: help, Type: typ(t), Timestamp: stamp})
	}
	for fi, f := range s.plan() {
		help := "Synthetic family " + strconv.Itoa(fi) + " of fodc-bench."
		for c := range f.children {
			base := float64((fi+1)*1000 + c + step)
			switch f.typ {
			case fodcv1.MetricType_METRIC_TYPE_HISTOGRAM:
				count := base * 10
				for b := range s.Buckets {
					le := "+Inf"
					v := count
					if b < s.Buckets-1 {
						le = strconv.FormatFloat(0.001*math.Pow(4, float64(b)), 'g', -1, 64)
						v = math.Floor(count * float64(b+1) / float64(s.Buckets))
					}
					add(f.name+"_bucket", "", f.typ, labels(c, "le", le), v)
				}
				add(f.name+"_sum", "", f.typ, labels(c), count*0.0125)
				add(f.name+"_count", "", f.typ, labels(c), count)
			case fodcv1.MetricType_METRIC_TYPE_COUNTER:
				add(f.name, help, f.typ, labels(c), base)
			default:
				add(f.name, help, f.typ, labels(c), base/7)
			}
		}
	}
	return out
}

func (s Shape) role() string {
	if s.Role == "" {
		return "ROLE_DATA"
	}
	return s.Role
}

// Payloads holds the marshalled replies of one shape: built once, then
// specialised per agent by replacing the pod name placeholder. It is
// immutable after construction and safe for concurrent use.
type Payloads struct {
	latest []byte
	window []byte // nil when the window depth is 0
	// WindowPoints is the number of points per series in a window reply.
	WindowPoints int
}

// NewPayloads marshals the latest reply of shape s and, with depth > 0, a
// window reply holding depth points per series spaced step apart and
// ending at end.
func NewPayloads(s Shape, depth int, step time.Duration, end time.Time) (*Payloads, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	latest, err := proto.Marshal(&fodcv1.StreamMetricsRequest{
		Timestamp: timestamppb.New(end),
		Metrics:   s.metrics(podPlaceholder, nil, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("marshal latest reply: %w", err)
	}
	p := &Payloads{latest: latest, WindowPoints: depth}
	if depth > 0 {
		var ms []*fodcv1.Metric
		for i := range depth {
			ts := timestamppb.New(end.Add(-time.Duration(depth-1-i) * step).Truncate(time.Second))
			ms = append(ms, s.metrics(podPlaceholder, ts, i)...)
		}
		p.window, err = proto.Marshal(&fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(end), Metrics: ms})
		if err != nil {
			return nil, fmt.Errorf("marshal window reply: %w", err)
		}
	}
	return p, nil
}

// Latest returns agent pod's latest reply, marshalled. The caller owns it.
func (p *Payloads) Latest(pod string) []byte { return specialise(p.latest, pod) }

// Window returns pod's window reply, marshalled, or nil without history.
func (p *Payloads) Window(pod string) []byte {
	if p.window == nil {
		return nil
	}
	return specialise(p.window, pod)
}

// LatestSize is the size of one agent's latest reply in bytes.
func (p *Payloads) LatestSize() int { return len(p.latest) }

func specialise(tmpl []byte, pod string) []byte {
	if len(pod) != len(podPlaceholder) {
		panic(fmt.Sprintf("bench: pod name %q is not %d bytes long", pod, len(podPlaceholder)))
	}
	return bytes.ReplaceAll(tmpl, []byte(podPlaceholder), []byte(pod))
}
