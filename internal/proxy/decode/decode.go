package decode

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Field numbers of the messages Batch reads (PROTOCOL.md §4.1).
const (
	replyMetrics   protowire.Number = 1 // StreamMetricsRequest.metrics
	replyTimestamp protowire.Number = 2 // StreamMetricsRequest.timestamp

	metricName        protowire.Number = 1
	metricLabels      protowire.Number = 2
	metricValue       protowire.Number = 3
	metricDescription protowire.Number = 4
	metricTimestamp   protowire.Number = 5
	metricType        protowire.Number = 6

	entryKey   protowire.Number = 1 // map entry
	entryValue protowire.Number = 2

	tsSeconds protowire.Number = 1 // google.protobuf.Timestamp
	tsNanos   protowire.Number = 2
)

// Limits bound one reply. A reply over any of them is refused whole (a
// *LimitError), never truncated: a partial reply would look like a node
// that lost series. A zero field means no limit.
type Limits struct {
	// MaxSeries bounds the metrics of one reply (a window reply has one
	// per sample).
	MaxSeries int
	// MaxLabels bounds the labels of one metric as the agent sent them.
	MaxLabels int
	// MaxLabelNameLen and MaxLabelValueLen bound one label, in bytes.
	MaxLabelNameLen  int
	MaxLabelValueLen int
	// MaxNameLen bounds a metric name, in bytes.
	MaxNameLen int
}

// The reasons of a LimitError, as metrics and /cluster show them.
const (
	ReasonSeriesPerReply   = "series_per_reply"
	ReasonLabelsPerSeries  = "labels_per_series"
	ReasonLabelNameLength  = "label_name_length"
	ReasonLabelValueLength = "label_value_length"
	ReasonMetricNameLength = "metric_name_length"
)

// LimitError is a reply refused because it is over one of the Limits.
type LimitError struct {
	// Reason is one of the Reason* constants.
	Reason string
	// Got and Limit are the offending size and the limit (for
	// labels_per_series, Got is the count at which decoding stopped).
	Got, Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("reply over the %s limit (%d > %d)", e.Reason, e.Got, e.Limit)
}

func over(limit, got int) bool { return limit > 0 && got > limit }

// Errors Batch wraps.
var (
	errMalformed   = errors.New("malformed protobuf")
	errInvalidUTF8 = errors.New("string field is not valid UTF-8")
)

// Batch converts raw, a StreamMetricsRequest in its wire encoding, into a
// series.Batch for info's node. It reads raw once, without building the
// message or a map per label set.
//
// Every sample gets its labels as a sorted series.Labels without empty
// values and with invalid UTF-8 replaced by U+FFFD. The node's identity is
// added as node_<k> for each registered label k (except pod_name and
// container_name), node_role, pod_name and node_address ("ip:port") when
// the value is not empty. These identity labels win: a sample's label of the
// same name and value stays one label, one with another value is kept as
// exported_<name>. Samples under a name the proxy writes itself
// (ReservedName) and samples whose container_name the agent did not
// register are dropped. The agent id is never added: it changes on every
// reconnect.
//
// A point's time is Metric.timestamp if set, else reply.timestamp if set,
// else receivedAt. With window false every Metric becomes one Series with
// one Point. With window true Metrics with equal name and labels form one
// Series whose points ascend in time; of several points with the same time
// the last one in the reply is kept. A series' Help is the first non-empty
// description and its Type the first specified type in reply order. A
// window batch's Series are sorted by name, then label set; a latest
// batch's are in the text renderer's order (see reply.sortLatest), so
// that rendering merges agents' batches instead of sorting them.
// It fails where
// proto.Unmarshal fails: truncated or malformed wire data, field numbers
// out of range, unbalanced groups and string fields that are not valid
// UTF-8. Unknown fields, and known ones of an unexpected wire type, are
// skipped as proto.Unmarshal skips them; repeated occurrences of a
// singular field behave alike too (the last scalar wins, messages merge,
// and the last entry of a duplicate label key wins).
//
// The result keeps no memory of raw, which the caller may reuse as soon
// as Batch returns. It is safe to call concurrently. Batch applies no
// Limits; the proxy decodes through Limits.Decode.
func Batch(info NodeInfo, raw []byte, receivedAt time.Time, window bool) (series.Batch, error) {
	b, _, err := Limits{}.Decode(info, raw, receivedAt, window, TimeRange{})
	return b, err
}

// Batch is the package's Batch for a reply that must stay within l: a
// reply over a limit is refused with a *LimitError.
func (l Limits) Batch(info NodeInfo, raw []byte, receivedAt time.Time, window bool) (series.Batch, error) {
	b, _, err := l.Decode(info, raw, receivedAt, window, TimeRange{})
	return b, err
}

// TimeRange bounds the times of the points Decode keeps, both ends
// inclusive; a zero end is open.
type TimeRange struct {
	Min, Max time.Time
}

// SaneRange is the range of times an agent can mean for a reply received
// at receivedAt: from 2000-01-01, before any BanyanDB node ran, to a day
// past receivedAt, beyond any clock skew worth keeping. Times outside it
// are garbage (year 0, year 10000, seconds that overflow milliseconds).
func SaneRange(receivedAt time.Time) TimeRange {
	return TimeRange{Min: time.Date(2000, time.January, 1, 0, 0, 0, 0, time.UTC), Max: receivedAt.Add(24 * time.Hour)}
}

// Stats counts what Decode left out.
type Stats struct {
	// OutOfRange counts the points dropped because their time was outside
	// the TimeRange.
	OutOfRange int
	// Reserved counts the metrics dropped because their name is one the
	// proxy writes itself (see ReservedName).
	Reserved int
	// ForeignContainer counts the metrics dropped because their
	// container_name is not one the agent registered.
	ForeignContainer int
}

// msRange is a TimeRange in Unix milliseconds.
type msRange struct{ lo, hi int64 }

func (r TimeRange) millis() msRange {
	m := msRange{lo: math.MinInt64, hi: math.MaxInt64}
	if !r.Min.IsZero() {
		m.lo = r.Min.UnixMilli()
	}
	if !r.Max.IsZero() {
		m.hi = r.Max.UnixMilli()
	}
	return m
}

// maxSeconds bounds the seconds of a time any bounded range holds, even
// one open on a side: more than 30 million years from 1970 is garbage,
// whatever the range.
const maxSeconds = 1e15

// holds reports whether a time of seconds and nanos (millis as
// timestamp.millis computes them) lies in r. The seconds are checked
// first: nanos add at most ±3 s, and seconds far out of range would
// overflow milliseconds.
func (r msRange) holds(seconds int64, nanos int32) bool {
	if r.lo == math.MinInt64 && r.hi == math.MaxInt64 {
		return true
	}
	if seconds > maxSeconds || seconds < -maxSeconds || seconds < r.lo/1000-3 || seconds > r.hi/1000+3 {
		return false
	}
	ms := seconds*1000 + int64(nanos)/1e6
	return ms >= r.lo && ms <= r.hi
}

// Decode is Batch that keeps only the points whose time is in valid and
// counts the others; it applies no Limits.
func Decode(info NodeInfo, raw []byte, receivedAt time.Time, window bool, validRange TimeRange) (series.Batch, Stats, error) {
	return Limits{}.Decode(info, raw, receivedAt, window, validRange)
}

// Decode is the package's Decode for a reply that must also stay within
// l: a reply over a limit is refused whole with a *LimitError.
func (l Limits) Decode(info NodeInfo, raw []byte, receivedAt time.Time, window bool, validRange TimeRange) (series.Batch, Stats, error) {
	r, st, err := l.decodeReply(info, raw, receivedAt, validRange, !window)
	if err != nil {
		return series.Batch{Node: info.Node}, st, err
	}
	defer r.recycle()
	if len(r.recs) == 0 && r.seen == 0 {
		return series.Batch{Node: info.Node}, st, nil
	}
	return r.batch(info.Node, window), st, nil
}

// DecodeLatest is Decode of a latest reply (window false) into a
// series.Packed, the form the /metrics hot path renders: the same series
// in the same order, each with its one point, its label set cleaned as
// series.Pack cleans it. The Packed keeps no memory of raw either.
func (l Limits) DecodeLatest(info NodeInfo, raw []byte, receivedAt time.Time, validRange TimeRange) (*series.Packed, Stats, error) {
	r, st, err := l.decodeReply(info, raw, receivedAt, validRange, true)
	if err != nil {
		return nil, st, err
	}
	defer r.recycle()
	return r.packed(info.Node), st, nil
}

// timestamp is a google.protobuf.Timestamp being decoded.
type timestamp struct {
	set     bool
	seconds int64
	nanos   int32
}

func (t timestamp) millis() int64 { return t.seconds*1000 + int64(t.nanos)/1e6 }

// merge decodes b into t. Fields already in t and absent from b stay, as
// when a message field occurs twice.
func (t *timestamp) merge(b []byte) error {
	t.set = true
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == tsSeconds && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			t.seconds = int64(v)
		case num == tsNanos && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			t.nanos = int32(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// consumeTag reads a field's tag and, like proto.Unmarshal for a message
// (not a group), refuses field numbers out of range and end-group tags.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	var v uint64
	var n int
	if len(b) > 0 && b[0] < 0x80 {
		// Every field this decoder reads has a one-byte tag.
		v, n = uint64(b[0]), 1
	} else if v, n = protowire.ConsumeVarint(b); n < 0 {
		return 0, 0, n
	}
	num, typ := v>>3, protowire.Type(v&7)
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) || typ == protowire.EndGroupType {
		return 0, 0, -1
	}
	return protowire.Number(num), typ, n
}
