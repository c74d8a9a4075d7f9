// Package render writes merged agent batches in the proxy's metrics
// formats: Prometheus text exposition 0.0.4 or OpenMetrics 1.0 for /metrics
// (WritePackedText for the packed batches decoding gives, WriteText and
// WriteOpenMetrics for hand-built ones) and the streamed JSON array of
// /metrics-windows (WriteWindows).
//
// The writers are plain functions; concurrent calls are safe as long as
// no caller mutates the batches meanwhile. Their working memory comes from
// a pool, and large inputs are ordered with up to GOMAXPROCS goroutines
// that end before the call returns. They buffer output in chunks and never
// hold the whole response. Their only per-sample state is one small
// fixed-size record; maps are keyed by family name or by distinct string,
// never built per sample.
package render

import (
	"cmp"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// TextContentType is the Content-Type of WriteText's output.
const TextContentType = "text/plain; version=0.0.4; charset=utf-8"

// Stats tells what a writer wrote and what it removed.
type Stats struct {
	// Series is the number of sample lines (text) or array elements (JSON)
	// written.
	Series int
	// Families is the number of metric families (text) or distinct metric
	// names (JSON) written.
	Families int
	// Duplicates is the number of series left out because an earlier batch
	// (or an earlier series of the same batch) had the same name and labels.
	Duplicates int
	// Dropped is the number of series left out because they cannot be
	// written validly: no points, an invalid metric name, a name that does
	// not fit its family's type, or a family that collides with another.
	Dropped int
	// DroppedLabels is the number of label pairs removed from written
	// series because their name is invalid or reserved (starts with "__"),
	// their value is empty or their name repeats.
	DroppedLabels int
}

// flushAt is the buffered size at which a writer hands its buffer to w.
const flushAt = 32 << 10

// Suffixes of histogram and summary component series.
const (
	sufBucket = "_bucket"
	sufSum    = "_sum"
	sufCount  = "_count"
)

// kind is a family's resolved type.
type kind uint8

const (
	kindUntyped kind = iota
	kindCounter
	kindGauge
	kindHistogram
	kindSummary
)

var kindNames = [...]string{
	kindUntyped:   "untyped",
	kindCounter:   "counter",
	kindGauge:     "gauge",
	kindHistogram: "histogram",
	kindSummary:   "summary",
}

// Component order inside a family line group: histogram buckets or summary
// quantiles first, then _sum, then _count.
const (
	compMain uint8 = iota
	compSum
	compCount
)

func kindOf(t fodcv1.MetricType) (kind, bool) {
	switch t {
	case fodcv1.MetricType_METRIC_TYPE_COUNTER:
		return kindCounter, true
	case fodcv1.MetricType_METRIC_TYPE_GAUGE:
		return kindGauge, true
	case fodcv1.MetricType_METRIC_TYPE_HISTOGRAM:
		return kindHistogram, true
	case fodcv1.MetricType_METRIC_TYPE_SUMMARY:
		return kindSummary, true
	case fodcv1.MetricType_METRIC_TYPE_UNTYPED:
		return kindUntyped, true
	}
	// UNSPECIFIED (older agents) and values this build does not know.
	return kindUntyped, false
}

// family is one output metric family.
type family struct {
	name      string
	kind      kind
	typed     bool  // declared by a typed sample
	dead      bool  // lost a name collision
	order     int32 // declaration order
	n         int32 // samples that fit
	off       int32 // start of its samples in the sorted refs
	helpExact string
	helpAny   string
}

// reserves reports whether a family of kind k owns the name
// <family>+suffix.
func (k kind) reserves(suffix string) bool {
	switch k {
	case kindHistogram:
		return true
	case kindSummary:
		return suffix != sufBucket
	}
	return false
}

// ref is the per-sample working record of WriteText (40 bytes).
type ref struct {
	bound float64 // le or quantile value, when skip >= 0
	pack  int32   // the sample is packs[pack].Samples[i]
	i     int32
	fam   int32 // index into families, -1 unassigned or dropped
	skip  int32 // index of the le/quantile label pair, or -1
	lab   int32 // the label set: packs[pack].Labels[lab:lab+2*nl]
	nl    int32 // number of labels
	// fp fingerprints the label set without le or quantile (set by
	// arrange): refs with different fingerprints are different series,
	// which spares sameSeries most comparisons.
	fp   uint32
	comp uint8
}

// ranked reads the label sets of refs as ranks (intern.go): each pack's
// string ids through the pack's table of their ranks in the answer.
type ranked struct {
	labels [][]uint32 // per pack: its Labels
	rank   [][]uint32 // per pack: the rank of each of its string ids
}

// fingerprint hashes r's label set, as ranks, without its le or quantile
// pair.
func (rk *ranked) fingerprint(r *ref) uint32 {
	ls, rs := rk.labels[r.pack][r.lab:r.lab+2*r.nl], rk.rank[r.pack]
	h := uint64(r.nl) // pairs compared: equal sets hash alike
	if r.skip >= 0 {
		h--
	}
	for i := 0; i < len(ls); i += 2 {
		if i != 2*int(r.skip) {
			h = (h^uint64(rs[ls[i]]))*0x100000001b3 ^ uint64(rs[ls[i+1]])
			h *= 0x9E3779B97F4A7C15
		}
	}
	return uint32(h >> 32)
}

// compare orders the label sets of a and b, skipping their le or
// quantile pair, as series.CompareSkip orders the sets they stand for.
func (rk *ranked) compare(a, b *ref) int {
	return series.CompareRanked(rk.labels[a.pack][a.lab:a.lab+2*a.nl], rk.rank[a.pack], int(a.skip),
		rk.labels[b.pack][b.lab:b.lab+2*b.nl], rk.rank[b.pack], int(b.skip))
}

// textWriter holds the state of one WriteText call.
type textWriter struct {
	work     *work
	unsorted []ref // refs before arrange, kept for reuse
	packs    []*series.Packed
	plain    [][]bool   // per pack and string: needs no escaping
	bound    []boundIDs // per pack
	fams     []*family
	byNam    map[string]*family
	refs     []ref
	ranked   *ranked
	stats    Stats
	om       bool // write OpenMetrics 1.0 instead of text 0.0.4
}

// boundIDs are the ids of "le" and "quantile" in one pack's strings, or
// noID.
type boundIDs struct{ le, quantile uint32 }

const noID = ^uint32(0)

func (tw *textWriter) sample(r *ref) *series.Sample { return &tw.packs[r.pack].Samples[r.i] }

func (tw *textWriter) name(r *ref) string {
	p := tw.packs[r.pack]
	return p.Strings[p.Samples[r.i].Name]
}

// labelIndex returns the index of r's label pair whose name has the id
// name in r's pack, or -1.
func (tw *textWriter) labelIndex(r *ref, name uint32) int {
	if name == noID {
		return -1
	}
	p := tw.packs[r.pack]
	ids := p.LabelIDs(&p.Samples[r.i])
	for j := 0; j < len(ids); j += 2 {
		if ids[j] == name {
			return j / 2
		}
	}
	return -1
}

// labelValue returns the value of r's label pair j.
func (tw *textWriter) labelValue(r *ref, j int) string {
	p := tw.packs[r.pack]
	return p.Strings[p.LabelIDs(&p.Samples[r.i])[2*j+1]]
}

// WriteText writes batches as Prometheus text format 0.0.4: for each metric
// family in name order one optional # HELP line, one # TYPE line and all of
// its samples, without timestamps. Earlier batches win ties: the first
// typed declaration of a family decides its type, and of duplicate series
// (same name and labels) the first is written. A series with several
// points is written with its last one.
//
// Untyped samples (older agents send no type) join a typed family they fit;
// otherwise histograms and summaries are inferred from the untyped samples
// of the whole input (X_bucket with le plus X_sum or X_count; X with
// quantile plus X_sum or X_count) and everything else is its own untyped
// family. Samples that cannot be written validly are counted in Stats and
// left out. An input without samples writes nothing.
func WriteText(w io.Writer, batches []series.Batch) (Stats, error) {
	return writeFamilies(w, packAll(batches), false)
}

// WritePackedText is WriteText for packed batches, the form decoding
// gives the scrape hot path, with OpenMetrics when openMetrics is set.
func WritePackedText(w io.Writer, packs []*series.Packed, openMetrics bool) (Stats, error) {
	return writeFamilies(w, packs, openMetrics)
}

func packAll(batches []series.Batch) []*series.Packed {
	packs := make([]*series.Packed, len(batches))
	for i := range batches {
		packs[i] = series.Pack(batches[i])
	}
	return packs
}

// OpenMetricsContentType is the Content-Type of WriteOpenMetrics' output.
const OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"

// WriteOpenMetrics writes batches as WriteText does, in the OpenMetrics 1.0
// text format: the same samples under the same names; counter families
// named *_total are declared without the suffix, other counters and
// untyped families are "unknown", HELP escapes quotes too, and the answer
// ends with "# EOF" (also when it is empty), so that a scraper can tell a
// complete answer from a truncated one.
func WriteOpenMetrics(w io.Writer, batches []series.Batch) (Stats, error) {
	return writeFamilies(w, packAll(batches), true)
}

func writeFamilies(w io.Writer, packs []*series.Packed, om bool) (Stats, error) {
	n := 0
	for _, p := range packs {
		n += len(p.Samples)
	}
	wk := workPool.Get().(*work)
	defer wk.recycle()
	tw := &textWriter{
		packs: packs,
		work:  wk,
		byNam: make(map[string]*family),
		refs:  slices.Grow(wk.refs[:0], n),
		om:    om,
	}
	tw.collect()
	tw.resolveUntyped()
	tw.classify()
	tw.resolveCollisions()
	order := tw.arrange()
	err := tw.write(w, order)
	wk.refs, wk.sorted = tw.unsorted, tw.refs
	return tw.stats, err
}

// work is the memory of one rendering that the next one can reuse: a
// scrape renders about as many samples each time, and this memory (about
// 80 bytes per sample) would otherwise be allocated, and collected, on
// every scrape. None of it holds pointers except the string map, which
// recycle clears.
type work struct {
	refs, sorted []ref
	ids          map[string]uint32 // rankStrings'
	strs         []string          // rankStrings'
}

var workPool = sync.Pool{New: func() any { return &work{ids: make(map[string]uint32)} }}

func (wk *work) recycle() {
	clear(wk.ids)
	clear(wk.strs)
	wk.strs = wk.strs[:0]
	workPool.Put(wk)
}

// declare returns the family called name, creating it with kind k.
func (tw *textWriter) declare(name string, k kind, typed bool) int32 {
	if f := tw.byNam[name]; f != nil {
		return f.order
	}
	f := &family{name: name, kind: k, typed: typed, order: int32(len(tw.fams))}
	tw.fams = append(tw.fams, f)
	tw.byNam[name] = f
	return f.order
}

// collect builds the refs in input order, with their label sets as
// ranks, and declares every typed family.
func (tw *textWriter) collect() {
	ranks, plain := rankStrings(tw.packs, tw.work)
	tw.plain = plain
	tw.ranked = &ranked{labels: make([][]uint32, len(tw.packs)), rank: ranks}
	for i, p := range tw.packs {
		tw.ranked.labels[i] = p.Labels
	}
	tw.bound = make([]boundIDs, len(tw.packs))
	var (
		lastFam int32 = -1
	)
	for pi, p := range tw.packs {
		tw.stats.Dropped += p.Dropped
		tw.stats.DroppedLabels += p.DroppedLabels
		b := boundIDs{le: noID, quantile: noID}
		if id, ok := p.IDOf("le"); ok {
			b.le = id
		}
		if id, ok := p.IDOf("quantile"); ok {
			b.quantile = id
		}
		tw.bound[pi] = b
		lastName, lastType, nameOK := noID, fodcv1.MetricType(0), false
		lastFam = -1
		for si := range p.Samples {
			s := &p.Samples[si]
			// Consecutive samples mostly share a name and type: check
			// and look up each run once.
			if s.Name != lastName || s.Type != lastType {
				lastName, lastType, lastFam = s.Name, s.Type, -1
				name := p.Strings[s.Name]
				nameOK = series.ValidMetricName(name)
				if k, typed := kindOf(s.Type); typed && nameOK {
					if fn := familyName(name, k); series.ValidMetricName(fn) {
						lastFam = tw.declare(fn, k, true)
					}
				}
			}
			if !nameOK {
				tw.stats.Dropped++
				continue
			}
			r := ref{pack: int32(pi), i: int32(si), fam: -1, skip: -1}
			if _, typed := kindOf(s.Type); typed {
				if lastFam < 0 {
					tw.stats.Dropped++
					continue
				}
				r.fam = lastFam
			}
			r.lab, r.nl = int32(s.Labels), int32(s.NumLabels)
			tw.refs = append(tw.refs, r)
		}
	}
}

// familyName is the family a sample of kind k called name belongs to.
func familyName(name string, k kind) string {
	switch k {
	case kindHistogram:
		if b, ok := strings.CutSuffix(name, sufBucket); ok {
			return b
		}
		fallthrough
	case kindSummary:
		if b, ok := strings.CutSuffix(name, sufSum); ok {
			return b
		}
		if b, ok := strings.CutSuffix(name, sufCount); ok {
			return b
		}
	}
	return name
}

// Inference flags of a candidate family name among unresolved untyped
// samples.
const (
	seenBucket   uint8 = 1 << iota // <name>_bucket with le
	seenSumCount                   // <name>_sum or <name>_count
	seenQuantile                   // <name> with quantile
)

// resolveUntyped assigns a family to every untyped sample: a typed family
// it fits, else an inferred histogram or summary, else its own family.
func (tw *textWriter) resolveUntyped() {
	var pending []int32
	for i := range tw.refs {
		r := &tw.refs[i]
		if r.fam >= 0 {
			continue
		}
		if f := tw.absorber(r); f != nil {
			r.fam = f.order
			continue
		}
		pending = append(pending, int32(i))
	}
	if len(pending) == 0 {
		return
	}

	flags := make(map[string]uint8)
	mark := func(name string, bit uint8) {
		if flags[name]&bit == 0 {
			flags[name] |= bit
		}
	}
	var lastName string
	var lastBits uint8 = 0xff
	for _, i := range pending {
		r := &tw.refs[i]
		name := tw.name(r)
		hasLe, hasQ := tw.hasBounds(r)
		var bits uint8
		if hasLe {
			bits |= seenBucket
		}
		if hasQ {
			bits |= seenQuantile
		}
		if name == lastName && bits == lastBits {
			continue
		}
		lastName, lastBits = name, bits
		if b, ok := cutComponent(name, sufBucket); ok && bits&seenBucket != 0 {
			mark(b, seenBucket)
		}
		if b, ok := cutSumCount(name); ok {
			mark(b, seenSumCount)
		}
		if bits&seenQuantile != 0 {
			mark(name, seenQuantile)
		}
	}
	inferred := func(name string) kind {
		if f := tw.byNam[name]; f != nil && f.typed {
			return kindUntyped // a typed declaration is never overridden
		}
		switch fl := flags[name]; {
		case fl&seenBucket != 0 && fl&seenSumCount != 0:
			return kindHistogram
		case fl&seenQuantile != 0 && fl&seenSumCount != 0:
			return kindSummary
		}
		return kindUntyped
	}

	lastName = ""
	var lastLe, lastQ bool
	var lastFam int32 = -1
	for _, i := range pending {
		r := &tw.refs[i]
		name := tw.name(r)
		hasLe, hasQ := tw.hasBounds(r)
		if lastFam >= 0 && name == lastName && hasLe == lastLe && hasQ == lastQ {
			r.fam = lastFam
			continue
		}
		lastName, lastLe, lastQ = name, hasLe, hasQ
		fn, k := name, kindUntyped
		if b, ok := cutComponent(name, sufBucket); ok && hasLe && inferred(b) == kindHistogram {
			fn, k = b, kindHistogram
		} else if b, ok := cutSumCount(name); ok && inferred(b) != kindUntyped {
			fn, k = b, inferred(b)
		} else {
			// Its own family; if that name is an inferred histogram or
			// summary the sample does not fit it and is dropped later.
			k = inferred(name)
		}
		lastFam = tw.declare(fn, k, false)
		r.fam = lastFam
	}
}

// hasBounds reports whether r has an le and a quantile label.
func (tw *textWriter) hasBounds(r *ref) (le, quantile bool) {
	b := tw.bound[r.pack]
	return tw.labelIndex(r, b.le) >= 0, tw.labelIndex(r, b.quantile) >= 0
}

// cutComponent returns name without suffix, if it has the suffix and
// something is left (a metric name's non-empty prefix is a valid name).
func cutComponent(name, suffix string) (string, bool) {
	b, ok := strings.CutSuffix(name, suffix)
	return b, ok && b != ""
}

func cutSumCount(name string) (string, bool) {
	if b, ok := cutComponent(name, sufSum); ok {
		return b, true
	}
	return cutComponent(name, sufCount)
}

// absorber returns the typed family an untyped sample fits, or nil. Only
// typed families exist when it runs.
func (tw *textWriter) absorber(r *ref) *family {
	name := tw.name(r)
	if f := tw.byNam[name]; f != nil && tw.fits(f, r) {
		return f
	}
	for _, suf := range [...]string{sufBucket, sufSum, sufCount} {
		if b, ok := cutComponent(name, suf); ok {
			if f := tw.byNam[b]; f != nil && tw.fits(f, r) {
				return f
			}
		}
	}
	return nil
}

// fits reports whether r can be written in family f and sets its sort
// fields. The rules are those of the text format parsers: a histogram has
// <f>_bucket with a numeric le, and <f>_sum and <f>_count without le; a
// summary has <f> with a numeric quantile, and <f>_sum and <f>_count
// without quantile; other kinds have samples called <f>.
func (tw *textWriter) fits(f *family, r *ref) bool {
	name := tw.name(r)
	r.skip, r.comp, r.bound = -1, compMain, 0
	switch f.kind {
	case kindHistogram:
		rest, ok := strings.CutPrefix(name, f.name)
		if !ok {
			return false
		}
		le := tw.labelIndex(r, tw.bound[r.pack].le)
		switch rest {
		case sufBucket:
			if le < 0 {
				return false
			}
			v, ok := parseBound(tw.labelValue(r, le))
			// Bucket counts must be non-negative for the parser.
			if !ok || tw.sample(r).Value < 0 {
				return false
			}
			r.skip, r.bound = int32(le), v
			return true
		case sufSum:
			r.comp = compSum
			return le < 0
		case sufCount:
			r.comp = compCount
			return le < 0 && tw.sample(r).Value >= 0
		}
		return false
	case kindSummary:
		rest, ok := strings.CutPrefix(name, f.name)
		if !ok {
			return false
		}
		q := tw.labelIndex(r, tw.bound[r.pack].quantile)
		switch rest {
		case "":
			if q < 0 {
				return false
			}
			v, ok := parseBound(tw.labelValue(r, q))
			if !ok {
				return false
			}
			r.skip, r.bound = int32(q), v
			return true
		case sufSum:
			r.comp = compSum
			return q < 0
		case sufCount:
			r.comp = compCount
			return q < 0
		}
		return false
	}
	return name == f.name
}

// classify checks every sample against its family's final kind, counts
// what fits and picks HELP texts in input order.
func (tw *textWriter) classify() {
	for i := range tw.refs {
		r := &tw.refs[i]
		f := tw.fams[r.fam]
		if !tw.fits(f, r) {
			tw.stats.Dropped++
			r.fam = -1
			continue
		}
		f.n++
		if f.helpExact != "" {
			continue // nothing left to pick
		}
		p := tw.packs[r.pack]
		s := &p.Samples[r.i]
		if h := p.Strings[s.Help]; h != "" {
			if p.Strings[s.Name] == f.name {
				f.helpExact = h
			}
			if f.helpAny == "" {
				f.helpAny = h
			}
		}
	}
}

// resolveCollisions kills families whose name is a component of an
// earlier histogram or summary family, and histogram or summary families
// whose component names an earlier family already uses: the text format
// cannot tell them apart. Families are visited in declaration order, so
// typed declarations (in batch order) beat inferred ones.
func (tw *textWriter) resolveCollisions() {
	live := func(name string, before int32) bool {
		g := tw.byNam[name]
		return g != nil && g.n > 0 && !g.dead && g.order < before
	}
	for _, f := range tw.fams {
		if f.n == 0 {
			continue
		}
		for _, suf := range [...]string{sufBucket, sufSum, sufCount} {
			if b, ok := strings.CutSuffix(f.name, suf); ok && live(b, f.order) && tw.byNam[b].kind.reserves(suf) {
				f.dead = true
			}
			if f.kind.reserves(suf) && live(f.name+suf, f.order) {
				f.dead = true
			}
		}
	}
	for i := range tw.refs {
		r := &tw.refs[i]
		if r.fam >= 0 && tw.fams[r.fam].dead {
			tw.stats.Dropped++
			r.fam = -1
		}
	}
}

// arrange sorts the kept refs by family name, then label set (without le
// or quantile), component, bound and input order. It returns the families
// to write, in order; each family's refs are refs[f.off:f.off+f.n].
func (tw *textWriter) arrange() []*family {
	var out []*family
	for _, f := range tw.fams {
		if f.n > 0 && !f.dead {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	// Counting sort into family segments, in input order, then order
	// each segment on its own (orderFamilies).
	var off int32
	for _, f := range out {
		f.off = off
		off += f.n
	}
	sorted := slices.Grow(tw.work.sorted[:0], int(off))[:off]
	fill := make([]int32, len(tw.fams))
	for _, r := range tw.refs {
		if r.fam < 0 {
			continue
		}
		f := tw.fams[r.fam]
		r.fp = tw.ranked.fingerprint(&r)
		sorted[f.off+fill[r.fam]] = r
		fill[r.fam]++
	}
	orderFamilies(sorted, tw.ranked, out)
	tw.unsorted, tw.refs = tw.refs, sorted
	return out
}

// parallelSortMin is the number of samples from which orderFamilies uses
// more than one goroutine; below it the goroutines cost more than they
// save.
const parallelSortMin = 1 << 16

// orderFamilies puts each family's segment of refs in output order (see
// merger). Segments are disjoint, so large inputs are ordered by up to
// GOMAXPROCS goroutines, biggest families first; they have all finished
// when it returns. A scrape's collection is over by the time it renders,
// so the cores are otherwise idle.
func orderFamilies(refs []ref, rk *ranked, fams []*family) {
	workers := min(runtime.GOMAXPROCS(0), len(fams))
	if len(refs) < parallelSortMin || workers < 2 {
		m := merger{ranked: rk}
		for _, f := range fams {
			m.order(refs[f.off : f.off+f.n])
		}
		return
	}
	bySize := slices.Clone(fams)
	slices.SortFunc(bySize, func(a, b *family) int { return cmp.Compare(b.n, a.n) })
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			m := merger{ranked: rk}
			for {
				i := next.Add(1) - 1
				if i >= int64(len(bySize)) {
					return
				}
				f := bySize[i]
				m.order(refs[f.off : f.off+f.n])
			}
		})
	}
	wg.Wait()
}

// compareRefs orders samples of one family: by label set without le or
// quantile, component, bound and input order.
func compareRefs(rk *ranked, a, b *ref) int {
	// rk.compare written out: the merge calls this for every comparison.
	if c := series.CompareRanked(rk.labels[a.pack][a.lab:a.lab+2*a.nl], rk.rank[a.pack], int(a.skip),
		rk.labels[b.pack][b.lab:b.lab+2*b.nl], rk.rank[b.pack], int(b.skip)); c != 0 {
		return c
	}
	if a.comp != b.comp {
		return cmp.Compare(a.comp, b.comp)
	}
	if a.bound != b.bound {
		return cmp.Compare(a.bound, b.bound)
	}
	// Input order: earlier wins ties.
	if a.pack != b.pack {
		return cmp.Compare(a.pack, b.pack)
	}
	return cmp.Compare(a.i, b.i)
}

// sameSeries reports whether b repeats a, given that they are adjacent in
// sorted order: equal labels, component and bound (le="1" and le="1.0" are
// the same bucket).
func sameSeries(rk *ranked, a, b *ref) bool {
	return a.fp == b.fp && a.comp == b.comp && a.bound == b.bound && rk.compare(a, b) == 0
}

// write emits the families in order.
func (tw *textWriter) write(w io.Writer, fams []*family) error {
	if len(fams) == 0 && !tw.om {
		return nil
	}
	buf := make([]byte, 0, flushAt+4096)
	for _, f := range fams {
		help := f.helpExact
		if help == "" {
			help = f.helpAny
		}
		name, typ := f.name, kindNames[f.kind]
		if tw.om {
			name, typ = tw.openMetricsFamily(f)
		}
		if help != "" {
			buf = append(buf, "# HELP "...)
			buf = append(buf, name...)
			buf = append(buf, ' ')
			buf = appendEscaped(buf, validUTF8(help), tw.om)
			buf = append(buf, '\n')
		}
		buf = append(buf, "# TYPE "...)
		buf = append(buf, name...)
		buf = append(buf, ' ')
		buf = append(buf, typ...)
		buf = append(buf, '\n')
		tw.stats.Families++
		refs := tw.refs[f.off : f.off+f.n]
		for i := range refs {
			r := &refs[i]
			if i > 0 && sameSeries(tw.ranked, &refs[i-1], r) {
				tw.stats.Duplicates++
				continue
			}
			buf = appendSample(buf, tw.packs[r.pack], r.i, tw.plain[r.pack])
			tw.stats.Series++
			if len(buf) >= flushAt {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	if tw.om {
		buf = append(buf, "# EOF\n"...)
	}
	if len(buf) > 0 {
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// openMetricsFamily names and types f the OpenMetrics way; sample names
// never change. A counter family whose
// name ends in _total is declared without it; a counter family without
// _total (BanyanDB has many) is written as "unknown" under its own name,
// because OpenMetrics would have its samples renamed to name_total and
// every query and dashboard written against the text format would break.
// A counter whose OpenMetrics name would clash with another family is
// "unknown" too; OpenMetrics accepts any sample name there.
func (tw *textWriter) openMetricsFamily(f *family) (name, typ string) {
	switch f.kind {
	case kindUntyped:
		return f.name, "unknown"
	case kindCounter:
		if base, ok := strings.CutSuffix(f.name, "_total"); ok && tw.byNam[base] == nil {
			return base, "counter"
		}
		return f.name, "unknown"
	}
	return f.name, kindNames[f.kind]
}

// appendSample appends one sample line: name{labels} value. Lines are
// formatted by hand into one buffer; going through expfmt instead means a
// dto message per sample, about 20 allocations each (BenchmarkFloor).
func appendSample(buf []byte, p *series.Packed, i int32, plain []bool) []byte {
	s := &p.Samples[i]
	buf = append(buf, p.Strings[s.Name]...)
	if ids := p.LabelIDs(s); len(ids) > 0 {
		buf = append(buf, '{')
		for j := 0; j < len(ids); j += 2 {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, p.Strings[ids[j]]...)
			buf = append(buf, '=', '"')
			if v := ids[j+1]; plain[v] {
				buf = append(buf, p.Strings[v]...)
			} else {
				buf = appendEscaped(buf, p.Strings[v], true)
			}
			buf = append(buf, '"')
		}
		buf = append(buf, '}')
	}
	buf = append(buf, ' ')
	buf = appendTextFloat(buf, s.Value)
	return append(buf, '\n')
}

// appendTextFloat formats v as the text format wants it: NaN, +Inf, -Inf
// or the shortest decimal that parses back to v.
func appendTextFloat(buf []byte, v float64) []byte {
	// Many values are small integers (counts, states, flags); strconv's
	// shortest formatting writes those below 1e6 as plain digits too (from
	// 1e6 on it switches to an exponent) and takes several times longer to
	// find out. Negative zero keeps its sign through strconv.
	if i := int64(v); float64(i) == v && i > -1e6 && i < 1e6 && (i != 0 || !math.Signbit(v)) {
		return strconv.AppendInt(buf, i, 10)
	}
	switch {
	case math.IsNaN(v):
		return append(buf, "NaN"...)
	case math.IsInf(v, 1):
		return append(buf, "+Inf"...)
	case math.IsInf(v, -1):
		return append(buf, "-Inf"...)
	}
	return strconv.AppendFloat(buf, v, 'g', -1, 64)
}

// appendEscaped appends s with \ and newline escaped, and " too when quote
// is set (label values). Runs without special bytes are copied at once.
func appendEscaped(buf []byte, s string, quote bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch c := s[i]; {
		case c == '\\':
			esc = `\\`
		case c == '\n':
			esc = `\n`
		case c == '"' && quote:
			esc = `\"`
		default:
			continue
		}
		buf = append(buf, s[start:i]...)
		buf = append(buf, esc...)
		start = i + 1
	}
	return append(buf, s[start:]...)
}

// parseBound parses an le or quantile value the way the text parsers do
// (no hex floats, no underscores); NaN is refused because it has no place
// in the bucket or quantile order.
func parseBound(s string) (float64, bool) {
	if strings.ContainsAny(s, "pP_") {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
