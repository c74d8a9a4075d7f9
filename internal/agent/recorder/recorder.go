// Package recorder is the agent's flight recorder: a memory-bounded store
// of recent samples of the node's metrics.
//
// Every sample keeps its own timestamp. A series stores its samples in
// compressed chunks (delta-of-delta timestamps; integer deltas or XOR'd
// floats for values, see chunk.go): sealed chunks are immutable byte slices,
// and one open chunk per series takes new samples. A hard memory budget is
// enforced after every Append by evicting the globally oldest chunk first.
//
// Series belong to the target that produced them; a series that is missing
// from its target's latest scrape, or whose target is marked down, stops
// being current (Latest omits it) while its samples stay available to
// Window until they are evicted.
package recorder

import (
	"bytes"
	"cmp"
	"container/heap"
	"errors"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/scrape"
)

// DefaultChunkSamples is used when Options.ChunkSamples is zero.
const DefaultChunkSamples = 240

// maxChunkSamples bounds Options.ChunkSamples.
const maxChunkSamples = 1 << 16

// Estimated memory held besides encoded bytes. They are estimates of Go's
// layout (struct sizes plus map and slice slots), not measurements.
const (
	ptrSize        = int64(unsafe.Sizeof(uintptr(0)))
	sealedOverhead = int64(unsafe.Sizeof(sealedChunk{}))                               // its element of series.sealed
	openOverhead   = int64(unsafe.Sizeof(chunk{})+unsafe.Sizeof(appender{})) + ptrSize // the structs and a heap slot
	seriesOverhead = int64(unsafe.Sizeof(series{})) + 5*ptrSize                        // the struct, its map entry and a heap slot
	labelSize      = int64(unsafe.Sizeof(scrape.Label{}))
	internOverhead = int64(unsafe.Sizeof(internEntry{})) + 2*ptrSize + 16 // map key, value and slot
)

// Options configures a Recorder.
type Options struct {
	// BudgetBytes is the hard memory budget, from encoded chunk bytes plus
	// an estimate of per-series and per-chunk overhead. Required.
	BudgetBytes int64
	// ChunkSamples is how many samples a chunk takes before it is sealed;
	// zero means DefaultChunkSamples.
	ChunkSamples int
	// Now is the clock used when Append gets no scrape time; nil means
	// time.Now.
	Now func() time.Time
	// Registerer receives the recorder's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Stats describes what a Recorder holds.
type Stats struct {
	// Series is the number of series held, current or not.
	Series int
	// Samples is the number of samples held.
	Samples int64
	// Bytes is the memory held as the budget counts it.
	Bytes int64
	// Evicted is the number of samples evicted to honour the budget.
	Evicted int64
	// RejectedSeries counts new series not recorded because series
	// metadata may use at most half of the budget.
	RejectedSeries int64
	// OutOfOrder counts samples dropped because they were not newer than
	// their series' latest sample (duplicates included).
	OutOfOrder int64
	// OldestMs and NewestMs bound the held samples' timestamps in Unix
	// milliseconds; both are zero when no sample is held.
	OldestMs, NewestMs int64
}

// Recorder is a memory-bounded flight recorder. It is safe for concurrent
// use. The zero value is not usable; call New.
type Recorder struct {
	budget       int64
	seriesBudget int64
	chunkSamples int
	now          func() time.Time
	seed         maphash.Seed
	m            *metrics

	mu          sync.RWMutex // guards the fields below
	hash        maphash.Hash
	targets     map[string]*target
	strs        map[string]internEntry
	sealed      seriesHeap // series with sealed chunks, by their oldest sealed chunk's first timestamp
	open        chunkHeap  // open chunks, by first timestamp
	bytes       int64
	seriesBytes int64 // the part of bytes held by series metadata and strings
	samples     int64
	nSeries     int
	evicted     int64
	rejected    int64
	outOfOrder  int64
}

type internEntry struct {
	s    string
	refs int
}

// target holds the series of one scrape target.
type target struct {
	name   string
	gen    uint64             // incremented by every Append
	series map[uint64]*series // by label hash; collisions chain through series.next
}

// series is one series of one target. Its strings are interned. Its name,
// labels and target never change, so they may be read after the lock is
// released.
type series struct {
	tgt      *target
	hash     uint64
	next     *series // next series with the same hash
	name     string
	help     string
	typ      fodcv1.MetricType
	labels   []scrape.Label
	sealed   []sealedChunk // oldest first
	heapIdx  int           // position in Recorder.sealed, -1 when not there
	head     *chunk        // open chunk, nil when none
	lastT    int64
	lastV    float64
	hasLast  bool
	seen     uint64 // target generation that last contained the series
	current  bool
	sizeHint int // encoded size of the last sealed chunk
	cost     int64
}

func (s *series) empty() bool { return s.head == nil && len(s.sealed) == 0 }

// chunk is the open chunk of a series.
type chunk struct {
	s          *series
	app        *appender
	minT, maxT int64
	n          int
	idx        int // position in Recorder.open
}

// sealedChunk is a full chunk. Its data is never modified again, so it may
// be read after the lock is released.
type sealedChunk struct {
	data       []byte
	minT, maxT int64
	n          int
}

type metrics struct {
	appended   prometheus.Counter
	evicted    prometheus.Counter
	rejected   prometheus.Counter
	outOfOrder prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Recorder) *metrics {
	f := promauto.With(reg)
	gauge := func(name, help string, v func(*Stats) float64) {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			st := r.Stats()
			return v(&st)
		})
	}
	gauge("fodc_agent_recorder_bytes", "Memory held by the flight recorder as its budget counts it.",
		func(s *Stats) float64 { return float64(s.Bytes) })
	gauge("fodc_agent_recorder_samples", "Samples held by the flight recorder.",
		func(s *Stats) float64 { return float64(s.Samples) })
	gauge("fodc_agent_recorder_series", "Series held by the flight recorder.",
		func(s *Stats) float64 { return float64(s.Series) })
	gauge("fodc_agent_recorder_oldest_sample_timestamp_seconds", "Time of the oldest sample held, 0 when empty.",
		func(s *Stats) float64 { return float64(s.OldestMs) / 1000 })
	f.NewGauge(prometheus.GaugeOpts{
		Name: "fodc_agent_recorder_budget_bytes",
		Help: "Memory budget of the flight recorder.",
	}).Set(float64(r.budget))
	return &metrics{
		appended: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_recorder_appended_samples_total",
			Help: "Samples stored by the flight recorder.",
		}),
		evicted: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_recorder_evicted_samples_total",
			Help: "Samples evicted, oldest first, to keep the flight recorder within its budget.",
		}),
		rejected: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_recorder_rejected_series_total",
			Help: "New series not recorded because series metadata reached half of the budget.",
		}),
		outOfOrder: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_agent_recorder_out_of_order_samples_total",
			Help: "Samples dropped because they were not newer than their series' latest sample.",
		}),
	}
}

// New returns an empty Recorder.
func New(opts Options) (*Recorder, error) {
	var errs []error
	if opts.BudgetBytes <= 0 {
		errs = append(errs, errors.New("recorder memory budget must be positive"))
	}
	if opts.ChunkSamples == 0 {
		opts.ChunkSamples = DefaultChunkSamples
	}
	if opts.ChunkSamples < 1 || opts.ChunkSamples > maxChunkSamples {
		errs = append(errs, errors.New("recorder chunk samples must be between 1 and 65536"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Recorder{
		budget:       opts.BudgetBytes,
		seriesBudget: opts.BudgetBytes / 2,
		chunkSamples: opts.ChunkSamples,
		now:          opts.Now,
		seed:         maphash.MakeSeed(),
		targets:      make(map[string]*target),
		strs:         make(map[string]internEntry),
	}
	r.hash.SetSeed(r.seed)
	r.m = newMetrics(opts.Registerer, r)
	return r, nil
}

// Append records one scrape of one target. Samples without a timestamp
// (TimestampMs == 0) get scrapeTimeMs, and a zero scrapeTimeMs means the
// recorder's clock. Series of the target that are not in fams stop being
// current. A sample not newer than its series' latest one is dropped.
//
// Labels must be sorted by name, as the scrape package delivers them. Series
// are told apart by target, name and labels, so two targets exposing the
// same series should carry a distinguishing label (e.g. container_name).
func (r *Recorder) Append(targetName string, scrapeTimeMs int64, fams []scrape.Family) {
	if scrapeTimeMs == 0 {
		scrapeTimeMs = r.now().UnixMilli()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tg := r.targets[targetName]
	if tg == nil {
		tg = &target{name: strings.Clone(targetName), series: make(map[uint64]*series)}
		r.targets[tg.name] = tg
	}
	tg.gen++
	var appended, ooo int64
	for fi := range fams {
		f := &fams[fi]
		for si := range f.Samples {
			smp := &f.Samples[si]
			h := r.hashLocked(smp)
			s := tg.lookup(h, smp)
			if s == nil {
				if s = r.newSeriesLocked(tg, h, f, smp); s == nil {
					continue
				}
			} else if s.help != f.Help || s.typ != f.Type {
				r.updateMetaLocked(s, f)
			}
			s.seen, s.current = tg.gen, true
			t := smp.TimestampMs
			if t == 0 {
				t = scrapeTimeMs
			}
			if s.hasLast && t <= s.lastT {
				ooo++
				continue
			}
			r.appendLocked(s, t, smp.Value)
			appended++
		}
	}
	for _, s := range tg.all() {
		if s.seen != tg.gen {
			s.current = false
			if s.empty() {
				r.deleteSeriesLocked(s)
			}
		}
	}
	r.outOfOrder += ooo
	r.m.appended.Add(float64(appended))
	r.m.outOfOrder.Add(float64(ooo))
	r.enforceBudgetLocked()
}

// MarkTargetDown makes every series of the target non-current, e.g. after a
// failed scrape. Their samples stay until evicted.
func (r *Recorder) MarkTargetDown(targetName string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tg := r.targets[targetName]
	if tg == nil {
		return
	}
	tg.gen++
	for _, s := range tg.all() {
		s.current = false
		if s.empty() {
			r.deleteSeriesLocked(s)
		}
	}
}

func (r *Recorder) hashLocked(smp *scrape.Sample) uint64 {
	r.hash.Reset()
	r.hash.WriteString(smp.Name)
	for _, l := range smp.Labels {
		r.hash.WriteByte(0xff)
		r.hash.WriteString(l.Name)
		r.hash.WriteByte(0xfe)
		r.hash.WriteString(l.Value)
	}
	return r.hash.Sum64()
}

func (tg *target) lookup(h uint64, smp *scrape.Sample) *series {
	for s := tg.series[h]; s != nil; s = s.next {
		if s.name == smp.Name && slices.Equal(s.labels, smp.Labels) {
			return s
		}
	}
	return nil
}

// all returns the target's series; the caller may delete while iterating.
func (tg *target) all() []*series {
	out := make([]*series, 0, len(tg.series))
	for _, s := range tg.series {
		for ; s != nil; s = s.next {
			out = append(out, s)
		}
	}
	return out
}

func (r *Recorder) newSeriesLocked(tg *target, h uint64, f *scrape.Family, smp *scrape.Sample) *series {
	cost := seriesOverhead + int64(len(smp.Labels))*labelSize
	est := cost + int64(len(smp.Name)+len(f.Help)) + 2*internOverhead
	for _, l := range smp.Labels {
		est += int64(len(l.Name)+len(l.Value)) + 2*internOverhead
	}
	if r.seriesBytes+est > r.seriesBudget {
		r.rejected++
		r.m.rejected.Inc()
		return nil
	}
	s := &series{heapIdx: -1, tgt: tg, hash: h, name: r.internLocked(smp.Name), help: r.internLocked(f.Help), typ: f.Type, cost: cost}
	if len(smp.Labels) > 0 {
		s.labels = make([]scrape.Label, len(smp.Labels))
		for i, l := range smp.Labels {
			s.labels[i] = scrape.Label{Name: r.internLocked(l.Name), Value: r.internLocked(l.Value)}
		}
	}
	s.next = tg.series[h]
	tg.series[h] = s
	r.nSeries++
	r.seriesBytes += cost
	r.bytes += cost
	return s
}

func (r *Recorder) updateMetaLocked(s *series, f *scrape.Family) {
	if s.help != f.Help {
		old := s.help
		s.help = r.internLocked(f.Help)
		r.releaseLocked(old)
	}
	s.typ = f.Type
}

func (r *Recorder) deleteSeriesLocked(s *series) {
	tg := s.tgt
	if head := tg.series[s.hash]; head == s {
		if s.next == nil {
			delete(tg.series, s.hash)
		} else {
			tg.series[s.hash] = s.next
		}
	} else {
		for p := head; p != nil; p = p.next {
			if p.next == s {
				p.next = s.next
				break
			}
		}
	}
	r.releaseLocked(s.name)
	r.releaseLocked(s.help)
	for _, l := range s.labels {
		r.releaseLocked(l.Name)
		r.releaseLocked(l.Value)
	}
	r.nSeries--
	r.seriesBytes -= s.cost
	r.bytes -= s.cost
}

// internLocked returns the recorder's copy of str, so that equal strings of
// many series share memory and do not pin the scraper's buffers.
func (r *Recorder) internLocked(str string) string {
	if e, ok := r.strs[str]; ok {
		e.refs++
		r.strs[str] = e
		return e.s
	}
	c := strings.Clone(str)
	r.strs[c] = internEntry{s: c, refs: 1}
	cost := int64(len(c)) + internOverhead
	r.seriesBytes += cost
	r.bytes += cost
	return c
}

func (r *Recorder) releaseLocked(str string) {
	e, ok := r.strs[str]
	if !ok {
		return
	}
	if e.refs--; e.refs > 0 {
		r.strs[str] = e
		return
	}
	delete(r.strs, str)
	cost := int64(len(str)) + internOverhead
	r.seriesBytes -= cost
	r.bytes -= cost
}

func (r *Recorder) appendLocked(s *series, t int64, v float64) {
	s.lastT, s.lastV, s.hasLast = t, v, true
	r.samples++
	if c := s.head; c != nil {
		before := int64(cap(c.app.w.b))
		if c.app.append(t, v) {
			c.maxT = t
			c.n++
			r.bytes += int64(cap(c.app.w.b)) - before
			if c.n >= r.chunkSamples {
				r.sealLocked(c)
			}
			return
		}
		// An integer chunk met a non-integer value: start an XOR chunk.
		r.sealLocked(c)
	}
	hint := 0
	if s.sizeHint > 0 {
		hint = s.sizeHint + s.sizeHint/8 + 8
	}
	c := &chunk{s: s, app: newAppender(t, v, hint), minT: t, maxT: t, n: 1}
	s.head = c
	heap.Push(&r.open, c)
	r.bytes += openOverhead + int64(cap(c.app.w.b))
	if c.n >= r.chunkSamples {
		r.sealLocked(c)
	}
}

func (r *Recorder) sealLocked(c *chunk) {
	s := c.s
	sc := sealedChunk{data: bytes.Clone(c.app.w.b), minT: c.minT, maxT: c.maxT, n: c.n}
	r.bytes += int64(len(sc.data)) + sealedOverhead - int64(cap(c.app.w.b)) - openOverhead
	c.app = nil
	heap.Remove(&r.open, c.idx)
	s.sealed = append(s.sealed, sc)
	if s.heapIdx < 0 {
		heap.Push(&r.sealed, s)
	}
	s.head = nil
	s.sizeHint = len(sc.data)
}

// enforceBudgetLocked evicts the chunk with the oldest first sample, sealed
// chunks before open ones, until the budget holds.
func (r *Recorder) enforceBudgetLocked() {
	var evicted int64
	for r.bytes > r.budget {
		var (
			s *series
			n int
		)
		switch {
		case r.sealed.Len() > 0:
			// Samples of a series are in time order, so its oldest sealed
			// chunk is the first.
			s = r.sealed[0]
			sc := s.sealed[0]
			s.sealed = slices.Delete(s.sealed, 0, 1)
			if len(s.sealed) > 0 {
				heap.Fix(&r.sealed, 0)
			} else {
				heap.Pop(&r.sealed)
				s.sealed = nil
			}
			n = sc.n
			r.bytes -= int64(len(sc.data)) + sealedOverhead
		case r.open.Len() > 0:
			c := heap.Pop(&r.open).(*chunk)
			s, n = c.s, c.n
			s.head = nil
			r.bytes -= int64(cap(c.app.w.b)) + openOverhead
			c.app = nil
		default:
			// Only series metadata is left, which newSeriesLocked keeps
			// within half of the budget.
			r.evicted += evicted
			r.m.evicted.Add(float64(evicted))
			return
		}
		r.samples -= int64(n)
		evicted += int64(n)
		if !s.current && s.empty() {
			r.deleteSeriesLocked(s)
		}
	}
	r.evicted += evicted
	r.m.evicted.Add(float64(evicted))
}

// Stats reports what the recorder holds.
func (r *Recorder) Stats() Stats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := Stats{
		Series:         r.nSeries,
		Samples:        r.samples,
		Bytes:          r.bytes,
		Evicted:        r.evicted,
		RejectedSeries: r.rejected,
		OutOfOrder:     r.outOfOrder,
	}
	if r.samples == 0 {
		return st
	}
	st.OldestMs, st.NewestMs = math.MaxInt64, math.MinInt64
	if len(r.sealed) > 0 {
		st.OldestMs = r.sealed[0].sealed[0].minT
	}
	if len(r.open) > 0 {
		st.OldestMs = min(st.OldestMs, r.open[0].minT)
	}
	for _, tg := range r.targets {
		for _, s := range tg.series {
			for ; s != nil; s = s.next {
				switch {
				case s.head != nil:
					st.NewestMs = max(st.NewestMs, s.head.maxT)
				case len(s.sealed) > 0:
					st.NewestMs = max(st.NewestMs, s.sealed[len(s.sealed)-1].maxT)
				}
			}
		}
	}
	return st
}

// seriesView is what a reader needs of a series once the lock is released.
type seriesView struct {
	s      *series // only the immutable name, labels and target are read
	help   string
	typ    fodcv1.MetricType
	lastT  int64
	lastV  float64
	chunks []chunkView
}

type chunkView struct {
	data []byte
	n    int
}

// Latest returns one Metric per current series (present in its target's
// last scrape) with its newest value and that value's own timestamp.
// Description is the family's HELP on every series of the family. The
// result shares nothing with the recorder.
func (r *Recorder) Latest() []*fodcv1.Metric {
	r.mu.RLock()
	views := make([]seriesView, 0, r.nSeries)
	for _, tg := range r.targets {
		for _, s := range tg.series {
			for ; s != nil; s = s.next {
				if s.current {
					views = append(views, seriesView{s: s, help: s.help, typ: s.typ, lastT: s.lastT, lastV: s.lastV})
				}
			}
		}
	}
	r.mu.RUnlock()
	sortViews(views)
	out := make([]*fodcv1.Metric, 0, len(views))
	for i := range views {
		v := &views[i]
		out = append(out, &fodcv1.Metric{
			Name:        v.s.name,
			Labels:      labelMap(v.s.labels),
			Value:       v.lastV,
			Description: v.help,
			Timestamp:   msToProto(v.lastT),
			Type:        v.typ,
		})
	}
	return out
}

// Window returns one Metric per held sample whose time t satisfies
// start <= t <= end; a bound whose has flag is false is open. Each Metric
// carries the sample's own timestamp (millisecond precision). Series come
// sorted by name and labels, samples by time. Metrics of one series share
// one Labels map, which callers must not modify; nothing is shared with the
// recorder, and the lock is not held while the result is built.
func (r *Recorder) Window(start, end time.Time, hasStart, hasEnd bool) []*fodcv1.Metric {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if hasStart {
		lo = start.UnixMilli()
		if start.After(time.UnixMilli(lo)) {
			lo++ // a sample at lo-1 ms < start < lo ms is outside
		}
	}
	if hasEnd {
		hi = end.UnixMilli()
	}
	if lo > hi {
		return []*fodcv1.Metric{}
	}

	r.mu.RLock()
	var views []seriesView
	total := 0
	for _, tg := range r.targets {
		for _, s := range tg.series {
			for ; s != nil; s = s.next {
				var cs []chunkView
				for _, c := range s.sealed {
					if c.maxT >= lo && c.minT <= hi {
						cs = append(cs, chunkView{data: c.data, n: c.n}) // immutable once sealed
						total += c.n
					}
				}
				if c := s.head; c != nil && c.maxT >= lo && c.minT <= hi {
					cs = append(cs, chunkView{data: bytes.Clone(c.app.w.b), n: c.n})
					total += c.n
				}
				if len(cs) > 0 {
					views = append(views, seriesView{s: s, help: s.help, typ: s.typ, chunks: cs})
				}
			}
		}
	}
	r.mu.RUnlock()

	sortViews(views)
	out := make([]*fodcv1.Metric, 0, total)
	for i := range views {
		v := &views[i]
		labels := labelMap(v.s.labels)
		for _, cv := range v.chunks {
			it := newIterator(cv.data, cv.n)
			for it.next() {
				t, val := it.at()
				if t < lo || t > hi {
					continue
				}
				out = append(out, &fodcv1.Metric{
					Name:        v.s.name,
					Labels:      labels,
					Value:       val,
					Description: v.help,
					Timestamp:   msToProto(t),
					Type:        v.typ,
				})
			}
		}
	}
	return out
}

func sortViews(vs []seriesView) {
	slices.SortFunc(vs, func(a, b seriesView) int {
		if c := strings.Compare(a.s.name, b.s.name); c != 0 {
			return c
		}
		if c := slices.CompareFunc(a.s.labels, b.s.labels, func(x, y scrape.Label) int {
			return cmp.Or(strings.Compare(x.Name, y.Name), strings.Compare(x.Value, y.Value))
		}); c != 0 {
			return c
		}
		return strings.Compare(a.s.tgt.name, b.s.tgt.name)
	})
}

func labelMap(ls []scrape.Label) map[string]string {
	if len(ls) == 0 {
		return nil
	}
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

func msToProto(ms int64) *timestamppb.Timestamp {
	return timestamppb.New(time.UnixMilli(ms))
}

// seriesHeap is a min-heap of series by the first timestamp of their
// oldest sealed chunk that keeps each series' index current.
type seriesHeap []*series

func (h seriesHeap) Len() int           { return len(h) }
func (h seriesHeap) Less(i, j int) bool { return h[i].sealed[0].minT < h[j].sealed[0].minT }
func (h seriesHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}

func (h *seriesHeap) Push(x any) {
	s := x.(*series)
	s.heapIdx = len(*h)
	*h = append(*h, s)
}

func (h *seriesHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.heapIdx = -1
	return s
}

// chunkHeap is a min-heap of chunks by first timestamp that keeps each
// chunk's index current.
type chunkHeap []*chunk

func (h chunkHeap) Len() int           { return len(h) }
func (h chunkHeap) Less(i, j int) bool { return h[i].minT < h[j].minT }
func (h chunkHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (h *chunkHeap) Push(x any) {
	c := x.(*chunk)
	c.idx = len(*h)
	*h = append(*h, c)
}

func (h *chunkHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.idx = -1
	return c
}
