package decode

import (
	"cmp"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// How a reply is decoded. An agent's reply repeats a few hundred or
// thousand distinct strings (metric and label names, label values, HELP
// texts) over thousands of metrics. The first pass interns every string
// it meets in a table of the reply, checking UTF-8 only the first time,
// so that from then on a string is a small id: metrics become fixed
// records and label sets runs of id pairs. The table's strings are sorted
// once, which ranks them; every later step (ordering each label set,
// joining the node's labels, ordering the reply in the renderer's order)
// compares ranks instead of strings. The output copies the table's
// strings once, out of the reply's memory.
//
// All of a reply's working memory is pooled: a scrape decodes about the
// same replies every time.

// table interns the strings of one reply. Id 0 is "".
type table struct {
	strs []string // by id; alias the reply until copied
	// slots is an open-addressing hash table: each slot holds the high
	// 32 bits of a string's hash and its id+1 (0: free), so that a probe
	// touches nothing else until the hashes match.
	slots []uint64
}

var (
	tableSeed  = maphash.MakeSeed()
	shortSeed  = maphash.String(tableSeed, "short strings")
	shortMixer = uint64(0xe7037ed1a0b428db)
)

// hashString hashes s with a per-process seed. Most strings of a reply
// are short: up to 16 bytes, two loads and a 128-bit multiply (wyhash's
// mixing) cover every byte, at a fraction of maphash's cost; longer
// strings go to maphash. Both are keyed, so an agent cannot choose
// strings that collide.
func hashString(s string) uint64 {
	n := len(s)
	if n > 16 {
		return maphash.String(tableSeed, s)
	}
	p := unsafe.Pointer(unsafe.StringData(s))
	var a, b uint64
	switch {
	case n >= 8:
		a, b = *(*uint64)(p), *(*uint64)(unsafe.Add(p, n-8))
	case n >= 4:
		a, b = uint64(*(*uint32)(p)), uint64(*(*uint32)(unsafe.Add(p, n-4)))
	default:
		a = uint64(s[0])<<16 | uint64(s[n>>1])<<8 | uint64(s[n-1])
	}
	hi, lo := bits.Mul64(a^shortSeed, b^shortMixer^uint64(n))
	return hi ^ lo
}

const minSlots = 1 << 10

func (t *table) reset() {
	clear(t.strs)
	t.strs = append(t.strs[:0], "")
	if len(t.slots) < minSlots {
		t.slots = make([]uint64, minSlots)
	} else {
		clear(t.slots)
	}
}

// intern returns the id of s. A string new to the table must be valid
// UTF-8, as proto.Unmarshal requires of string fields.
func (t *table) intern(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	h := hashString(s)
	tag := h &^ (1<<32 - 1)
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	for ; t.slots[i] != 0; i = (i + 1) & mask {
		if e := t.slots[i]; e&^(1<<32-1) == tag && t.strs[uint32(e)-1] == s {
			return uint32(e) - 1, nil
		}
	}
	if !utf8.ValidString(s) {
		return 0, errInvalidUTF8
	}
	id := uint32(len(t.strs))
	t.strs = append(t.strs, s)
	t.slots[i] = tag | uint64(id+1)
	if 2*len(t.strs) > len(t.slots) {
		t.grow()
	}
	return id, nil
}

// mustIntern interns a string known to be valid UTF-8.
func (t *table) mustIntern(s string) uint32 {
	id, _ := t.intern(validUTF8(s))
	return id
}

func (t *table) grow() {
	old := t.slots
	t.slots = make([]uint64, 2*len(old))
	mask := uint64(len(t.slots) - 1)
	for _, e := range old {
		if e == 0 {
			continue
		}
		// The low bits that placed it are gone with the id: hash again.
		i := hashString(t.strs[uint32(e)-1]) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = e
	}
}

// rec is one metric of a reply.
type rec struct {
	value   float64
	bound   float64 // le or quantile value, when skip >= 0
	ms      int64
	name    uint32
	help    uint32
	family  uint32 // the family the renderer files it under
	boundBy uint32 // id of the label whose value orders it in the family, or 0
	lab     uint32 // its label pairs: reply.labels[lab : lab+2*nl]
	nl      uint32
	idx     int32 // position in the reply
	skip    int32 // index of the le or quantile pair, or -1
	typ     fodcv1.MetricType
	comp    uint8 // 0 bucket, quantile or plain sample, 1 _sum, 2 _count
	// replyTime: the metric has no time of its own; it takes the reply's
	// (or the time of receipt), known only once the whole reply is read.
	replyTime bool
}

// nodeLabel is one of the node's labels as ids, with the id of the name
// an agent's label of the same name and another value is renamed to.
type nodeLabel struct{ name, value, exported uint32 }

// reply is the working memory of one reply's decoding.
type reply struct {
	lim        Limits
	tab        table
	recs       []rec
	entries    []uint32 // the label entries of each rec as sent, pairs
	labels     []uint32 // the finished label sets, pairs
	pairs      []uint32 // scratch for one label set
	rank       []uint32 // rank of each string id among the table's strings
	order      []uint32 // string ids by rank
	sorted     []rec    // sortLatest's output; swaps with recs
	famStart   []uint32 // sortLatest's scratch
	idx, next  []uint32
	extra      []nodeLabel
	containers []uint32 // registered container names
	// Ids of strings decoding looks for.
	le, quantile, containerName uint32
	// Per string id, filled when first needed.
	reserved []int8 // metric names: 1 reserved, -1 not
	nameOK   []int8 // label names: 1 valid, -1 not
	placed   []placement
	bounds   []bound

	valid      msRange
	receivedAt time.Time
	replyTs    timestamp // StreamMetricsRequest.timestamp, merged as read
	seen       int
	st         Stats
}

// placement caches where a metric name of a type is filed.
type placement struct {
	typ    fodcv1.MetricType
	set    bool
	family uint32
	bound  uint32 // id of the label whose value orders the family's samples
	comp   uint8
}

type bound struct {
	set, ok bool
	v       float64
}

var replyPool = sync.Pool{New: func() any { return new(reply) }}

// recycle forgets every string of the reply (they alias its bytes) and
// returns r to the pool.
func (r *reply) recycle() {
	r.tab.reset()
	r.recs, r.entries, r.labels, r.pairs = r.recs[:0], r.entries[:0], r.labels[:0], r.pairs[:0]
	r.extra, r.containers = r.extra[:0], r.containers[:0]
	clear(r.reserved)
	clear(r.nameOK)
	clear(r.placed)
	clear(r.bounds)
	r.reserved, r.nameOK, r.placed, r.bounds = r.reserved[:0], r.nameOK[:0], r.placed[:0], r.bounds[:0]
	r.st, r.seen = Stats{}, 0
	replyPool.Put(r)
}

// newReply prepares the decoding of a reply.
func newReply(l Limits, info NodeInfo, receivedAt time.Time, validRange TimeRange) *reply {
	r := replyPool.Get().(*reply)
	if len(r.tab.strs) == 0 {
		r.tab.reset()
	}
	r.lim = l
	r.valid = validRange.millis()
	r.receivedAt, r.replyTs = receivedAt, timestamp{}
	for _, e := range nodeLabels(info) {
		r.extra = append(r.extra, nodeLabel{
			name: r.tab.mustIntern(e.Name), value: r.tab.mustIntern(e.Value), exported: r.tab.mustIntern(exportedName(e.Name)),
		})
	}
	for _, c := range info.Containers {
		r.containers = append(r.containers, r.tab.mustIntern(c))
	}
	r.le, r.quantile, r.containerName = r.tab.mustIntern("le"), r.tab.mustIntern("quantile"), r.tab.mustIntern("container_name")
	return r
}

// parse reads every metric of raw, in one pass over it: the reply's
// timestamp, which metrics without a time of their own take, may come
// after them, so their times are settled at the end (settle).
func (r *reply) parse(raw []byte) error {
	for b := raw; len(b) > 0; {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		switch {
		case num == replyMetrics && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			if over(r.lim.MaxSeries, r.seen+1) {
				return &LimitError{Reason: ReasonSeriesPerReply, Got: r.seen + 1, Limit: r.lim.MaxSeries}
			}
			if err := r.metric(v); err != nil {
				return fmt.Errorf("metric %d: %w", r.seen, err)
			}
			if r.seen == 1 {
				// Replies are uniform: size the records and entries after
				// the first metric, as if every metric took as many bytes.
				// The guess is bounded whatever the first metric looks
				// like: by the series limit, by a metric of 16 bytes (a
				// name and a value), and for entries by the two bytes an
				// entry takes at least.
				guess := min(len(raw)/max(n, 1), len(raw)/16)
				if r.lim.MaxSeries > 0 {
					guess = min(guess, r.lim.MaxSeries)
				}
				r.recs = slices.Grow(r.recs, guess)
				r.entries = slices.Grow(r.entries, min(guess*len(r.entries), len(raw)/2))
			}
			b = b[n:]
		case num == replyTimestamp && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			if err := r.replyTs.merge(v); err != nil {
				return fmt.Errorf("reply timestamp: %w", err)
			}
			b = b[n:]
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errMalformed
			}
			b = b[n:]
		}
	}
	return nil
}

// settle gives the metrics without a time of their own the reply's time
// (or the time of receipt), and drops them, counted, when that time is
// out of range or their name is reserved: the checks metric made at once
// for the others, in the same order.
func (r *reply) settle() {
	ms, in := r.receivedAt.UnixMilli(), r.valid.holds(r.receivedAt.Unix(), int32(r.receivedAt.Nanosecond()))
	if r.replyTs.set {
		in = r.valid.holds(r.replyTs.seconds, r.replyTs.nanos)
		ms = r.replyTs.millis()
	}
	kept := r.recs[:0]
	for _, m := range r.recs {
		if m.replyTime {
			switch {
			case !in:
				r.st.OutOfRange++
				continue
			case r.isReserved(m.name):
				r.st.Reserved++
				continue
			}
			m.ms = ms
		}
		kept = append(kept, m)
	}
	r.recs = kept
}

// The field loops of metric and entry (and timestamp.merge) are written
// out on purpose: a shared walker taking a function per field would cost
// an indirect call per field, about 30 per series on the hot path.

// metric decodes one Metric message into a rec with its label entries as
// sent; a metric out of time range or under a reserved name is counted
// and dropped.
func (r *reply) metric(b []byte) error {
	m := rec{idx: int32(r.seen), skip: -1}
	var ts timestamp
	start := len(r.entries)
	if start > math.MaxUint32-2 {
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
			m.name, n, err = r.internField(b)
		case num == metricLabels && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				err = r.entry(v, start)
			}
		case num == metricValue && typ == protowire.Fixed64Type:
			var v uint64
			v, n = protowire.ConsumeFixed64(b)
			m.value = math.Float64frombits(v)
		case num == metricDescription && typ == protowire.BytesType:
			m.help, n, err = r.internField(b)
		case num == metricTimestamp && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				err = ts.merge(v)
			}
		case num == metricType && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			m.typ = fodcv1.MetricType(int32(v))
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
	if name := r.tab.strs[m.name]; over(r.lim.MaxNameLen, len(name)) {
		return &LimitError{Reason: ReasonMetricNameLength, Got: len(name), Limit: r.lim.MaxNameLen}
	}
	r.seen++
	if ts.set {
		if !r.valid.holds(ts.seconds, ts.nanos) {
			r.st.OutOfRange++
			r.entries = r.entries[:start]
			return nil
		}
		if r.isReserved(m.name) {
			r.st.Reserved++
			r.entries = r.entries[:start]
			return nil
		}
		m.ms = ts.millis()
	} else {
		m.replyTime = true // settled once the reply's time is known
	}
	m.lab, m.nl = uint32(start), uint32(len(r.entries)-start)/2
	r.recs = append(r.recs, m)
	return nil
}

// internField reads a length-delimited string field and interns it. It
// decodes the length itself when it is one byte (most strings), which
// keeps the field at two calls.
func (r *reply) internField(b []byte) (uint32, int, error) {
	var v []byte
	var n int
	if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
		v, n = b[1:1+b[0]], 1+int(b[0])
	} else if v, n = protowire.ConsumeBytes(b); n < 0 {
		return 0, n, nil
	}
	id, err := r.tab.intern(unsafe.String(unsafe.SliceData(v), len(v)))
	return id, n, err
}

// entry decodes one entry of a metric's labels map (a missing key or
// value is empty) and holds it to the limits while the labels are read,
// so that a metric over a limit costs no more than the labels read up to
// it.
func (r *reply) entry(b []byte, start int) error {
	var k, v uint32
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		var err error
		switch {
		case num == entryKey && typ == protowire.BytesType:
			k, n, err = r.internField(b)
		case num == entryValue && typ == protowire.BytesType:
			v, n, err = r.internField(b)
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
	r.entries = append(r.entries, k, v)
	l := r.lim
	if n := (len(r.entries) - start) / 2; over(l.MaxLabels, n) {
		return &LimitError{Reason: ReasonLabelsPerSeries, Got: n, Limit: l.MaxLabels}
	}
	if name := r.tab.strs[k]; over(l.MaxLabelNameLen, len(name)) {
		return &LimitError{Reason: ReasonLabelNameLength, Got: len(name), Limit: l.MaxLabelNameLen}
	}
	if value := r.tab.strs[v]; over(l.MaxLabelValueLen, len(value)) {
		return &LimitError{Reason: ReasonLabelValueLength, Got: len(value), Limit: l.MaxLabelValueLen}
	}
	return nil
}

// grown returns s with at least n elements, the new ones zero.
func grown[T any](s []T, n int) []T {
	if len(s) < n {
		s = append(s, make([]T, n-len(s))...)
	}
	return s
}

func (r *reply) isReserved(name uint32) bool {
	r.reserved = grown(r.reserved, len(r.tab.strs))
	if r.reserved[name] == 0 {
		r.reserved[name] = -1
		if ReservedName(r.tab.strs[name]) {
			r.reserved[name] = 1
		}
	}
	return r.reserved[name] > 0
}

// rankStrings sorts the table's strings: rank[id] is the position of
// string id among them.
func (r *reply) rankStrings() {
	n := len(r.tab.strs)
	r.order = grown(r.order[:0], n)
	for i := range r.order {
		r.order[i] = uint32(i)
	}
	strs := r.tab.strs
	slices.SortFunc(r.order, func(a, b uint32) int { return strings.Compare(strs[a], strs[b]) })
	r.rank = grown(r.rank[:0], n)
	for i, id := range r.order {
		r.rank[id] = uint32(i)
	}
}

// finish turns every rec's entries into its label set, as appendLabels
// makes it from the decoded map: the last entry of each key, without
// empty keys or values, joined with the node's labels, sorted by name.
// A node label wins over the metric's own label of the same name and
// another value, which is renamed to exported_<name>; meeting the agent's
// own exported_<name>, the smaller value stays. Recs whose container_name
// the agent did not register are counted and dropped.
func (r *reply) finish() {
	r.labels = slices.Grow(r.labels[:0], len(r.entries)+2*len(r.recs)*len(r.extra))
	rank := r.rank
	byName := func(a, b uint32) bool { return rank[a] < rank[b] }
	kept := r.recs[:0]
	for _, m := range r.recs {
		own := append(r.pairs[:0], r.entries[m.lab:m.lab+2*m.nl]...)
		// A stable sort by name keeps the entries of one key in wire
		// order. The usual small set is sorted right here (sortPairs'
		// comparison function would cost a call per comparison).
		if len(own) <= 2*smallSet {
			for i := 2; i < len(own); i += 2 {
				for j := i; j > 0 && byName(own[j], own[j-2]); j -= 2 {
					own[j], own[j+1], own[j-2], own[j-1] = own[j-2], own[j-1], own[j], own[j+1]
				}
			}
		} else {
			sortPairs(own, func(a, b pair) int { return cmp.Compare(rank[a.name], rank[b.name]) })
		}
		n := 0
		for i := 0; i < len(own); i += 2 {
			if i+2 < len(own) && own[i+2] == own[i] {
				continue // a later entry replaces this one
			}
			if own[i] == 0 || own[i+1] == 0 {
				continue
			}
			own[n], own[n+1] = own[i], own[i+1]
			n += 2
		}
		own = own[:n]
		start := len(r.labels)
		renamed := false
		// Join own and the node's labels, both sorted by name.
		i := 0
		for _, e := range r.extra {
			for i < len(own) && byName(own[i], e.name) {
				r.labels = append(r.labels, own[i], own[i+1])
				i += 2
			}
			if i < len(own) && own[i] == e.name {
				if own[i+1] != e.value {
					r.labels = append(r.labels, e.exported, own[i+1])
					renamed = true
				}
				i += 2
			}
			r.labels = append(r.labels, e.name, e.value)
		}
		r.labels = append(r.labels, own[i:]...)
		set := r.labels[start:]
		if renamed {
			r.sortRenamed(set)
			set = r.labels[start:]
		}
		r.pairs = own
		if !r.owned(set) {
			r.st.ForeignContainer++
			r.labels = r.labels[:start]
			continue
		}
		m.lab, m.nl = uint32(start), uint32(len(set)/2)
		kept = append(kept, m)
	}
	r.recs = kept
}

// pair is one label as ids.
type pair struct{ name, value uint32 }

// smallSet is the most labels insertion sort orders.
const smallSet = 16

// sortPairs sorts the label pairs of set (ids, name then value) stably.
// Label sets are small, where insertion sort is fastest; a large one (an
// agent may send many labels when no limit is set) gets an O(n log n)
// sort, so that it cannot make decoding quadratic.
func sortPairs(set []uint32, cmpPairs func(a, b pair) int) {
	n := len(set) / 2
	if n <= smallSet {
		for i := 1; i < n; i++ {
			for j := i; j > 0 && cmpPairs(pair{set[2*j], set[2*j+1]}, pair{set[2*j-2], set[2*j-1]}) < 0; j-- {
				set[2*j], set[2*j+1], set[2*j-2], set[2*j-1] = set[2*j-2], set[2*j-1], set[2*j], set[2*j+1]
			}
		}
		return
	}
	ps := unsafe.Slice((*pair)(unsafe.Pointer(unsafe.SliceData(set))), n)
	slices.SortStableFunc(ps, cmpPairs)
}

// sortRenamed orders a label set in which renamed labels broke the name
// order, by name then value, and keeps the first (smallest) value of each
// name.
func (r *reply) sortRenamed(set []uint32) {
	rank := r.rank
	sortPairs(set, func(a, b pair) int {
		if c := cmp.Compare(rank[a.name], rank[b.name]); c != 0 {
			return c
		}
		return cmp.Compare(rank[a.value], rank[b.value])
	})
	n := 0
	for i := 0; i < len(set); i += 2 {
		if n > 0 && set[i] == set[n-2] {
			continue
		}
		set[n], set[n+1] = set[i], set[i+1]
		n += 2
	}
	r.labels = r.labels[:len(r.labels)-len(set)+n]
}

// owned reports whether a label set names no container, or one the agent
// registered. Agents stamp container_name per scrape target; a value the
// registration did not declare would let one registration shadow another
// of the same pod.
func (r *reply) owned(set []uint32) bool {
	for i := 0; i < len(set); i += 2 {
		if set[i] == r.containerName {
			return slices.Contains(r.containers, set[i+1])
		}
	}
	return true
}

func (r *reply) set(m *rec) []uint32 { return r.labels[m.lab : m.lab+2*m.nl] }

// placeFamilies sets the family the text renderer files each rec under
// and its component; for histograms and summaries it is a name the table
// may not hold yet, so this runs before the strings are ranked.
func (r *reply) placeFamilies() {
	for i := range r.recs {
		m := &r.recs[i]
		r.placed = grown(r.placed, int(m.name)+1)
		p := &r.placed[m.name]
		if !p.set || p.typ != m.typ {
			*p = placement{typ: m.typ, set: true, family: m.name}
			name := r.tab.strs[m.name]
			switch m.typ {
			case fodcv1.MetricType_METRIC_TYPE_HISTOGRAM:
				if base, ok := strings.CutSuffix(name, "_bucket"); ok {
					p.family, p.bound = r.tab.mustIntern(base), r.le
					break
				}
				p.family, p.comp = r.sumCount(name)
			case fodcv1.MetricType_METRIC_TYPE_SUMMARY:
				if p.family, p.comp = r.sumCount(name); p.comp == 0 {
					p.bound = r.quantile
				}
			}
		}
		m.family, m.comp, m.boundBy = p.family, p.comp, p.bound
	}
}

// placeBounds sets, for the recs of histograms and summaries, the label
// pair whose numeric value orders them in their family: le or quantile.
func (r *reply) placeBounds() {
	for i := range r.recs {
		m := &r.recs[i]
		if m.boundBy == 0 {
			continue
		}
		set := r.set(m)
		for j := 0; j < len(set); j += 2 {
			if set[j] == m.boundBy {
				if v, ok := r.boundOf(set[j+1]); ok {
					m.skip, m.bound = int32(j/2), v
				}
				break
			}
		}
	}
}

func (r *reply) sumCount(name string) (uint32, uint8) {
	if base, ok := strings.CutSuffix(name, "_sum"); ok {
		return r.tab.mustIntern(base), 1
	}
	if base, ok := strings.CutSuffix(name, "_count"); ok {
		return r.tab.mustIntern(base), 2
	}
	return r.tab.mustIntern(name), 0
}

func (r *reply) boundOf(id uint32) (float64, bool) {
	r.bounds = grown(r.bounds, len(r.tab.strs))
	b := &r.bounds[id]
	if !b.set {
		v, err := strconv.ParseFloat(r.tab.strs[id], 64)
		*b = bound{set: true, ok: err == nil, v: v}
	}
	return b.v, b.ok
}

// compareSets orders two label sets of the reply by rank (see
// series.CompareRanked), skipping pair askip of a and bskip of b (-1:
// none).
func (r *reply) compareSets(a []uint32, askip int32, b []uint32, bskip int32) int {
	return series.CompareRanked(a, r.rank, int(askip), b, r.rank, int(bskip))
}

func compareTime(a, b *rec) int {
	if c := cmp.Compare(a.ms, b.ms); c != 0 {
		return c
	}
	return cmp.Compare(a.idx, b.idx)
}

// sortLatest orders the recs as the text renderer writes them: by family,
// then labels without le or quantile, component, bound, then the whole
// label set, time and position in the reply. Agents send their metrics in
// map order, so this is a real sort: the recs are first distributed to
// their families in family order (a counting sort on the ranks of the few
// family names), then each family's recs are sorted among themselves, by
// index, which moves 4 bytes instead of a record.
func (r *reply) sortLatest() {
	rank := r.rank
	// famStart[rank of a family + 1] counts, then locates, its recs.
	famStart := grown(r.famStart[:0], len(rank)+1)
	clear(famStart)
	for i := range r.recs {
		famStart[rank[r.recs[i].family]+1]++
	}
	for i := 1; i < len(famStart); i++ {
		famStart[i] += famStart[i-1]
	}
	idx := grown(r.idx[:0], len(r.recs))
	next := grown(r.next[:0], len(famStart))
	copy(next, famStart)
	for i := range r.recs {
		f := rank[r.recs[i].family]
		idx[next[f]] = uint32(i)
		next[f]++
	}
	recs := r.recs
	cmpInFamily := func(x, y uint32) int {
		a, b := &recs[x], &recs[y]
		if c := r.compareSets(r.set(a), a.skip, r.set(b), b.skip); c != 0 {
			return c
		}
		if a.comp != b.comp {
			return cmp.Compare(a.comp, b.comp)
		}
		if a.bound != b.bound {
			return cmp.Compare(a.bound, b.bound)
		}
		if c := r.compareSets(r.set(a), -1, r.set(b), -1); c != 0 {
			return c
		}
		return compareTime(a, b)
	}
	for f := 0; f+1 < len(famStart); f++ {
		if seg := idx[famStart[f]:famStart[f+1]]; len(seg) > 1 {
			slices.SortFunc(seg, cmpInFamily)
		}
	}
	sorted := grown(r.sorted[:0], len(recs))
	for i, x := range idx {
		sorted[i] = recs[x]
	}
	r.recs, r.sorted = sorted, recs[:0]
	r.famStart, r.idx, r.next = famStart, idx, next
}

// sortWindow orders the recs by name, label set, time and position.
func (r *reply) sortWindow() {
	rank := r.rank
	slices.SortFunc(r.recs, func(a, b rec) int {
		if a.name != b.name {
			return cmp.Compare(rank[a.name], rank[b.name])
		}
		if c := r.compareSets(r.set(&a), -1, r.set(&b), -1); c != 0 {
			return c
		}
		return compareTime(&a, &b)
	})
}

// copyStrings copies the table's strings out of the reply's memory into a
// few blocks, in rank order so that neighbours in the
// output are neighbours in memory, into dst.
func (r *reply) copyStrings(dst []string) []string {
	dst = grown(dst[:0], len(r.tab.strs))
	upper := 0
	for _, s := range r.tab.strs {
		upper += min(len(s), maxBlockCopy+1)
	}
	bl := newBlocks(upper, true)
	for _, id := range r.order {
		dst[id] = bl.copy(r.tab.strs[id])
	}
	return dst
}

// decodeReply runs the passes common to every output: parse, rank, finish
// the label sets. The caller recycles the reply.
func (l Limits) decodeReply(info NodeInfo, raw []byte, receivedAt time.Time, validRange TimeRange, latest bool) (*reply, Stats, error) {
	r := newReply(l, info, receivedAt, validRange)
	if err := r.parse(raw); err != nil {
		r.recycle()
		return nil, Stats{}, err
	}
	r.settle()
	if latest {
		r.placeFamilies()
	}
	r.rankStrings()
	r.finish()
	if latest {
		r.placeBounds()
		r.sortLatest()
	} else {
		r.sortWindow()
	}
	return r, r.st, nil
}

// packed builds the Packed of a latest reply. Label pairs whose name the
// text format cannot carry are left out and counted, as series.Pack does.
func (r *reply) packed(node series.Node) *series.Packed {
	p := series.GetPacked(node)
	p.Strings = r.copyStrings(p.Strings)
	r.nameOK = grown(r.nameOK, len(r.tab.strs))
	p.Samples = slices.Grow(p.Samples[:0], len(r.recs))
	p.Labels = slices.Grow(p.Labels[:0], len(r.labels))
	for i := range r.recs {
		m := &r.recs[i]
		start := len(p.Labels)
		for set := r.set(m); len(set) > 0; set = set[2:] {
			if r.validName(set[0]) {
				p.Labels = append(p.Labels, set[0], set[1])
			} else {
				p.DroppedLabels++
			}
		}
		p.Samples = append(p.Samples, series.Sample{
			Value: m.value, TimestampMs: m.ms, Name: m.name, Help: m.help, Type: m.typ,
			Labels: uint32(start), NumLabels: uint32(len(p.Labels)-start) / 2,
		})
	}
	return p
}

// validName reports whether string id is a valid label name
// (ValidLabelName), checking each id once per reply; r.nameOK must cover
// the table (see output).
func (r *reply) validName(id uint32) bool {
	if v := r.nameOK[id]; v != 0 {
		return v > 0
	}
	ok := series.ValidLabelName(r.tab.strs[id])
	r.nameOK[id] = -1
	if ok {
		r.nameOK[id] = 1
	}
	return ok
}

// batch builds the series.Batch of a reply, one series per rec, or with
// window one per distinct name and label set.
func (r *reply) batch(node series.Node, window bool) series.Batch {
	out := series.Batch{Node: node, Series: make([]series.Series, 0, len(r.recs))}
	strs := r.copyStrings(nil)
	r.nameOK = grown(r.nameOK, len(r.tab.strs))
	labels := make(series.Labels, 0, len(r.labels)/2)
	points := make([]series.Point, 0, len(r.recs))
	clean := true
	for i := 0; i < len(r.recs); {
		j := i + 1
		first := &r.recs[i]
		for window && j < len(r.recs) && r.recs[j].name == first.name && r.compareSets(r.set(first), -1, r.set(&r.recs[j]), -1) == 0 {
			j++
		}
		s := series.Series{Name: strs[first.name]}
		helpIdx, typIdx := int32(-1), int32(-1)
		start := len(points)
		for k := i; k < j; k++ {
			m := &r.recs[k]
			if m.help != 0 && (helpIdx < 0 || m.idx < helpIdx) {
				s.Help, helpIdx = strs[m.help], m.idx
			}
			if m.typ != fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED && (typIdx < 0 || m.idx < typIdx) {
				s.Type, typIdx = m.typ, m.idx
			}
			p := series.Point{TimestampMs: m.ms, Value: m.value}
			// Recs with equal times are ordered by reply position: the
			// later one replaces the earlier.
			if len(points) > start && points[len(points)-1].TimestampMs == m.ms {
				points[len(points)-1] = p
			} else {
				points = append(points, p)
			}
		}
		ls := len(labels)
		for set := r.set(first); len(set) > 0; set = set[2:] {
			labels = append(labels, series.Label{Name: strs[set[0]], Value: strs[set[1]]})
			clean = clean && r.validName(set[0])
		}
		s.Labels = labels[ls:len(labels):len(labels)]
		s.Points = points[start:len(points):len(points)]
		out.Series = append(out.Series, s)
		i = j
	}
	out.CleanLabels = len(out.Series) > 0 && clean
	return out
}
