package decode

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
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
// batch's are in the text renderer's order inside each family (see
// latest), so that rendering can merge agents' batches without sorting.
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

// holds reports whether a time of seconds and nanos (millis as
// timestamp.millis computes them) lies in r. The seconds are checked
// first: nanos add at most ±3 s, and seconds far out of range would
// overflow milliseconds.
func (r msRange) holds(seconds int64, nanos int32) bool {
	if r.lo == math.MinInt64 && r.hi == math.MaxInt64 {
		return true
	}
	if seconds < r.lo/1000-3 || seconds > r.hi/1000+3 {
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
	d, st, err := l.gather(info, raw, receivedAt, validRange, nil)
	if err != nil || d == nil {
		return series.Batch{Node: info.Node}, st, err
	}
	out := series.Batch{Node: info.Node}
	d.starts = append(d.starts, int32(len(d.buf)))
	buf := d.buf
	// A latest batch keeps buf as its label storage: drop the slack
	// that growing it left.
	if !window && cap(buf)-len(buf) > len(buf)/8 {
		buf = slices.Clone(buf)
	}
	upper := d.strBytes
	for i := range d.keys {
		lo, hi := d.starts[i], d.starts[i+1]
		d.keys[i].labels = buf[lo:hi:hi]
		for _, l := range d.keys[i].labels {
			upper += len(l.Name) + len(l.Value)
		}
	}
	sh := newSharer(upper, true)
	out.Series = build(d.keys, window, sh)
	out.CleanLabels = len(out.Series) > 0 && !sh.badName
	return out, st, nil
}

// DecodeLatest is Decode of a latest reply (window false) into a
// series.Packed, the form the /metrics hot path renders: the same series
// in the same order, each with its one point, its label set cleaned as
// series.Pack cleans it. The Packed keeps no memory of raw either.
func (l Limits) DecodeLatest(info NodeInfo, raw []byte, receivedAt time.Time, validRange TimeRange) (*series.Packed, Stats, error) {
	sc := scratchPool.Get().(*scratch)
	defer sc.recycle()
	d, st, err := l.gather(info, raw, receivedAt, validRange, sc)
	if err != nil {
		return nil, st, err
	}
	if d == nil {
		return series.NewPacker(info.Node, 0, 0, nil).Packed(), st, nil
	}
	d.starts = append(d.starts, int32(len(d.buf)))
	for i := range d.keys {
		lo, hi := d.starts[i], d.starts[i+1]
		d.keys[i].labels = d.buf[lo:hi:hi]
	}
	p := pack(info.Node, d.keys, len(d.buf), sc)
	sc.keep(d)
	return p, st, nil
}

// canonTable makes equal strings of one reply the same string, mostly:
// each string is looked up in a direct-mapped cache by its hash, and
// replaced by the string cached there when they are equal (a collision
// only costs the sharing). Sorting a reply compares label sets whose
// names, and many values, are equal; as the same string, they compare by
// pointer instead of byte by byte, which made sorting a reply about four
// times faster. The strings still alias the reply.
type canonTable [canonSlots]string

const canonSlots = 4096 // a power of two

var (
	canonSeed = maphash.MakeSeed()
	canonPool = sync.Pool{New: func() any { return new(canonTable) }}
)

// consume is consumeString through the table: a string equal to one in
// the table becomes that one, which was checked for UTF-8 already; any
// other is checked and takes its slot.
func (t *canonTable) consume(b []byte) (string, int, error) {
	s, n := consumeUnchecked(b)
	if n < 0 || s == "" {
		return s, n, nil
	}
	c := &t[maphash.String(canonSeed, s)&(canonSlots-1)]
	if *c == s {
		return *c, n, nil
	}
	if !utf8.ValidString(s) {
		return "", n, errInvalidUTF8
	}
	*c = s
	return s, n, nil
}

// recycle forgets the reply's strings and returns t to the pool.
func (t *canonTable) recycle() {
	clear(t[:])
	canonPool.Put(t)
}

// scratch is the working memory of one DecodeLatest, reused across
// replies: all of it is garbage once the reply is packed, and a scrape of
// many agents would otherwise allocate it again for every reply.
type scratch struct {
	keys   []key
	starts []int32
	buf    series.Labels
	// familyOrder's
	famIDs map[string]int32
	names  []string
	fam    []int32
	rank   []int32
	start  []int32
	byName []int32
	perm   []int32
}

var scratchPool = sync.Pool{New: func() any { return &scratch{famIDs: make(map[string]int32, 256)} }}

// keep takes back the slices d grew, so that the next reply finds them.
func (sc *scratch) keep(d *decoder) {
	sc.keys, sc.starts, sc.buf = d.keys, d.starts, d.buf
}

// recycle forgets every string of the reply (they alias its bytes, which
// must not be kept alive) and returns sc to the pool.
func (sc *scratch) recycle() {
	clear(sc.keys)
	clear(sc.buf)
	clear(sc.famIDs)
	clear(sc.names)
	sc.keys, sc.starts, sc.buf = sc.keys[:0], sc.starts[:0], sc.buf[:0]
	sc.names = sc.names[:0]
	scratchPool.Put(sc)
}

// gather decodes raw into keys whose labels are d.buf[d.starts[i]:], or
// returns a nil decoder for a reply without metrics. With sc, it works in
// sc's memory.
func (l Limits) gather(info NodeInfo, raw []byte, receivedAt time.Time, validRange TimeRange, sc *scratch) (*decoder, Stats, error) {
	canon := canonPool.Get().(*canonTable)
	defer canon.recycle()
	var st Stats
	valid := validRange.millis()
	count, replyTs, err := scanReply(raw)
	if err != nil {
		return nil, st, err
	}
	if count == 0 {
		return nil, st, nil
	}
	if over(l.MaxSeries, count) {
		return nil, st, &LimitError{Reason: ReasonSeriesPerReply, Got: count, Limit: l.MaxSeries}
	}
	extra := nodeLabels(info)
	exported := make([]string, len(extra))
	for i, e := range extra {
		exported[i] = exportedName(e.Name)
	}
	d := &decoder{
		canon:      canon,
		lim:        l,
		extra:      extra,
		exported:   exported,
		containers: info.Containers,
		defaultMs:  receivedAt.UnixMilli(),
		valid:      valid,
	}
	if sc != nil {
		d.keys, d.starts, d.buf = slices.Grow(sc.keys, count), slices.Grow(sc.starts, count+1), slices.Grow(sc.buf, 16)
	} else {
		d.keys, d.starts = make([]key, 0, count), make([]int32, 0, count+1)
		// Never nil, like the reference's: a metric without labels gets an
		// empty, not a nil, label set.
		d.buf = make(series.Labels, 0, 16)
	}
	d.defaultIn = valid.holds(receivedAt.Unix(), int32(receivedAt.Nanosecond()))
	if replyTs.set {
		d.defaultIn = valid.holds(replyTs.seconds, replyTs.nanos)
		if d.defaultIn {
			d.defaultMs = replyTs.millis()
		}
	}
	for b := raw; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return nil, st, errMalformed
		}
		b = b[n:]
		if num == replyMetrics && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, st, errMalformed
			}
			if err := d.metric(v); err != nil {
				return nil, st, fmt.Errorf("metric %d: %w", d.seen, err)
			}
			if d.seen == 1 && len(d.keys) == 1 {
				// Replies are uniform: size the label storage after the
				// first metric, but never beyond what raw can hold (an
				// entry takes at least two bytes).
				d.buf = slices.Grow(d.buf, min((count-1)*len(d.buf), count*len(d.extra)+len(raw)/2))
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, st, errMalformed
		}
		b = b[n:]
	}
	st.Reserved, st.ForeignContainer = d.reserved, d.foreign
	st.OutOfRange = d.seen - len(d.keys) - d.reserved - d.foreign
	return d, st, nil
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

// scanReply checks the top level of a reply, counts its metrics and
// decodes its timestamp, which may come after the metrics.
func scanReply(b []byte) (count int, ts timestamp, err error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return 0, ts, errMalformed
		}
		b = b[n:]
		switch {
		case num == replyMetrics && typ == protowire.BytesType:
			_, n = protowire.ConsumeBytes(b)
			count++
		case num == replyTimestamp && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				if err := ts.merge(v); err != nil {
					return 0, ts, fmt.Errorf("reply timestamp: %w", err)
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return 0, ts, errMalformed
		}
		b = b[n:]
	}
	return count, ts, nil
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

// decoder accumulates the metrics of one reply.
type decoder struct {
	canon      *canonTable
	lim        Limits
	extra      series.Labels
	exported   []string // exported_<name> of each extra label
	containers []string // registered container names
	reserved   int      // metrics dropped for a reserved name
	foreign    int      // metrics dropped for a foreign container_name
	valid      msRange
	defaultMs  int64
	defaultIn  bool // defaultMs is in valid
	seen       int  // metrics decoded, kept or not
	keys       []key
	buf        series.Labels // every metric's labels, back to back
	starts     []int32       // where each key's labels start in buf
	strBytes   int           // bytes of names and descriptions
}

// metric decodes one Metric message and appends its key and labels.
func (d *decoder) metric(b []byte) error {
	k := key{idx: int32(len(d.keys))}
	var ts timestamp
	start := len(d.buf)
	if start > math.MaxInt32 {
		return errors.New("too many labels")
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		var err error
		switch {
		case num == metricName && typ == protowire.BytesType:
			k.name, n, err = d.canon.consume(b)
		case num == metricLabels && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				var l series.Label
				l, err = mapEntry(v, d.canon)
				d.buf = append(d.buf, l)
				if err == nil {
					err = d.checkLabel(l, len(d.buf)-start)
				}
			}
		case num == metricValue && typ == protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b)
			k.value = math.Float64frombits(v)
		case num == metricDescription && typ == protowire.BytesType:
			k.help, n, err = consumeString(b)
		case num == metricTimestamp && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				err = ts.merge(v)
			}
		case num == metricType && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			k.typ = fodcv1.MetricType(int32(v))
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if err != nil {
			return err
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	if over(d.lim.MaxNameLen, len(k.name)) {
		return &LimitError{Reason: ReasonMetricNameLength, Got: len(k.name), Limit: d.lim.MaxNameLen}
	}
	d.seen++
	k.ms = d.defaultMs
	in := d.defaultIn
	if ts.set {
		in = d.valid.holds(ts.seconds, ts.nanos)
		k.ms = ts.millis()
	}
	if !in {
		d.buf = d.buf[:start]
		return nil
	}
	if ReservedName(k.name) {
		d.reserved++
		d.buf = d.buf[:start]
		return nil
	}
	d.buf = finishLabels(d.buf, start, d.extra, d.exported)
	if !ownedContainer(d.buf[start:], d.containers) {
		d.foreign++
		d.buf = d.buf[:start]
		return nil
	}
	d.strBytes += len(k.name) + len(k.help)
	d.starts = append(d.starts, int32(start))
	d.keys = append(d.keys, k)
	return nil
}

// checkLabel holds the n-th label of a metric, as the agent sent it, to
// the limits while the labels are decoded, so that a metric over a limit
// costs no more than the labels read up to it.
func (d *decoder) checkLabel(lb series.Label, n int) error {
	l := d.lim
	if over(l.MaxLabels, n) {
		return &LimitError{Reason: ReasonLabelsPerSeries, Got: n, Limit: l.MaxLabels}
	}
	if over(l.MaxLabelNameLen, len(lb.Name)) {
		return &LimitError{Reason: ReasonLabelNameLength, Got: len(lb.Name), Limit: l.MaxLabelNameLen}
	}
	if over(l.MaxLabelValueLen, len(lb.Value)) {
		return &LimitError{Reason: ReasonLabelValueLength, Got: len(lb.Value), Limit: l.MaxLabelValueLen}
	}
	return nil
}

// mapEntry decodes one entry of the labels map; a missing key or value
// is empty. Its strings come out of canon.
func mapEntry(b []byte, canon *canonTable) (series.Label, error) {
	var l series.Label
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return l, errMalformed
		}
		b = b[n:]
		var err error
		switch {
		case num == entryKey && typ == protowire.BytesType:
			l.Name, n, err = canon.consume(b)
		case num == entryValue && typ == protowire.BytesType:
			l.Value, n, err = canon.consume(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if err != nil {
			return l, err
		}
		if n < 0 {
			return l, errMalformed
		}
		b = b[n:]
	}
	return l, nil
}

// consumeString reads a length-delimited string field. The string
// aliases b: it must be copied (see sharer.clone) before it outlives the
// wire bytes.
func consumeString(b []byte) (string, int, error) {
	s, n := consumeUnchecked(b)
	if n >= 0 && !utf8.ValidString(s) {
		return "", n, errInvalidUTF8
	}
	return s, n, nil
}

// consumeUnchecked is consumeString without the UTF-8 check.
func consumeUnchecked(b []byte) (string, int) {
	var v []byte
	var n int
	if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
		// Short strings, most of them, have a one-byte length.
		v, n = b[1:1+b[0]], 1+int(b[0])
	} else if v, n = protowire.ConsumeBytes(b); n < 0 {
		return "", n
	}
	if len(v) == 0 {
		return "", n
	}
	return unsafe.String(&v[0], len(v)), n
}

// finishLabels turns the raw map entries buf[start:] of one metric into
// its label set as appendLabels makes it from the decoded map: the last
// entry of each key, without empty keys or values, plus the node labels
// (extra, whose exported_<name> spellings are exported), sorted. A node
// label wins over an own label of the same name and another value, which
// is renamed to exported_<name>. The strings are valid UTF-8 already.
func finishLabels(buf series.Labels, start int, extra series.Labels, exported []string) series.Labels {
	ls := buf[start:]
	// A stable sort by name keeps the entries of one key in wire order.
	if len(ls) <= 16 {
		for i := 1; i < len(ls); i++ {
			for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
				ls[j], ls[j-1] = ls[j-1], ls[j]
			}
		}
	} else {
		slices.SortStableFunc(ls, func(a, b series.Label) int { return strings.Compare(a.Name, b.Name) })
	}
	n := 0
	for i, l := range ls {
		if i+1 < len(ls) && ls[i+1].Name == l.Name {
			continue // a later entry replaces this one
		}
		if l.Name == "" || l.Value == "" {
			continue
		}
		ls[n] = l
		n++
	}
	own := ls[:n]
	buf = buf[:start+n]
	renamed := false
	for i, e := range extra {
		j, found := slices.BinarySearchFunc(own, e.Name, func(l series.Label, name string) int {
			return strings.Compare(l.Name, name)
		})
		switch {
		case !found:
			buf = append(buf, e)
		case own[j].Value != e.Value:
			buf[start+j].Name = exported[i]
			buf = append(buf, e)
			renamed = true
		}
	}
	sortLabels(buf[start:])
	if !renamed {
		return buf
	}
	// A renamed label may meet the agent's own exported_<name>: keep the
	// smaller value, as appendLabels does.
	out := buf[start:]
	m := 0
	for i, l := range out {
		if i > 0 && l.Name == out[m-1].Name {
			continue
		}
		out[m] = l
		m++
	}
	return buf[:start+m]
}
