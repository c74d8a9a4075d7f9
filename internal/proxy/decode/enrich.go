// Package decode turns one agent's StreamMetrics reply, still in its wire
// encoding, into the proxy's series model: labels sorted and cleaned, the
// node's identity added where the sample lacks it (the enrichment), a
// timestamp on every point and, for window replies, the samples of each
// series grouped into one ascending run of points.
//
// Batch is called once per agent reply on the scrape hot path: it reads
// the reply's wire bytes straight into series, never building the protobuf
// message. It allocates a fixed handful of slices per reply (not per
// sample) and no maps. Its tests hold it to a reference built on the
// decoded message (oracle_test.go).
package decode

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// NodeInfo is what the registry knows about the agent that sent a reply.
type NodeInfo struct {
	Node series.Node
	// Labels are the node labels the agent registered with.
	Labels map[string]string
	// Containers are the container names the agent registered with. A
	// sample whose container_name is not one of them is dropped (see
	// ownedContainer).
	Containers []string
}

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
	sc := scratchPool.Get().(*scratch)
	defer sc.recycle()
	perm := familyOrder(keys, sc)
	out := make([]series.Series, len(keys))
	points := make([]series.Point, len(keys))
	for i, ki := range perm {
		k := &keys[ki]
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

// pack builds the Packed of keys in latest's order. Each string enters
// the Packed's table once, copied out of the reply; a string equal to its
// counterpart in the previous sample (neighbours mostly share names and
// many values) takes its id without a lookup. Label pairs whose name the
// text format cannot carry are left out and counted, as series.Pack does.
func pack(node series.Node, keys []key, labels int, sc *scratch) *series.Packed {
	perm := familyOrder(keys, sc)
	// A reply's distinct strings are few: start with a small block.
	sh := newSharer(4<<10, true)
	pk := series.NewPacker(node, len(keys), labels, sh.copy)
	var (
		prev             series.Labels // the previous sample's kept labels
		prevIDs, curIDs  []uint32
		prevName, prevHi string
		nameID, helpID   uint32
		cur              = make(series.Labels, 0, 16)
	)
	for _, ki := range perm {
		k := &keys[ki]
		cur, curIDs = cur[:0], curIDs[:0]
		for _, l := range k.labels {
			j := len(cur)
			var n, v uint32
			switch {
			case j < len(prev) && l.Name == prev[j].Name:
				n = prevIDs[2*j]
			case !series.ValidLabelName(l.Name):
				pk.DroppedLabels(1)
				continue
			default:
				n = pk.ID(l.Name)
			}
			if j < len(prev) && l.Value == prev[j].Value {
				v = prevIDs[2*j+1]
			} else {
				v = pk.ID(l.Value)
			}
			cur = append(cur, l)
			curIDs = append(curIDs, n, v)
			pk.Label(n, v)
		}
		prev, cur = cur, prev
		prevIDs, curIDs = curIDs, prevIDs
		if k.name != prevName || nameID == 0 {
			prevName, nameID = k.name, pk.ID(k.name)
		}
		// Strings are valid UTF-8 already (consumeString).
		if k.help != prevHi || (helpID == 0 && k.help != "") {
			prevHi, helpID = k.help, pk.ID(k.help)
		}
		pk.Sample(series.Sample{Value: k.value, TimestampMs: k.ms, Name: nameID, Help: helpID, Type: k.typ})
	}
	return pk.Packed()
}

// familyOrder returns the positions of keys in latest's order. Agents
// send their metrics in map order, so a reply must be sorted, and one
// sort of the whole reply spent most of its time comparing family names.
// Instead each distinct family name is looked up once per sample in a map
// of the reply's few hundred families, the names alone are sorted, the
// keys are distributed to their families (a counting sort), and only each
// family's keys are sorted among themselves.
func familyOrder(keys []key, sc *scratch) []int32 {
	ids := sc.famIDs
	names := sc.names[:0]
	fam := resize(sc.fam, len(keys))
	for i := range keys {
		k := &keys[i]
		k.placeInFamily()
		id, ok := ids[k.family]
		if !ok {
			id = int32(len(names))
			ids[k.family] = id
			names = append(names, k.family)
		}
		fam[i] = id
	}
	byName := resize(sc.byName, len(names))
	for i := range byName {
		byName[i] = int32(i)
	}
	slices.SortFunc(byName, func(a, b int32) int { return strings.Compare(names[a], names[b]) })
	rank := resize(sc.rank, len(names))
	for r, id := range byName {
		rank[id] = int32(r)
	}
	// start[r] is where family rank r begins in perm.
	start := resize(sc.start, len(names)+1)
	clear(start)
	for _, id := range fam {
		start[rank[id]+1]++
	}
	for r := 1; r < len(start); r++ {
		start[r] += start[r-1]
	}
	next := byName // no longer needed: the fill position of each family
	copy(next, start)
	perm := resize(sc.perm, len(keys))
	for i, id := range fam {
		r := rank[id]
		perm[next[r]] = int32(i)
		next[r]++
	}
	for r := range names {
		if seg := perm[start[r]:start[r+1]]; len(seg) > 1 {
			slices.SortFunc(seg, func(a, b int32) int { return compareInFamily(&keys[a], &keys[b]) })
		}
	}
	sc.names, sc.fam, sc.rank, sc.start, sc.byName, sc.perm = names, fam, rank, start, byName, perm
	return perm
}

// resize returns s with length n, reusing its memory when it can.
func resize(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}

// sharer stores the strings of a batch compactly. A string equal to its
// counterpart in the previous series (in sorted order) becomes that very
// string; any other is copied into a few large blocks, in output order.
// Neighbours mostly have the same name, help and label names and many
// equal values, so the batch holds each run of equal strings once, the
// reply's scattered small strings can be collected, the renderer reads
// the strings in memory order, and its comparisons of shared strings stop
// at the pointer check. It costs enrichment one pass over the strings
// (at most about 2 ms per 10k series in BenchmarkBatch) and pays back in
// the renderer and the heap. Measured once on the data of render's
// BenchmarkWriteText/typed/10x10k (ten 10k-series replies): the batches
// kept 13 MB in 41 objects instead of 32 MB in 740k objects, and WriteText
// took 97 ms instead of 146 ms, the difference being cache misses.
type sharer struct {
	prevName, prevHelp string
	prev               series.Labels
	block              *strings.Builder
	blockSize          int
	// clone makes copy copy long strings too, for inputs whose memory
	// the batch must not keep (DecodeBatch's strings alias the wire
	// bytes).
	clone bool
	// badName is set when a label name is not a valid Prometheus label
	// name. Each distinct run of names is checked once, when copied.
	badName bool
}

// Strings are copied into blocks of blockSize bytes; longer ones keep
// their own allocation.
const (
	blockSize    = 32 << 10
	maxBlockCopy = 1 << 10
)

func newSharer(upper int, clone bool) *sharer {
	return &sharer{blockSize: min(upper, blockSize), clone: clone}
}

// copy returns s in the current block. A Builder only ever appends, and
// it never reallocates here because a block is never grown past its first
// Grow, so strings taken from it stay valid.
func (sh *sharer) copy(s string) string {
	if len(s) == 0 {
		return s
	}
	if len(s) > maxBlockCopy {
		if sh.clone {
			return strings.Clone(s)
		}
		return s
	}
	if sh.block == nil || sh.block.Cap()-sh.block.Len() < len(s) {
		sh.block = new(strings.Builder)
		sh.block.Grow(max(sh.blockSize, len(s)))
		// Each block twice the last, up to blockSize: a reply whose
		// strings need little gets little.
		sh.blockSize = min(2*sh.blockSize, blockSize)
	}
	off := sh.block.Len()
	sh.block.WriteString(s)
	return sh.block.String()[off:]
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
			sh.badName = sh.badName || !series.ValidLabelName(l.Name)
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

// exportedName is the name an agent's label keeps when the proxy's
// identity label of the same name has another value: Prometheus'
// honor_labels: false convention. The names of the node labels are few and
// fixed per reply, so the ones decoding meets are interned once here.
func exportedName(name string) string {
	switch name {
	case "node_role":
		return "exported_node_role"
	case "pod_name":
		return "exported_pod_name"
	case "node_address":
		return "exported_node_address"
	}
	return "exported_" + name
}

// ReservedName reports whether name is one the proxy writes itself
// (fodc_agent_*, fodc_proxy_*, up and the schema consistency gauge): a
// series an agent sends under such a name is dropped, so that no agent can
// speak for the proxy or for another agent.
func ReservedName(name string) bool {
	return name == "up" || strings.HasPrefix(name, "fodc_agent_") || strings.HasPrefix(name, "fodc_proxy_") ||
		strings.HasPrefix(name, "banyandb_fodc_")
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

func has(ls series.Labels, name string) bool {
	for _, l := range ls {
		if l.Name == name {
			return true
		}
	}
	return false
}

// sortLabels sorts by name, then value. Label sets are small (a dozen
// pairs), where insertion sort beats the generic sort's setup cost.
func sortLabels(ls series.Labels) {
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && lessLabel(ls[j], ls[j-1]); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

func lessLabel(a, b series.Label) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Value < b.Value
}

// NodeAddress is the value of the node_address label: "ip:port", just the
// IP when the port is unknown, "" when the address is.
func NodeAddress(n series.Node) string {
	switch {
	case n.IP == "":
		return ""
	case n.Port > 0:
		return net.JoinHostPort(n.IP, strconv.Itoa(n.Port))
	}
	return n.IP
}

// nodeLabels returns the sorted labels the node contributes to samples
// that do not have them.
func nodeLabels(info NodeInfo) series.Labels {
	ls := make(series.Labels, 0, len(info.Labels)+3)
	add := func(name, value string) {
		if value != "" && !has(ls, name) {
			ls = append(ls, series.Label{Name: name, Value: validUTF8(value)})
		}
	}
	// The node's own identity first: a registered label "role" must not
	// shadow the registered role.
	add("node_role", info.Node.Role)
	add("pod_name", info.Node.PodName)
	add("node_address", NodeAddress(info.Node))
	// Sorted keys make the outcome independent of map order when two
	// registered keys collide after UTF-8 repair.
	names := make([]string, 0, len(info.Labels))
	for k := range info.Labels {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if k == "pod_name" || k == "container_name" || k == "" {
			continue
		}
		add("node_"+validUTF8(k), info.Labels[k])
	}
	sortLabels(ls)
	return ls
}

func toMillis(ts *timestamppb.Timestamp) int64 {
	return ts.GetSeconds()*1000 + int64(ts.GetNanos())/1e6
}

// validUTF8 returns s with each run of invalid UTF-8 replaced by U+FFFD.
// The check alone does not allocate.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
