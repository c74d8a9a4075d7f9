package render

import "slices"

// Output order inside a family: WriteText used to sort every family's
// samples as one slice, an O(n log n) string sort that was a quarter of a
// scrape's CPU. Decoding already puts each agent's reply in this order
// (decode.Limits.DecodeLatest), so a family's segment, still in input
// order, is a few sorted runs, one per agent: finding the runs costs n-1
// comparisons of neighbours (of ranks, see ranked), and merging k runs
// costs log2(k) comparisons per sample instead of log2(n). Input that is not sorted per batch (hand-built
// batches, the proxy's own series, untyped histograms) still comes out
// right: its runs are short, and a segment whose runs average fewer than
// minRunLength samples is sorted as a whole instead.
const minRunLength = 4

// merger orders family segments; it keeps its scratch space between
// segments, so one merger serves one goroutine.
type merger struct {
	ranked *ranked
	starts []int32 // run starts in the segment, then its length
	heads  []int32 // next sample of each run
	tree   []int32 // loser tree: tree[0] the winning run, tree[1:] losers
	out    []ref
	seg    []ref
}

// order puts seg in compareRefs order.
func (m *merger) order(seg []ref) {
	if len(seg) < 2 {
		return
	}
	m.starts = append(m.starts[:0], 0)
	for i := 1; i < len(seg); i++ {
		if compareRefs(m.ranked, &seg[i-1], &seg[i]) > 0 {
			m.starts = append(m.starts, int32(i))
		}
	}
	k := len(m.starts)
	switch {
	case k == 1:
		return
	case k*minRunLength > len(seg):
		slices.SortFunc(seg, func(a, b ref) int { return compareRefs(m.ranked, &a, &b) })
		return
	}
	m.starts = append(m.starts, int32(len(seg)))
	m.seg = seg
	m.heads = append(m.heads[:0], m.starts[:k]...)
	m.tree = slices.Grow(m.tree[:0], k)[:k]
	m.tree[0] = m.build(1, k)
	m.out = slices.Grow(m.out[:0], len(seg))
	for range len(seg) {
		w := m.tree[0]
		m.out = append(m.out, seg[m.heads[w]])
		m.heads[w]++
		// Replay w's path to the root against the losers kept there.
		for t := (int(w) + k) / 2; t >= 1; t /= 2 {
			if m.less(m.tree[t], w) {
				m.tree[t], w = w, m.tree[t]
			}
		}
		m.tree[0] = w
	}
	copy(seg, m.out)
	m.seg = nil
}

// build plays the games of the subtree rooted at node t of a tree whose
// leaves k..2k-1 are the runs, records each game's loser and returns the
// winner.
func (m *merger) build(t, k int) int32 {
	if t >= k {
		return int32(t - k)
	}
	a, b := m.build(2*t, k), m.build(2*t+1, k)
	if m.less(b, a) {
		a, b = b, a
	}
	m.tree[t] = b
	return a
}

// less reports whether run a's next sample comes before run b's; an
// exhausted run comes last. compareRefs never ties (input positions are unique).
func (m *merger) less(a, b int32) bool {
	ha, hb := m.heads[a], m.heads[b]
	switch {
	case ha == m.starts[a+1]:
		return false
	case hb == m.starts[b+1]:
		return true
	}
	return compareRefs(m.ranked, &m.seg[ha], &m.seg[hb]) < 0
}
