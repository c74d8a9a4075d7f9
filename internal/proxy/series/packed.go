package series

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Packed is a latest batch in the form the /metrics hot path carries it:
// each distinct string of the batch stored once, each sample a fixed
// record, each label set a run of string ids.
//
// A Batch of 10,000 series kept about 400 bytes per series in a dozen
// places (the Series, its label slice, its point, the strings), and
// rendering many agents' batches in family order visits them in an order
// no cache can follow: the renderer spent most of its time waiting for
// memory. A Packed sample is 40 bytes plus 8 per label, and its strings
// sit in a table small enough to stay in cache.
//
// The label sets of a Packed are clean: sorted by name, names unique and
// valid (ValidLabelName), values non-empty and valid UTF-8. A Packed is
// read-only once built.
type Packed struct {
	Node Node
	// Strings holds the batch's distinct strings: metric names, HELP
	// texts, label names and values. Strings[0] is "".
	Strings []string
	Samples []Sample
	// Labels holds each sample's label set as pairs of ids into Strings,
	// name then value: Labels[s.Labels : s.Labels+2*s.NumLabels].
	Labels []uint32
	// Dropped counts the series left out (Pack: no point), DroppedLabels
	// the label pairs removed to make the label sets clean (by Pack, or
	// by decoding: names the text format cannot carry).
	Dropped, DroppedLabels int

	ids map[string]uint32 // Pack's string table, kept for reuse
}

// packedPool holds Packeds given back with Recycle: a scrape packs about
// as many samples each time, 40 bytes and more per sample that would
// otherwise be allocated and collected on every scrape.
var packedPool sync.Pool

// Recycle gives p's memory back for the next Packed. Nothing may use p,
// or any string or slice taken from it, afterwards.
func (p *Packed) Recycle() {
	if p == nil {
		return
	}
	clear(p.Strings)
	clear(p.ids)
	*p = Packed{Strings: p.Strings[:0], Samples: p.Samples[:0], Labels: p.Labels[:0], ids: p.ids}
	packedPool.Put(p)
}

// Sample is one series of a Packed with its latest point.
type Sample struct {
	Value       float64
	TimestampMs int64
	Name, Help  uint32 // ids in Packed.Strings; Help 0 when there is none
	Labels      uint32 // where the label set starts in Packed.Labels
	NumLabels   uint32
	Type        fodcv1.MetricType
}

// CompareRanked orders two label sets given as pairs of string ids (name,
// value), each read through its own table of ranks (the rank of every id
// among all the strings compared), as CompareSkip orders the label sets
// they stand for: pair by pair, a proper prefix first, skipping pair askip
// of a and bskip of b (-1: none). Decoding compares the sets of one reply
// (ra and rb the same table), rendering those of different agents.
func CompareRanked(a, ra []uint32, askip int, b, rb []uint32, bskip int) int {
	askip, bskip = 2*askip, 2*bskip
	// Within one table equal ids are equal strings: most pairs compare
	// without reading a rank.
	same := len(ra) > 0 && len(rb) > 0 && &ra[0] == &rb[0]
	i, j := 0, 0
	for {
		if i == askip {
			i += 2
		}
		if j == bskip {
			j += 2
		}
		if i >= len(a) || j >= len(b) {
			return cmp.Compare(len(a)-i, len(b)-j)
		}
		if !same || a[i] != b[j] {
			if x, y := ra[a[i]], rb[b[j]]; x != y {
				return cmp.Compare(x, y)
			}
		}
		if !same || a[i+1] != b[j+1] {
			if x, y := ra[a[i+1]], rb[b[j+1]]; x != y {
				return cmp.Compare(x, y)
			}
		}
		i += 2
		j += 2
	}
}

// LabelIDs returns the label set of s as pairs of string ids.
func (p *Packed) LabelIDs(s *Sample) []uint32 {
	return p.Labels[s.Labels : s.Labels+2*s.NumLabels]
}

// Len is the number of samples.
func (p *Packed) Len() int { return len(p.Samples) }

// GetPacked returns an empty Packed for node, reusing the memory of a
// recycled one when there is one; the caller fills its exported fields.
func GetPacked(node Node) *Packed {
	p, _ := packedPool.Get().(*Packed)
	if p == nil {
		p = &Packed{ids: make(map[string]uint32)}
	}
	p.Node = node
	return p
}

// packer builds a Packed, string by string (Pack).
type packer struct {
	p   *Packed
	ids map[string]uint32
}

// newPacker starts a Packed for node with room for n samples and labels
// label pairs.
func newPacker(node Node, n, labels int) *packer {
	p := GetPacked(node)
	p.Strings = append(p.Strings, "")
	p.Samples = slices.Grow(p.Samples, n)
	p.Labels = slices.Grow(p.Labels, 2*labels)
	p.ids[""] = 0
	return &packer{p: p, ids: p.ids}
}

// id returns the id of s, adding it to the table when new.
func (b *packer) id(s string) uint32 {
	id, ok := b.ids[s]
	if !ok {
		id = uint32(len(b.p.Strings))
		b.ids[s] = id
		b.p.Strings = append(b.p.Strings, s)
	}
	return id
}

// sample adds a sample whose label pairs were appended to p.Labels since
// the previous sample.
func (b *packer) sample(s Sample) {
	end := uint32(len(b.p.Labels))
	start := uint32(0)
	if n := len(b.p.Samples); n > 0 {
		last := &b.p.Samples[n-1]
		start = last.Labels + 2*last.NumLabels
	}
	s.Labels, s.NumLabels = start, (end-start)/2
	b.p.Samples = append(b.p.Samples, s)
}

// Pack converts a batch into a Packed with its last point per series. It
// cleans every label set as the renderer needs it, counting what it
// removes: pairs with an invalid or reserved name or an empty value,
// repeated names (the first stays), invalid UTF-8 in values (repaired);
// series without points are left out. It copies no strings.
func Pack(b Batch) *Packed {
	labels := 0
	for i := range b.Series {
		labels += len(b.Series[i].Labels)
	}
	pk := newPacker(b.Node, len(b.Series), labels)
	for i := range b.Series {
		s := &b.Series[i]
		if len(s.Points) == 0 {
			pk.p.Dropped++
			continue
		}
		prev := ""
		for _, l := range s.Labels {
			if !b.CleanLabels && (!ValidLabelName(l.Name) || l.Value == "" || l.Name == prev) {
				pk.p.DroppedLabels++
				continue
			}
			prev = l.Name
			v := l.Value
			if !b.CleanLabels && !utf8.ValidString(v) {
				v = strings.ToValidUTF8(v, "\uFFFD")
			}
			pk.p.Labels = append(pk.p.Labels, pk.id(l.Name), pk.id(v))
		}
		last := s.Points[len(s.Points)-1]
		pk.sample(Sample{Value: last.Value, TimestampMs: last.TimestampMs, Name: pk.id(s.Name), Help: pk.id(s.Help), Type: s.Type})
	}
	return pk.p
}

// Batch expands p into the Batch it stands for (one point per series),
// sharing its strings.
func (p *Packed) Batch() Batch {
	out := Batch{Node: p.Node, CleanLabels: len(p.Samples) > 0, Series: make([]Series, len(p.Samples))}
	for i := range p.Samples {
		s := &p.Samples[i]
		ids := p.LabelIDs(s)
		ls := make(Labels, 0, len(ids)/2)
		for j := 0; j < len(ids); j += 2 {
			ls = append(ls, Label{Name: p.Strings[ids[j]], Value: p.Strings[ids[j+1]]})
		}
		out.Series[i] = Series{
			Name: p.Strings[s.Name], Help: p.Strings[s.Help], Type: s.Type, Labels: ls,
			Points: []Point{{TimestampMs: s.TimestampMs, Value: s.Value}},
		}
	}
	return out
}

// IDOf returns the id of s in p, or false when no string of p is s. It
// searches the table, for the few names a reader looks up once per batch.
func (p *Packed) IDOf(s string) (uint32, bool) {
	i := slices.Index(p.Strings, s)
	return uint32(i), i >= 0
}
