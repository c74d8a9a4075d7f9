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
}

func compareKeys(a, b key) int {
	if c := strings.Compare(a.name, b.name); c != 0 {
		return c
	}
	if c := compareLabels(a.labels, b.labels); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ms, b.ms); c != 0 {
		return c
	}
	return cmp.Compare(a.idx, b.idx)
}

// latest builds one single-point series per metric.
func latest(keys []key, sh *sharer) []series.Series {
	slices.SortFunc(keys, compareKeys)
	out := make([]series.Series, len(keys))
	points := make([]series.Point, len(keys))
	for i, k := range keys {
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
		sh.blockSize = blockSize
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
	return a.name == b.name && compareLabels(a.labels, b.labels) == 0
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

// compareLabels orders label sets pair by pair (name, then value); a
// proper prefix sorts first.
func compareLabels(a, b series.Labels) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if c := strings.Compare(a[i].Name, b[i].Name); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
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
