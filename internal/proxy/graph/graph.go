// Package graph computes the request pipeline of a BanyanDB cluster from
// the queue metrics its nodes export: who sends messages to whom, for which
// operation and group, how many per second, how slowly and how often they
// fail. Rates come from a window of each agent's flight recorder (the first
// and the last sample of each series in it), not from a second scrape.
//
// Publishers record an edge first (banyandb_queue_pub_*: the sender's view
// of the remote node); a receiver's banyandb_queue_sub_* series fill in the
// edges no publisher recorded.
package graph

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Metric families read, by side: <prefix>started counts messages,
// <prefix>err failed ones, <prefix>sent_bytes file bytes, and the latency
// histogram is <prefix>latency (publishers) or <prefix>handle_latency
// (receivers).
const (
	pubPrefix = "banyandb_queue_pub_total_"
	subPrefix = "banyandb_queue_sub_total_"
)

// Edge is one pipeline edge: messages of one operation and group from
// Source to Target.
type Edge struct {
	Source, Target   string
	Operation, Group string
	// RecordedBy is "publisher" or "subscriber": whose metrics gave it.
	RecordedBy string
	// Rate is messages per second over the window.
	Rate float64
	// ErrorRatio is failed messages over messages in the window (0 when
	// none were sent).
	ErrorRatio float64
	// P99Seconds is the 99th percentile latency in the window, estimated
	// from the histogram's buckets; nil without observations.
	P99Seconds *float64
	// BytesPerSecond is set for file synchronisation edges.
	BytesPerSecond *float64
}

type edgeKey struct{ source, target, op, group string }

// acc accumulates the increases of one edge's series over the window.
type acc struct {
	started, errs, bytes float64
	seconds              float64 // the longest span of a started series
	buckets              map[float64]float64
	hasBytes             bool
}

// Pipeline computes the edges from the window batches of the agents.
// nodeName maps a batch's node (its pod name) and the remote_node label
// values to the names the graph uses; it may return its argument.
func Pipeline(batches []series.Batch, nodeName func(string) string) []Edge {
	pub := map[edgeKey]*acc{}
	sub := map[edgeKey]*acc{}
	for _, b := range batches {
		self := nodeName(b.Node.PodName)
		for i := range b.Series {
			s := &b.Series[i]
			var (
				m      map[edgeKey]*acc
				metric string
				sender bool
			)
			switch {
			case strings.HasPrefix(s.Name, pubPrefix):
				m, metric, sender = pub, strings.TrimPrefix(s.Name, pubPrefix), true
			case strings.HasPrefix(s.Name, subPrefix):
				m, metric = sub, strings.TrimPrefix(s.Name, subPrefix)
			default:
				continue
			}
			remote := s.Labels.Get("remote_node")
			if remote == "" || len(s.Points) == 0 {
				continue
			}
			remote = nodeName(remote)
			k := edgeKey{source: remote, target: self, op: s.Labels.Get("operation"), group: s.Labels.Get("group")}
			if sender {
				k.source, k.target = self, remote
			}
			a := m[k]
			if a == nil {
				a = &acc{buckets: map[float64]float64{}}
				m[k] = a
			}
			inc, span := increase(s.Points)
			switch {
			case metric == "started":
				a.started += inc
				a.seconds = max(a.seconds, span)
			case metric == "err":
				a.errs += inc
			case metric == "sent_bytes":
				a.bytes += inc
				a.hasBytes = true
			case metric == "latency_bucket" || metric == "handle_latency_bucket":
				if le, err := strconv.ParseFloat(s.Labels.Get("le"), 64); err == nil {
					a.buckets[le] += inc
				}
			}
		}
	}
	var out []Edge
	add := func(k edgeKey, a *acc, by string) {
		e := Edge{Source: k.source, Target: k.target, Operation: k.op, Group: k.group, RecordedBy: by}
		if a.seconds > 0 {
			e.Rate = a.started / a.seconds
			if a.hasBytes {
				v := a.bytes / a.seconds
				e.BytesPerSecond = &v
			}
		}
		if a.started > 0 {
			e.ErrorRatio = min(a.errs/a.started, 1)
		}
		if q, ok := quantile(0.99, a.buckets); ok {
			e.P99Seconds = &q
		}
		out = append(out, e)
	}
	for k, a := range pub {
		add(k, a, "publisher")
	}
	for k, a := range sub {
		if _, ok := pub[k]; !ok {
			add(k, a, "subscriber")
		}
	}
	slices.SortFunc(out, func(x, y Edge) int {
		return cmp.Or(cmp.Compare(x.Source, y.Source), cmp.Compare(x.Target, y.Target),
			cmp.Compare(x.Operation, y.Operation), cmp.Compare(x.Group, y.Group))
	})
	return out
}

// increase is how much a counter grew between its first and last point,
// counting a drop as a reset (like Prometheus' increase without
// extrapolation), and the seconds between those points.
func increase(ps []series.Point) (inc, seconds float64) {
	for i := 1; i < len(ps); i++ {
		d := ps[i].Value - ps[i-1].Value
		if d < 0 {
			d = ps[i].Value // reset
		}
		inc += d
	}
	return inc, float64(ps[len(ps)-1].TimestampMs-ps[0].TimestampMs) / 1000
}

// quantile estimates the q-quantile from cumulative bucket increases the
// way PromQL's histogram_quantile does: linear within the bucket, the
// second highest bound when it falls in the +Inf bucket.
func quantile(q float64, buckets map[float64]float64) (float64, bool) {
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) < 2 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return 0, false
	}
	total := buckets[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, le := range bounds {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevBound, true
			}
			if c == prevCount {
				return le, true
			}
			return prevBound + (le-prevBound)*(rank-prevCount)/(c-prevCount), true
		}
		prevBound, prevCount = le, c
	}
	return prevBound, true
}
