// Package decode turns one agent's StreamMetrics reply, still in its wire
// encoding, into the proxy's series model: labels sorted and cleaned, the
// node's identity added where the sample lacks it (the enrichment), a
// timestamp on every point and, for window replies, the samples of each
// series grouped into one ascending run of points.
//
// DecodeLatest is called once per agent reply on the scrape hot path: it
// reads the reply's wire bytes straight into a series.Packed, never
// building the protobuf message, in working memory reused from reply to
// reply (reply.go tells how). Its tests hold it, and Batch, to a plain
// reference built on the decoded message (oracle_test.go,
// reference_test.go).
package decode

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

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

// blocks copies strings out of a reply's memory into a few large blocks,
// in the order they are asked for: a decoded batch keeps a handful of
// objects instead of a string per label, its strings can outlive the
// reply, and a reader that follows the batch's order reads them in memory
// order.
type blocks struct {
	block     *strings.Builder
	blockSize int
	// clone copies long strings too (into their own allocation), for
	// inputs whose memory the batch must not keep.
	clone bool
}

// Strings are copied into blocks of up to blockSize bytes; longer ones
// keep their own allocation.
const (
	blockSize    = 32 << 10
	maxBlockCopy = 1 << 10
)

// newBlocks sizes the first block after upper, the most the strings may
// need.
func newBlocks(upper int, clone bool) blocks {
	return blocks{blockSize: min(upper, blockSize), clone: clone}
}

// copy returns s in the current block. A Builder only ever appends, and
// it never reallocates here because a block is never grown past its first
// Grow, so strings taken from it stay valid.
func (bl *blocks) copy(s string) string {
	if len(s) == 0 {
		return s
	}
	if len(s) > maxBlockCopy {
		if bl.clone {
			return strings.Clone(s)
		}
		return s
	}
	if bl.block == nil || bl.block.Cap()-bl.block.Len() < len(s) {
		bl.block = new(strings.Builder)
		bl.block.Grow(max(bl.blockSize, len(s)))
		// Each block twice the last, up to blockSize: a reply whose
		// strings need little gets little.
		bl.blockSize = min(2*bl.blockSize, blockSize)
	}
	off := bl.block.Len()
	bl.block.WriteString(s)
	return bl.block.String()[off:]
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

// validUTF8 returns s with each run of invalid UTF-8 replaced by U+FFFD.
// The check alone does not allocate.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
