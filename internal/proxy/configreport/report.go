// Package configreport turns the configurations that agents report
// (fodcv1.ExtNodeConfigRequest) into the proxy's /cluster/config answer and
// a consistency report: for each role and tier, every parameter whose value
// differs between nodes, with the values and the nodes that hold each
// (DESIGN.md §1, §1.4). Everything here is a pure function of its inputs.
package configreport

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/roles"
)

// Unset is the value of a parameter on a node that does not set it.
const Unset = "(unset)"

// PodPlaceholder replaces a node's own pod name inside its values, so that
// per-pod paths such as /data/banyandb-0 and /data/banyandb-1 compare equal.
const PodPlaceholder = "{pod}"

// NotSupported is the error shown for an agent without the configuration
// extension (an upstream agent).
const NotSupported = "configuration not supported by this agent"

// Prefixes of the parameter names in a Difference that do not come from the
// node's flags.
const (
	// EnvPrefix is followed by an environment variable name.
	EnvPrefix = "env:"
	// RuntimePrefix is followed by a runtime_config key.
	RuntimePrefix = "runtime:"
	// ArgsParam names the node's positional arguments.
	ArgsParam = "args"
)

// NodeConfig is one agent's answer, or the reason there is none.
type NodeConfig struct {
	AgentID string
	PodName string
	Address string
	// Role is canonical, such as liaison or datanode-hot (roles.Role.String).
	Role string
	// Supported is false for an agent without the configuration extension.
	Supported bool
	// Err is why a supporting agent gave no configuration; empty on success.
	Err string
	// Config is the agent's report; nil unless Supported and Err is empty.
	Config *fodcv1.ExtNodeConfigRequest
	// CollectedAt is when the proxy received Config.
	CollectedAt time.Time
}

// ValueHolders is one value of a parameter and the nodes that hold it.
type ValueHolders struct {
	// Value is the node's value with its pod name replaced by
	// PodPlaceholder; repeated values are joined with ", "; Unset when the
	// node does not set the parameter.
	Value string
	// Nodes are pod names, sorted.
	Nodes []string
}

// Difference is a parameter whose value is not the same on every node of a
// group. Values are sorted by value.
type Difference struct {
	Param  string
	Values []ValueHolders
}

// GroupReport compares the nodes of one role and tier.
type GroupReport struct {
	// Role is canonical and includes the tier (datanode-hot).
	Role string
	// Tier is the data tier, empty for roles without one.
	Tier string
	// Nodes are the compared nodes' pod names, sorted.
	Nodes []string
	// Differences are sorted by parameter name; empty when the nodes agree.
	Differences []Difference
}

// Report is the consistency report of a fleet.
type Report struct {
	// Groups are sorted by role.
	Groups []GroupReport
	// Unsupported are the pods whose agents lack the extension, sorted.
	Unsupported []string
	// Failed maps a pod to why its configuration is missing or unusable.
	Failed map[string]string
	// Ignored are the ignore patterns that were applied.
	Ignored []string
}

// Build compares the configurations of nodes that share a role (the
// canonical role already carries the tier: datanode-hot and datanode-warm
// are compared separately). Compared are the startup parameters by flag
// name, the environment as "env:<NAME>", the runtime facts as
// "runtime:<key>" and the positional arguments as "args"; a parameter that
// some nodes of a group set and others do not is a difference, with Unset
// as the missing value. Before comparing, each node's own pod name inside
// its values is replaced by PodPlaceholder. Parameters that ig matches are
// skipped.
//
// Nodes are named by pod name (by agent id when the pod name is empty, and
// "pod (agent-id)" when two agents share a pod name). Unsupported agents are
// listed, not compared; so are, in Failed, agents that returned an error
// and agents whose report has no startup parameters source (every flag of
// theirs would show as a difference). The result is deterministic.
func Build(nodes []NodeConfig, ig Ignore) Report {
	r := Report{Unsupported: []string{}, Failed: map[string]string{}, Ignored: ig.Patterns(), Groups: []GroupReport{}}
	names := nodeNames(nodes)
	byRole := make(map[string][]int)
	for i, n := range nodes {
		switch {
		case !n.Supported:
			r.Unsupported = append(r.Unsupported, names[i])
		case n.Err != "":
			r.Failed[names[i]] = n.Err
		case n.Config == nil:
			r.Failed[names[i]] = "no configuration received"
		case n.Config.GetSource() == "":
			r.Failed[names[i]] = "startup parameters unavailable: " + strings.Join(n.Config.GetErrors(), "; ")
		default:
			role := canonicalRole(n.Role)
			byRole[role] = append(byRole[role], i)
		}
	}
	slices.Sort(r.Unsupported)
	for _, role := range slices.Sorted(maps.Keys(byRole)) {
		r.Groups = append(r.Groups, buildGroup(role, byRole[role], nodes, names, ig))
	}
	return r
}

// value is one node's value of one parameter.
type value struct {
	key     string // exact, for comparison: values joined by NUL
	display string
}

func buildGroup(role string, idx []int, nodes []NodeConfig, names []string, ig Ignore) GroupReport {
	g := GroupReport{Role: role, Differences: []Difference{}}
	if r, err := roles.Parse(role); err == nil {
		g.Tier = r.Tier
	}
	flat := make([]map[string]value, len(idx))
	params := make(map[string]bool)
	for j, i := range idx {
		g.Nodes = append(g.Nodes, names[i])
		flat[j] = flatten(nodes[i])
		for p := range flat[j] {
			params[p] = true
		}
	}
	sort.Strings(g.Nodes)
	for _, p := range slices.Sorted(maps.Keys(params)) {
		if ig.Match(p) {
			continue
		}
		holders := make(map[value][]string)
		for j, i := range idx {
			v, ok := flat[j][p]
			if !ok {
				v = value{key: "\x00unset", display: Unset}
			}
			holders[v] = append(holders[v], names[i])
		}
		if len(holders) < 2 {
			continue
		}
		d := Difference{Param: p}
		for v, ns := range holders {
			sort.Strings(ns)
			d.Values = append(d.Values, ValueHolders{Value: v.display, Nodes: ns})
		}
		slices.SortFunc(d.Values, func(a, b ValueHolders) int {
			return cmp.Or(strings.Compare(a.Value, b.Value), slices.Compare(a.Nodes, b.Nodes))
		})
		g.Differences = append(g.Differences, d)
	}
	return g
}

// flatten returns a node's comparable parameters with its pod name
// replaced by PodPlaceholder.
func flatten(n NodeConfig) map[string]value {
	c := n.Config
	out := make(map[string]value)
	put := func(name string, vs []string) {
		norm := make([]string, len(vs))
		for i, v := range vs {
			norm[i] = replacePod(v, n.PodName)
		}
		out[name] = value{key: strings.Join(norm, "\x00"), display: strings.Join(norm, ", ")}
	}
	for k, v := range c.GetStartupParams() {
		put(k, v.GetValues())
	}
	for k, v := range c.GetEnvironment() {
		put(EnvPrefix+k, []string{v})
	}
	for k, v := range c.GetRuntimeConfig() {
		put(RuntimePrefix+k, []string{v})
	}
	if args := c.GetArgs(); len(args) > 0 {
		put(ArgsParam, args)
	}
	return out
}

// replacePod replaces every occurrence of pod in v that is not part of a
// longer word (the bytes around it are not letters or digits) with
// PodPlaceholder: for pod "data-1", "/data/data-1/x" becomes
// "/data/{pod}/x" but "/data/data-10" stays.
func replacePod(v, pod string) string {
	if pod == "" || !strings.Contains(v, pod) {
		return v
	}
	var b strings.Builder
	done := 0 // v[:done] is written
	for from := 0; ; {
		i := strings.Index(v[from:], pod)
		if i < 0 {
			b.WriteString(v[done:])
			return b.String()
		}
		i += from
		end := i + len(pod)
		if (i == 0 || !isAlnum(v[i-1])) && (end == len(v) || !isAlnum(v[end])) {
			b.WriteString(v[done:i])
			b.WriteString(PodPlaceholder)
			done, from = end, end
			continue
		}
		from = i + 1 // a match may start inside a rejected one
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// canonicalRole returns the canonical spelling of role ("unspecified" when
// empty), or role itself when it does not parse.
func canonicalRole(role string) string {
	if strings.TrimSpace(role) == "" {
		return roles.Role{}.String()
	}
	if r, err := roles.Parse(role); err == nil {
		return r.String()
	}
	return role
}

// nodeNames names each node by pod name, else agent id, and adds the agent
// id to names that repeat.
func nodeNames(nodes []NodeConfig) []string {
	names := make([]string, len(nodes))
	count := make(map[string]int)
	for i, n := range nodes {
		names[i] = cmp.Or(n.PodName, n.AgentID, n.Address, fmt.Sprintf("node-%d", i))
		count[names[i]]++
	}
	for i, n := range nodes {
		if count[names[i]] > 1 && n.AgentID != "" && names[i] != n.AgentID {
			names[i] += " (" + n.AgentID + ")"
		}
	}
	return names
}

// DifferingParams returns, for each group of r (keyed by its role, such as
// datanode-hot), how many parameters differ. Every group is present, with 0
// when its nodes agree, so that a gauge can be reset.
func DifferingParams(r Report) map[string]int {
	out := make(map[string]int, len(r.Groups))
	for _, g := range r.Groups {
		out[g.Role] = len(g.Differences)
	}
	return out
}
