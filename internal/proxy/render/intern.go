package render

import (
	"slices"
	"strings"

	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Label sets are compared through ranks. Ordering a family's samples
// from many agents compares label sets of different agents, whose strings
// live in different replies: each comparison walked several equal names
// and values byte by byte before reaching the pair that differs (mostly
// the node's identity). Every distinct string of an answer is therefore
// numbered once, by its rank among all of them: comparing two label sets
// compares small integers (each pack's ids read through the pack's table
// of ranks, see ranked), and equal sets are equal runs of ranks. Packs
// already hold each of their strings once, so this costs one map lookup
// per distinct string per pack, not one per label.

// rankStrings returns, per pack, the rank of each of its strings among
// the distinct strings of all packs, and whether each can be written in a
// label value without escapes (appendSample).
func rankStrings(packs []*series.Packed, wk *work) (ranks [][]uint32, plain [][]bool) {
	n := 0
	for _, p := range packs {
		n += len(p.Strings)
	}
	ids, strs := wk.ids, wk.strs[:0]
	defer func() { wk.strs = strs }()
	out := make([][]uint32, len(packs))
	plain = make([][]bool, len(packs))
	flat := make([]uint32, n)
	flatPlain := make([]bool, n)
	var plainOf []bool // by global id: checked once per distinct string
	for i, p := range packs {
		local := flat[:len(p.Strings):len(p.Strings)]
		flat = flat[len(p.Strings):]
		plain[i] = flatPlain[:len(p.Strings):len(p.Strings)]
		flatPlain = flatPlain[len(p.Strings):]
		for j, s := range p.Strings {
			id, ok := ids[s]
			if !ok {
				id = uint32(len(strs))
				ids[s] = id
				strs = append(strs, s)
				plainOf = append(plainOf, !strings.ContainsAny(s, "\\\n\""))
			}
			local[j] = id
			plain[i][j] = plainOf[id]
		}
		out[i] = local
	}
	order := make([]uint32, len(strs))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int { return strings.Compare(strs[a], strs[b]) })
	rank := make([]uint32, len(order))
	for r, id := range order {
		rank[id] = uint32(r)
	}
	for _, local := range out {
		for j, id := range local {
			local[j] = rank[id]
		}
	}
	return out, plain
}
