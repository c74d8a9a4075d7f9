package cluster

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/topology"
	"github.com/fodc-go/fodc/internal/roles"
)

// StatusNoAgent is the status of a topology node that no registry entry
// (online, unconnected or offline) belongs to: the node is part of the
// cluster but nothing observes it.
const StatusNoAgent = "no_agent"

// NodeWithoutAgent is a node that the agents' topology reports name but
// that has no registered agent in any status.
type NodeWithoutAgent struct {
	// Name is the node's metadata name (usually its gRPC address).
	Name string
	// PodName is the node's pod_name label; empty when it has none.
	PodName string
	// Address is the node's gRPC address.
	Address string
	// Role is the node's role, derived from its roles and its type label:
	// the data role when it has one (tiered by the label), else liaison,
	// else meta, else unspecified.
	Role roles.Role
	// Node is the topology node; it is shared and must not be changed.
	Node *databasev1.Node
}

// topoNode is a node of the last topology collection with the pod it is
// known to run in: its pod_name label, or the pod of the agent found to
// run on it (see ownPods).
type topoNode struct {
	node *databasev1.Node
	pod  string
}

// topoSnapshot is what the last topology collection said about the
// cluster's nodes.
type topoSnapshot struct {
	nodes []topoNode
	at    time.Time
}

// observers returns the registry entries that belong to a topology node:
// those of its pod (case-insensitively) and those whose primary address is
// the node's gRPC address. It never returns agents for a node that has
// neither a pod nor an address.
func observers(n topoNode, agents []registry.Agent) []registry.Agent {
	var out []registry.Agent
	addr := n.node.GetGrpcAddress()
	for _, a := range agents {
		if (n.pod != "" && strings.EqualFold(a.PodName, n.pod)) || (addr != "" && a.Primary.IP != "" && sameHostPort(a.Primary.String(), addr)) {
			out = append(out, a)
		}
	}
	return out
}

// sameHostPort compares two host:port addresses, IPs by value.
func sameHostPort(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return strings.EqualFold(a, b)
	}
	if pa != pb {
		return false
	}
	ia, errA := netip.ParseAddr(ha)
	ib, errB := netip.ParseAddr(hb)
	if errA == nil && errB == nil {
		return ia.Unmap() == ib.Unmap()
	}
	return strings.EqualFold(ha, hb)
}

// nodeStatus is the registry truth shown for a node observed by agents:
// the online entry first, else the one seen last.
func nodeStatus(agents []registry.Agent) topology.NodeStatus {
	best := agents[0]
	for _, a := range agents[1:] {
		bo, ao := best.Status == registry.StatusOnline, a.Status == registry.StatusOnline
		if (ao && !bo) || (ao == bo && a.LastSeen.After(best.LastSeen)) {
			best = a
		}
	}
	return topology.NodeStatus{Status: string(best.Status), LastHeartbeat: best.LastHeartbeat,
		LastSeen: best.LastSeen, DisconnectReason: best.DisconnectReason}
}

// ownPods finds, for agents that declared neither an address nor a pod the
// topology names (upstream agents of nodes without a pod_name label), the
// node they run on: the one node of their own report that has no pod_name
// label, has the agent's role among its roles and carries every label the
// agent registered with. It returns the pod to attribute to each such node
// by name; an agent with no or several candidates is left out.
func ownPods(m topology.Merged, answers []topology.AgentTopology, agents []registry.Agent) map[string]string {
	labelled := make(map[string]bool)
	for _, n := range m.Nodes {
		if pod := n.GetLabels()[topology.PodNameLabel]; pod != "" {
			labelled[strings.ToLower(pod)] = true
		}
	}
	byID := make(map[string]registry.Agent, len(agents))
	for _, a := range agents {
		byID[a.ID] = a
	}
	out := make(map[string]string)
	for _, ans := range answers {
		a, ok := byID[ans.AgentID]
		if !ok || a.Primary.IP != "" || a.PodName == "" || labelled[strings.ToLower(a.PodName)] {
			continue
		}
		var found []string
		for _, n := range ans.Reply.GetTopology().GetNodes() {
			name := n.GetMetadata().GetName()
			if name == "" || n.GetLabels()[topology.PodNameLabel] != "" || !hasRole(n, a.Role.Kind) || !hasLabels(n.GetLabels(), a.Labels) {
				continue
			}
			found = append(found, name)
		}
		if len(found) == 1 {
			if _, taken := out[found[0]]; !taken {
				out[found[0]] = a.PodName
			}
		}
	}
	return out
}

func hasRole(n *databasev1.Node, k roles.Kind) bool {
	if k == roles.KindUnspecified {
		return false
	}
	return slices.Contains(n.GetRoles(), databasev1.Role(k))
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// attach records the nodes of a topology collection and sets each node's
// status in m: the registry truth of the agents that belong to it, or
// StatusNoAgent.
func (c *Views) attach(m *topology.Merged, answers []topology.AgentTopology, agents []registry.Agent) {
	own := ownPods(*m, answers, agents)
	snap := topoSnapshot{nodes: make([]topoNode, 0, len(m.Nodes)), at: time.Now()}
	for _, n := range m.Nodes {
		name := n.GetMetadata().GetName()
		tn := topoNode{node: n, pod: cmp.Or(n.GetLabels()[topology.PodNameLabel], own[name])}
		snap.nodes = append(snap.nodes, tn)
		if obs := observers(tn, agents); len(obs) > 0 {
			m.Status[name] = nodeStatus(obs)
		} else {
			m.Status[name] = topology.NodeStatus{Status: StatusNoAgent}
		}
	}
	c.mu.Lock()
	c.topo = &snap
	c.mu.Unlock()
}

// NodesWithoutAgent returns the nodes of the last topology collection that
// no registry entry of any status belongs to now (by pod name, gRPC
// address, or the node an upstream agent was found to run on), sorted by
// name. It is nil before the first collection. A node that left the
// cluster disappears with the next collection; nodes reported only by
// agents that went offline are not reported any more either (their agents
// are, as offline).
func (c *Views) NodesWithoutAgent() []NodeWithoutAgent {
	c.mu.Lock()
	snap := c.topo
	c.mu.Unlock()
	if snap == nil {
		return nil
	}
	agents := c.opts.Registry.List(registry.Filter{})
	var out []NodeWithoutAgent
	for _, n := range snap.nodes {
		if len(observers(n, agents)) > 0 {
			continue
		}
		out = append(out, NodeWithoutAgent{
			Name:    n.node.GetMetadata().GetName(),
			PodName: n.node.GetLabels()[topology.PodNameLabel],
			Address: n.node.GetGrpcAddress(),
			Role:    nodeRole(n.node),
			Node:    n.node,
		})
	}
	return out
}

// nodeRole derives a registry-style role from a topology node.
func nodeRole(n *databasev1.Node) roles.Role {
	rs := n.GetRoles()
	switch {
	case slices.Contains(rs, databasev1.Role_ROLE_DATA):
		r, err := roles.FromRegistration("ROLE_DATA", n.GetLabels())
		if err != nil {
			return roles.Role{Kind: roles.KindData}
		}
		return r
	case slices.Contains(rs, databasev1.Role_ROLE_LIAISON):
		return roles.Role{Kind: roles.KindLiaison}
	case slices.Contains(rs, databasev1.Role_ROLE_META):
		return roles.Role{Kind: roles.KindMeta}
	}
	return roles.Role{}
}

// NodesWithoutAgentByRole counts NodesWithoutAgent by role
// (roles.Role.String).
func (c *Views) NodesWithoutAgentByRole() map[string]int {
	out := make(map[string]int)
	for _, n := range c.NodesWithoutAgent() {
		out[n.Role.String()]++
	}
	return out
}

// Run refreshes the topology every interval until ctx ends, so that
// NodesWithoutAgent (and with it /health and the nodes-without-agent gauge)
// stays current when nobody asks for /cluster. It waits for a refresh in
// flight before it returns; that refresh is bounded by TopologyTimeout and
// ends sooner when the agents' streams close. It is meant to be an actor of
// the proxy's run.Group.
func (c *Views) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, _ = c.Topology(context.Background())
		}
	}
}

// OwnNode returns the node of the last topology collection that runs pod:
// the one whose pod_name label names it or, for a node without that label,
// the one its upstream agent was found to run on. It reports false when
// there is none.
func (c *Views) OwnNode(pod string) (*databasev1.Node, bool) {
	c.mu.Lock()
	snap := c.topo
	c.mu.Unlock()
	if snap == nil || pod == "" {
		return nil, false
	}
	for _, n := range snap.nodes {
		if strings.EqualFold(n.pod, pod) {
			return n.node, true
		}
	}
	return nil, false
}
