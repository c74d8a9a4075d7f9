// Package topology merges the cluster topology replies of several agents
// into one view and renders it in the upstream /cluster/topology shape
// (PROTOCOL.md §3.3, §5.7).
//
// Unlike the upstream proxy, which lets the last reply to arrive win, the
// merge here does not depend on arrival order: answers are ordered by pod
// name and agent id, and for a node that several agents report, the copy of
// the agent that runs on that node is preferred.
//
// Everything here is a pure function of its inputs; no function keeps state
// or retains its arguments, so all of them are safe for concurrent use.
package topology

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// PodNameLabel is the node label in which an agent names its own pod.
const PodNameLabel = "pod_name"

// AgentTopology is one agent's answer to a topology command.
type AgentTopology struct {
	AgentID string
	// PodName is the pod the agent registered with.
	PodName string
	// Reply is the agent's reply; nil or empty replies contribute nothing.
	Reply *fodcv1.StreamClusterTopologyRequest
}

// NodeStatus is registry truth attached to the node of a registered pod.
type NodeStatus struct {
	// Status is the registry status ("online", "unconnected", "offline"),
	// or "no_agent" for a node no registered agent belongs to.
	Status string
	// LastHeartbeat is the time of the agent's last heartbeat; zero when
	// unknown.
	LastHeartbeat time.Time
	// LastSeen is when the agent was last heard from; zero when unknown.
	LastSeen time.Time
	// DisconnectReason says why an offline agent went away; empty
	// otherwise.
	DisconnectReason string
}

// Merged is the union of several agents' topologies.
type Merged struct {
	// Nodes are unique by metadata.name and sorted by it.
	Nodes []*databasev1.Node
	// Calls are unique by id and sorted by it.
	Calls []*fodcv1.Call
	// Status maps a node name to the registry status of the pod named by
	// that node's pod_name label; nodes without a registered pod are absent.
	Status map[string]NodeStatus
}

// candidate is one copy of a node during a merge.
type candidate struct {
	node  *databasev1.Node
	owner bool // reported by the agent that runs on the node
}

// Merge unions the nodes (by metadata.name) and calls (by id) of answers.
//
// The result does not depend on the order of answers: they are ordered by
// pod name, then agent id (a stable sort, so answers equal in both keep
// their order), and then:
//   - a node reported by several agents is taken from the agent whose own
//     node it is (the copy's pod_name label equals that agent's PodName),
//     else from the first agent; the labels of all copies are united, the
//     chosen copy's labels winning, then the other copies' in order;
//   - a call reported by several agents is taken from the first agent;
//   - nodes without a name and nil entries are skipped.
//
// statusByPod, when not nil, looks up the registry status of a pod; its
// answer is attached to every node whose pod_name label names that pod.
// When a pod has several registry entries it should prefer the online one
// (see PreferOnline). The result shares nothing with answers.
func Merge(answers []AgentTopology, statusByPod func(pod string) (NodeStatus, bool)) Merged {
	ordered := slices.Clone(answers)
	slices.SortStableFunc(ordered, func(a, b AgentTopology) int {
		return cmp.Or(cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.AgentID, b.AgentID))
	})

	copies := make(map[string][]candidate)
	calls := make(map[string]*fodcv1.Call)
	for _, a := range ordered {
		topo := a.Reply.GetTopology()
		for _, n := range topo.GetNodes() {
			name := n.GetMetadata().GetName()
			if name == "" {
				continue
			}
			owner := a.PodName != "" && n.GetLabels()[PodNameLabel] == a.PodName
			copies[name] = append(copies[name], candidate{node: n, owner: owner})
		}
		for _, c := range topo.GetCalls() {
			if c == nil {
				continue
			}
			if _, ok := calls[c.GetId()]; !ok {
				calls[c.GetId()] = c
			}
		}
	}

	m := Merged{
		Nodes:  make([]*databasev1.Node, 0, len(copies)),
		Calls:  make([]*fodcv1.Call, 0, len(calls)),
		Status: make(map[string]NodeStatus),
	}
	for name, cs := range copies {
		n := mergeNode(cs)
		m.Nodes = append(m.Nodes, n)
		if statusByPod == nil {
			continue
		}
		if pod := n.GetLabels()[PodNameLabel]; pod != "" {
			if st, ok := statusByPod(pod); ok {
				m.Status[name] = st
			}
		}
	}
	slices.SortFunc(m.Nodes, func(a, b *databasev1.Node) int {
		return cmp.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	for _, id := range slices.Sorted(maps.Keys(calls)) {
		m.Calls = append(m.Calls, proto.CloneOf(calls[id]))
	}
	return m
}

// mergeNode returns a fresh node from the copies of one node, in merge
// order (see Merge).
func mergeNode(cs []candidate) *databasev1.Node {
	chosen := 0
	for i, c := range cs {
		if c.owner {
			chosen = i
			break
		}
	}
	n := proto.CloneOf(cs[chosen].node)
	for i, c := range cs {
		if i == chosen {
			continue
		}
		for k, v := range c.node.GetLabels() {
			if _, ok := n.Labels[k]; ok {
				continue
			}
			if n.Labels == nil {
				n.Labels = make(map[string]string)
			}
			n.Labels[k] = v
		}
	}
	return n
}

// PreferOnline picks the status to show for a pod with several registry
// entries: an online entry before any other, and among equals the one with
// the latest heartbeat. It reports false when entries is empty.
func PreferOnline(entries []NodeStatus) (NodeStatus, bool) {
	if len(entries) == 0 {
		return NodeStatus{}, false
	}
	best := entries[0]
	for _, e := range entries[1:] {
		bo, eo := best.Status == "online", e.Status == "online"
		if (eo && !bo) || (eo == bo && e.LastHeartbeat.After(best.LastHeartbeat)) {
			best = e
		}
	}
	return best, true
}

// Addresses are the addresses of a node in the design's /cluster view.
type Addresses struct {
	// Primary is the node's gRPC address (ip:port); empty when unknown.
	Primary string
	// Secondary maps an address name ("http", "gossip", "schema",
	// "schema_gossip") to ip:port; nil when the node has none.
	Secondary map[string]string
}

// Names of the secondary addresses NodeAddresses fills.
const (
	AddressHTTP         = "http"
	AddressGossip       = "gossip"
	AddressSchema       = "schema"
	AddressSchemaGossip = "schema_gossip"
)

// NodeAddresses returns the addresses a topology node carries, for agents
// that declared none at registration: the primary is grpc_address, and the
// secondaries are http_address ("http"), property_repair_gossip_grpc_address
// ("gossip"), property_schema_grpc_address ("schema") and
// property_schema_gossip_grpc_address ("schema_gossip"), leaving out empty
// ones.
func NodeAddresses(n *databasev1.Node) Addresses {
	a := Addresses{Primary: n.GetGrpcAddress()}
	for _, s := range []struct{ name, addr string }{
		{AddressHTTP, n.GetHttpAddress()},
		{AddressGossip, n.GetPropertyRepairGossipGrpcAddress()},
		{AddressSchema, n.GetPropertySchemaGrpcAddress()},
		{AddressSchemaGossip, n.GetPropertySchemaGossipGrpcAddress()},
	} {
		if s.addr == "" {
			continue
		}
		if a.Secondary == nil {
			a.Secondary = make(map[string]string)
		}
		a.Secondary[s.name] = s.addr
	}
	return a
}

// NodeForPod returns the node whose pod_name label is exactly pod; when
// several are, the first by name. It reports false when none is or pod is
// empty. The node is shared with m.
func NodeForPod(m Merged, pod string) (*databasev1.Node, bool) {
	if pod == "" {
		return nil, false
	}
	for _, n := range m.Nodes {
		if n.GetLabels()[PodNameLabel] == pod {
			return n, true
		}
	}
	return nil, false
}
