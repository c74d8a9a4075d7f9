// Package render writes merged agent batches in the proxy's two metrics
// formats: Prometheus text exposition 0.0.4 for /metrics (WriteText) and the
// streamed JSON array of /metrics-windows (WriteWindows).
//
// Both writers are plain functions without shared state; concurrent calls
// are safe as long as no caller mutates the batches meanwhile. WriteText
// sorts large inputs with up to GOMAXPROCS goroutines that end before it
// returns. They buffer
// output in chunks and never hold the whole response. Their only per-sample
// state is one small fixed-size record; maps are keyed by metric or family
// name, never built per sample.
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

// ref is the per-sample working record of WriteText (32 bytes).
type ref struct {
	s     *series.Series
	bound float64 // le or quantile value, when skip >= 0
	seq   int32   // input order; earlier wins ties
	fam   int32   // index into families, -1 unassigned or dropped
	skip  int32   // index of the le/quantile label in s.Labels, or -1
	comp  uint8
}

// textWriter holds the state of one WriteText call.
type textWriter struct {
	fams  []*family
	byNam map[string]*family
	refs  []ref
	stats Stats
	om    bool // write OpenMetrics 1.0 instead of text 0.0.4
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
	return writeFamilies(w, batches, false)
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
	return writeFamilies(w, batches, true)
}

func writeFamilies(w io.Writer, batches []series.Batch, om bool) (Stats, error) {
	n := 0
	for i := range batches {
		n += len(batches[i].Series)
	}
	tw := &textWriter{
		byNam: make(map[string]*family),
		refs:  make([]ref, 0, n),
		om:    om,
	}
	tw.collect(batches)
	tw.resolveUntyped()
	tw.classify()
	tw.resolveCollisions()
	order := tw.arrange()
	err := tw.write(w, order)
	return tw.stats, err
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

// collect builds the refs in input order and declares every typed family.
func (tw *textWriter) collect(batches []series.Batch) {
	var (
		seq      int32
		lastName string
		lastType fodcv1.MetricType
		lastFam  int32 = -1
	)
	for bi := range batches {
		ss := batches[bi].Series
		checked := batches[bi].CleanLabels
		for si := range ss {
			s := &ss[si]
			seq++
			if len(s.Points) == 0 || !series.ValidMetricName(s.Name) {
				tw.stats.Dropped++
				continue
			}
			if !checked {
				if clean, dropped, changed := cleanLabels(s.Labels); changed {
					tw.stats.DroppedLabels += dropped
					cp := *s
					cp.Labels = clean
					s = &cp
				}
			}
			r := ref{s: s, seq: seq, fam: -1, skip: -1}
			if k, typed := kindOf(s.Type); typed {
				// Consecutive series mostly share a name: skip the map.
				if s.Name != lastName || s.Type != lastType || lastFam < 0 {
					lastName, lastType = s.Name, s.Type
					lastFam = -1
					if fn := familyName(s.Name, k); series.ValidMetricName(fn) {
						lastFam = tw.declare(fn, k, true)
					}
				}
				if lastFam < 0 {
					tw.stats.Dropped++
					continue
				}
				r.fam = lastFam
			}
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
		s := tw.refs[i].s
		var bits uint8
		if s.Labels.Get("le") != "" {
			bits |= seenBucket
		}
		if s.Labels.Get("quantile") != "" {
			bits |= seenQuantile
		}
		if s.Name == lastName && bits == lastBits {
			continue
		}
		lastName, lastBits = s.Name, bits
		if b, ok := cutComponent(s.Name, sufBucket); ok && bits&seenBucket != 0 {
			mark(b, seenBucket)
		}
		if b, ok := cutSumCount(s.Name); ok {
			mark(b, seenSumCount)
		}
		if bits&seenQuantile != 0 {
			mark(s.Name, seenQuantile)
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
		s := r.s
		hasLe, hasQ := s.Labels.Get("le") != "", s.Labels.Get("quantile") != ""
		if lastFam >= 0 && s.Name == lastName && hasLe == lastLe && hasQ == lastQ {
			r.fam = lastFam
			continue
		}
		lastName, lastLe, lastQ = s.Name, hasLe, hasQ
		fn, k := s.Name, kindUntyped
		if b, ok := cutComponent(s.Name, sufBucket); ok && hasLe && inferred(b) == kindHistogram {
			fn, k = b, kindHistogram
		} else if b, ok := cutSumCount(s.Name); ok && inferred(b) != kindUntyped {
			fn, k = b, inferred(b)
		} else {
			// Its own family; if that name is an inferred histogram or
			// summary the sample does not fit it and is dropped later.
			k = inferred(s.Name)
		}
		lastFam = tw.declare(fn, k, false)
		r.fam = lastFam
	}
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
	name := r.s.Name
	if f := tw.byNam[name]; f != nil && fits(f, r) {
		return f
	}
	for _, suf := range [...]string{sufBucket, sufSum, sufCount} {
		if b, ok := cutComponent(name, suf); ok {
			if f := tw.byNam[b]; f != nil && fits(f, r) {
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
func fits(f *family, r *ref) bool {
	name := r.s.Name
	r.skip, r.comp, r.bound = -1, compMain, 0
	switch f.kind {
	case kindHistogram:
		rest, ok := strings.CutPrefix(name, f.name)
		if !ok {
			return false
		}
		le := labelIndex(r.s.Labels, "le")
		switch rest {
		case sufBucket:
			if le < 0 {
				return false
			}
			v, ok := parseBound(r.s.Labels[le].Value)
			// Bucket counts must be non-negative for the parser.
			if !ok || lastValue(r.s) < 0 {
				return false
			}
			r.skip, r.bound = int32(le), v
			return true
		case sufSum:
			r.comp = compSum
			return le < 0
		case sufCount:
			r.comp = compCount
			return le < 0 && lastValue(r.s) >= 0
		}
		return false
	case kindSummary:
		rest, ok := strings.CutPrefix(name, f.name)
		if !ok {
			return false
		}
		q := labelIndex(r.s.Labels, "quantile")
		switch rest {
		case "":
			if q < 0 {
				return false
			}
			v, ok := parseBound(r.s.Labels[q].Value)
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
		if !fits(f, r) {
			tw.stats.Dropped++
			r.fam = -1
			continue
		}
		f.n++
		if h := r.s.Help; h != "" {
			if f.helpExact == "" && r.s.Name == f.name {
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
	sorted := make([]ref, off)
	fill := make([]int32, len(tw.fams))
	for _, r := range tw.refs {
		if r.fam < 0 {
			continue
		}
		f := tw.fams[r.fam]
		sorted[f.off+fill[r.fam]] = r
		fill[r.fam]++
	}
	orderFamilies(sorted, out)
	tw.refs = sorted
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
func orderFamilies(refs []ref, fams []*family) {
	workers := min(runtime.GOMAXPROCS(0), len(fams))
	if len(refs) < parallelSortMin || workers < 2 {
		var m merger
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
			var m merger
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

func compareRefs(a, b ref) int {
	if c := series.CompareSkip(a.s.Labels, int(a.skip), b.s.Labels, int(b.skip)); c != 0 {
		return c
	}
	if a.comp != b.comp {
		return cmp.Compare(a.comp, b.comp)
	}
	if a.bound != b.bound {
		return cmp.Compare(a.bound, b.bound)
	}
	return cmp.Compare(a.seq, b.seq)
}

// sameSeries reports whether b repeats a, given that they are adjacent in
// sorted order: equal labels, component and bound (le="1" and le="1.0" are
// the same bucket).
func sameSeries(a, b *ref) bool {
	return a.comp == b.comp && a.bound == b.bound && series.CompareSkip(a.s.Labels, int(a.skip), b.s.Labels, int(b.skip)) == 0
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
			if i > 0 && sameSeries(&refs[i-1], r) {
				tw.stats.Duplicates++
				continue
			}
			buf = appendSample(buf, r.s)
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
func appendSample(buf []byte, s *series.Series) []byte {
	buf = append(buf, s.Name...)
	if len(s.Labels) > 0 {
		buf = append(buf, '{')
		for i, l := range s.Labels {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, l.Name...)
			buf = append(buf, '=', '"')
			buf = appendEscaped(buf, l.Value, true)
			buf = append(buf, '"')
		}
		buf = append(buf, '}')
	}
	buf = append(buf, ' ')
	buf = appendTextFloat(buf, lastValue(s))
	return append(buf, '\n')
}

func lastValue(s *series.Series) float64 { return s.Points[len(s.Points)-1].Value }

// appendTextFloat formats v as the text format wants it: NaN, +Inf, -Inf
// or the shortest decimal that parses back to v.
func appendTextFloat(buf []byte, v float64) []byte {
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

// cleanLabels returns ls without pairs that cannot be written: invalid or
// reserved names, empty values, repeated names. Invalid UTF-8 in values
// is repaired. It allocates only when something changes, and reports
// how many pairs it dropped and whether it changed anything.
func cleanLabels(ls series.Labels) (series.Labels, int, bool) {
	bad := -1
	for i, l := range ls {
		if !series.ValidLabelName(l.Name) || l.Value == "" || !utf8.ValidString(l.Value) || (i > 0 && ls[i-1].Name == l.Name) {
			bad = i
			break
		}
	}
	if bad < 0 {
		return ls, 0, false
	}
	out := make(series.Labels, bad, len(ls))
	copy(out, ls[:bad])
	dropped := 0
	for _, l := range ls[bad:] {
		if !series.ValidLabelName(l.Name) || l.Value == "" || (len(out) > 0 && out[len(out)-1].Name == l.Name) {
			dropped++
			continue
		}
		l.Value = validUTF8(l.Value)
		out = append(out, l)
	}
	return out, dropped, true
}

// labelIndex returns the position of the label called name in ls, or -1.
func labelIndex(ls series.Labels, name string) int {
	for i, l := range ls {
		if l.Name == name {
			return i
		}
	}
	return -1
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
