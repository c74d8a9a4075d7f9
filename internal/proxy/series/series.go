// Package series is the proxy's in-memory model of collected metrics: what
// one agent answered, enriched with the node's identity, ready to render.
//
// A Batch is the general form, with strings and slices per series; a
// Packed is the compact form the /metrics hot path carries (packed.go).
// The types are plain values. Nothing here is safe for concurrent
// mutation; a batch is built by one goroutine and only read afterwards.
package series

import (
	"cmp"
	"strings"
	"sync/atomic"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Label is one label pair.
type Label struct {
	Name, Value string
}

// Labels is a label set sorted by Name with unique names and no empty
// values (an empty value is the same as an absent label in Prometheus).
type Labels []Label

// Get returns the value of the label called name, or "".
func (ls Labels) Get(name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// CompareSkip orders two label sets pair by pair (name, then value; a
// proper prefix first), ignoring the pair at index askip of a and bskip of
// b (-1: none). Strings shared by both sides compare by pointer.
func CompareSkip(a Labels, askip int, b Labels, bskip int) int {
	i, j := 0, 0
	for {
		if i == askip {
			i++
		}
		if j == bskip {
			j++
		}
		if i >= len(a) || j >= len(b) {
			return cmp.Compare(len(a)-i, len(b)-j)
		}
		if c := strings.Compare(a[i].Name, b[j].Name); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].Value, b[j].Value); c != 0 {
			return c
		}
		i++
		j++
	}
}

// String renders the set as {a="1",b="2"} without escaping; for keys and
// debugging only.
func (ls Labels) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteString(`="`)
		b.WriteString(l.Value)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Point is one sample value at a time in Unix milliseconds.
type Point struct {
	TimestampMs int64
	Value       float64
}

// Series is one series of one agent: a name, a label set and its points in
// ascending time order (a latest answer has exactly one point).
type Series struct {
	Name   string
	Help   string
	Type   fodcv1.MetricType
	Labels Labels
	Points []Point
}

// Node is the identity of the agent a batch came from.
type Node struct {
	AgentID string
	PodName string
	// Role is the role string the agent registered with (e.g. ROLE_DATA).
	Role string
	// IP and Port are the node's primary address, when known.
	IP   string
	Port int
}

// Batch is everything one agent answered to one metrics command.
type Batch struct {
	Node   Node
	Series []Series
	// CleanLabels promises that every series' labels are sorted by name,
	// with unique valid names (ValidLabelName) and non-empty, valid UTF-8
	// values, as decoding makes them; the renderer then skips checking
	// them. Leave it false when unsure.
	CleanLabels bool
}

// Window bounds a metrics request. The zero value asks for the latest
// values; a window with either bound asks for every sample inside it.
type Window struct {
	Start, End time.Time // zero: unbounded on that side
}

// IsLatest reports whether w asks for the latest values.
func (w Window) IsLatest() bool { return w.Start.IsZero() && w.End.IsZero() }

// RawMetrics is one metrics reply of an agent as it came off the wire: a
// StreamMetricsRequest in protobuf encoding, not yet decoded. Bytes are
// only read once received.
//
// Bytes may be a buffer lent by a pool (NewPooledRaw), counted by
// references: the receiver holds one, each reader it hands the reply to
// gets one (Share), and whoever is done releases theirs (Release); the
// last release returns the buffer, so nothing may read Bytes afterwards.
// A RawMetrics built as a plain struct has nothing to return and ignores
// the counting.
type RawMetrics struct {
	Bytes []byte
	free  func()
	refs  atomic.Int32
}

// NewPooledRaw returns a reply of b, held once by the caller; free
// returns b to its pool when the last reference is released.
func NewPooledRaw(b []byte, free func()) *RawMetrics {
	r := &RawMetrics{Bytes: b, free: free}
	r.refs.Store(1)
	return r
}

// Share adds n references, for n readers the holder hands r to.
func (r *RawMetrics) Share(n int) {
	if r != nil && r.free != nil {
		r.refs.Add(int32(n))
	}
}

// Release drops one reference; the last returns the buffer.
func (r *RawMetrics) Release() {
	if r == nil || r.free == nil {
		return
	}
	switch n := r.refs.Add(-1); {
	case n == 0:
		r.Bytes = nil
		r.free()
	case n < 0:
		panic("series: RawMetrics released more often than held")
	}
}
