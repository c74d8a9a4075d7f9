package decode

// The reference decoder's ordering and grouping: the string-based
// implementation the proxy used before decoding moved to interned ids
// (reply.go). fromMessage (oracle_test.go) builds on it, and the tests hold
// the id-based decoder to it.

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// build sorts keys and turns them into series, one per key or, with
// window, one per distinct name and label set.
func build(keys []key, window bool, sh *sharer) []series.Series {
	if window {
		return group(keys, sh)
	}
	return latest(keys, sh)
}

// key is one Metric prepared for sorting.
type key struct {
	name   string
	labels series.Labels
	ms     int64
	idx    int32 // position in the reply
	typ    fodcv1.MetricType
	value  float64
	help   string // the description as sent, not yet repaired

	// Where the text renderer puts the sample (placeInFamily).
	family string
	skip   int32   // index of le or quantile in labels, or -1
	comp   uint8   // 0 bucket, quantile or plain sample, 1 _sum, 2 _count
	bound  float64 // value of le or quantile
}

// placeInFamily sets k's family fields the way the renderer files a
// typed sample. Only the order of a reply depends on them, so a value the
// renderer reads otherwise costs time, never correctness.
func (k *key) placeInFamily() {
	k.family, k.skip, k.comp, k.bound = k.name, -1, 0, 0
	var bound string
	switch k.typ {
	case fodcv1.MetricType_METRIC_TYPE_HISTOGRAM:
		if base, ok := strings.CutSuffix(k.name, "_bucket"); ok {
			k.family, bound = base, "le"
			break
		}
		k.family, k.comp = cutSumCount(k.name)
	case fodcv1.MetricType_METRIC_TYPE_SUMMARY:
		if k.family, k.comp = cutSumCount(k.name); k.comp == 0 {
			bound = "quantile"
		}
	}
	if bound == "" {
		return
	}
	for i, l := range k.labels {
		if l.Name == bound {
			if v, err := strconv.ParseFloat(l.Value, 64); err == nil {
				k.skip, k.bound = int32(i), v
			}
			return
		}
	}
}

func cutSumCount(name string) (string, uint8) {
	if base, ok := strings.CutSuffix(name, "_sum"); ok {
		return base, 1
	}
	if base, ok := strings.CutSuffix(name, "_count"); ok {
		return base, 2
	}
	return name, 0
}

// compareInFamily orders keys of one family by placeInFamily's fields,
// then as compareKeys does.
func compareInFamily(a, b *key) int {
	if c := series.CompareSkip(a.labels, int(a.skip), b.labels, int(b.skip)); c != 0 {
		return c
	}
	if a.comp != b.comp {
		return cmp.Compare(a.comp, b.comp)
	}
	if a.bound != b.bound {
		return cmp.Compare(a.bound, b.bound)
	}
	if c := series.CompareSkip(a.labels, -1, b.labels, -1); c != 0 {
		return c
	}
	return compareTimes(a, b)
}

func compareKeys(a, b key) int {
	if c := strings.Compare(a.name, b.name); c != 0 {
		return c
	}
	if c := series.CompareSkip(a.labels, -1, b.labels, -1); c != 0 {
		return c
	}
	return compareTimes(&a, &b)
}

// compareTimes orders by time, then position in the reply.
func compareTimes(a, b *key) int {
	if c := cmp.Compare(a.ms, b.ms); c != 0 {
		return c
	}
	return cmp.Compare(a.idx, b.idx)
}

// latest builds one single-point series per metric, in the order the
// text renderer writes a family: by family, then labels without a
// histogram's le or a summary's quantile, then bucket or quantile, _sum,
// _count, then le or quantile as a number (see placeInFamily). The
// renderer merges the agents' replies instead of sorting them when each
// is in that order already; for a reply it is not (untyped histograms,
// labels the renderer drops) the output is the same, only slower.
func latest(keys []key, sh *sharer) []series.Series {
	for i := range keys {
		keys[i].placeInFamily()
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.family, b.family); c != 0 {
			return c
		}
		return compareInFamily(&a, &b)
	})
	out := make([]series.Series, len(keys))
	points := make([]series.Point, len(keys))
	for i := range keys {
		k := &keys[i]
		points[i] = series.Point{TimestampMs: k.ms, Value: k.value}
		out[i] = series.Series{
			Name:   sh.name(k.name),
			Help:   sh.help(validUTF8(k.help)),
			Type:   k.typ,
			Labels: sh.labels(k.labels),
			Points: points[i : i+1 : i+1],
		}
	}
	return out
}

// sharer is the reference's string store: a string equal to its
// counterpart in the previous series (in sorted order) becomes that very
// string; any other is copied into blocks.
type sharer struct {
	blocks
	prevName, prevHelp string
	prev               series.Labels
}

func newSharer(upper int, clone bool) *sharer {
	return &sharer{blocks: newBlocks(upper, clone)}
}

func (sh *sharer) name(s string) string {
	if s != sh.prevName {
		sh.prevName = sh.copy(s)
	}
	return sh.prevName
}

func (sh *sharer) help(s string) string {
	if s != sh.prevHelp {
		sh.prevHelp = sh.copy(s)
	}
	return sh.prevHelp
}

// labels shares or copies in place and returns ls.
func (sh *sharer) labels(ls series.Labels) series.Labels {
	for j := range ls {
		l := &ls[j]
		if j < len(sh.prev) && l.Name == sh.prev[j].Name {
			l.Name = sh.prev[j].Name
		} else {
			l.Name = sh.copy(l.Name)
		}
		if j < len(sh.prev) && l.Value == sh.prev[j].Value {
			l.Value = sh.prev[j].Value
		} else {
			l.Value = sh.copy(l.Value)
		}
	}
	sh.prev = ls
	return ls
}

// group merges metrics with equal name and labels into one series each.
func group(keys []key, sh *sharer) []series.Series {
	slices.SortFunc(keys, compareKeys)
	n, nl := 0, 0
	for i := range keys {
		if i == 0 || !sameSeries(keys[i-1], keys[i]) {
			n++
			nl += len(keys[i].labels)
		}
	}
	out := make([]series.Series, 0, n)
	points := make([]series.Point, 0, len(keys))
	// Compact the label sets of the kept series so that the per-sample
	// copies can be collected.
	labels := make(series.Labels, 0, nl)
	for i := 0; i < len(keys); {
		j := i + 1
		for j < len(keys) && sameSeries(keys[i], keys[j]) {
			j++
		}
		start := len(points)
		help, helpIdx := "", int32(-1)
		typ, typIdx := fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED, int32(-1)
		for r := i; r < j; r++ {
			k := keys[r]
			if d := k.help; d != "" && (helpIdx < 0 || k.idx < helpIdx) {
				help, helpIdx = d, k.idx
			}
			if t := k.typ; t != fodcv1.MetricType_METRIC_TYPE_UNSPECIFIED && (typIdx < 0 || k.idx < typIdx) {
				typ, typIdx = t, k.idx
			}
			p := series.Point{TimestampMs: k.ms, Value: k.value}
			// Keys with equal times are ordered by reply position: the
			// later one replaces the earlier.
			if len(points) > start && points[len(points)-1].TimestampMs == k.ms {
				points[len(points)-1] = p
			} else {
				points = append(points, p)
			}
		}
		ls := len(labels)
		labels = append(labels, keys[i].labels...)
		out = append(out, series.Series{
			Name:   sh.name(keys[i].name),
			Help:   sh.help(validUTF8(help)),
			Type:   typ,
			Labels: sh.labels(labels[ls:len(labels):len(labels)]),
			Points: points[start:len(points):len(points)],
		})
		i = j
	}
	return out
}

func sameSeries(a, b key) bool {
	return a.name == b.name && series.CompareSkip(a.labels, -1, b.labels, -1) == 0
}

// appendLabels appends the sorted label set of one sample to dst: its own
// non-empty labels, then the node labels. A node label wins over the
// sample's label of the same name: with the same value it stays one label,
// with another the sample's is kept as exported_<name> (see exportedName).
func appendLabels(dst series.Labels, own map[string]string, extra series.Labels) series.Labels {
	start := len(dst)
	for k, v := range own {
		if k == "" || v == "" {
			continue
		}
		dst = append(dst, series.Label{Name: validUTF8(k), Value: validUTF8(v)})
	}
	n := len(dst)
	for _, e := range extra {
		i := index(dst[start:n], e.Name)
		switch {
		case i < 0:
			dst = append(dst, e)
		case dst[start+i].Value != e.Value:
			dst[start+i].Name = exportedName(e.Name)
			dst = append(dst, e)
		}
	}
	ls := dst[start:]
	sortLabels(ls)
	// Two keys can only collide after UTF-8 repair or a rename to
	// exported_<name>. Keep the smaller value so that the outcome does not
	// depend on map order.
	for i := 1; i < len(ls); i++ {
		if ls[i].Name == ls[i-1].Name {
			copy(ls[i:], ls[i+1:])
			ls = ls[:len(ls)-1]
			i--
		}
	}
	return dst[:start+len(ls)]
}

func index(ls series.Labels, name string) int {
	for i, l := range ls {
		if l.Name == name {
			return i
		}
	}
	return -1
}

// ownedContainer reports whether a sample's labels name no container, or
// one of those the agent registered. Agents stamp container_name per
// scrape target; a value the registration did not declare would let one
// registration shadow another of the same pod.
func ownedContainer(ls series.Labels, containers []string) bool {
	for _, l := range ls {
		if l.Name == "container_name" {
			return slices.Contains(containers, l.Value)
		}
	}
	return true
}

func toMillis(ts *timestamppb.Timestamp) int64 {
	return ts.GetSeconds()*1000 + int64(ts.GetNanos())/1e6
}
