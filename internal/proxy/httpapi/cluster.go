package httpapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/cluster"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/lifecycle"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/topology"
	"github.com/fodc-go/fodc/internal/roles"
)

// addressJSON is an address in the design's shape.
type addressJSON struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
}

type nodeJSON struct {
	NodeID             string                 `json:"node_id"`
	AgentID            string                 `json:"agent_id"`
	PodName            string                 `json:"pod_name"`
	ContainerNames     []string               `json:"container_names"`
	NodeRole           string                 `json:"node_role"`
	RoleName           string                 `json:"role_name"`
	Tier               string                 `json:"tier,omitempty"`
	PrimaryAddress     *addressJSON           `json:"primary_address"`
	SecondaryAddresses map[string]addressJSON `json:"secondary_addresses"`
	Labels             map[string]string      `json:"labels"`
	// Status is the registry status, or cluster.StatusNoAgent for a node
	// the topology names that has no agent.
	Status        string     `json:"status"`
	RegisteredAt  *time.Time `json:"registered_at,omitempty"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	// LastSeen is when the agent was last heard from (any status).
	LastSeen *time.Time `json:"last_seen,omitempty"`
	// DisconnectedAt and DisconnectReason say when and why an offline
	// agent went away.
	DisconnectedAt   *time.Time `json:"disconnected_at,omitempty"`
	DisconnectReason string     `json:"disconnect_reason,omitempty"`
	// LastRejection is the agent's latest metrics reply, when the proxy
	// refused it for being over a limit.
	LastRejection *rejectionJSON `json:"last_rejection,omitempty"`
}

// rejectionJSON is a refused reply: which limit, the error, and when.
type rejectionJSON struct {
	Reason string    `json:"reason"`
	Error  string    `json:"error"`
	At     time.Time `json:"at"`
}

// utcPtr returns t in UTC, or nil when t is zero.
func utcPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

type callJSON struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Target string `json:"target"`
}

func (a *API) cluster(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	ctx, cancel := a.withBudget(w, r)
	nodes, topo := a.clusterNodes(ctx, f)
	cancel()
	calls := []callJSON{}
	for _, c := range topo.Calls {
		calls = append(calls, callJSON{ID: c.GetId(), Source: c.GetSource(), Target: c.GetTarget()})
	}
	writeJSON(w, struct {
		Nodes     []nodeJSON `json:"nodes"`
		Calls     []callJSON `json:"calls"`
		UpdatedAt time.Time  `json:"updated_at"`
	}{nodes, calls, a.now().UTC()})
}

// clusterNodes lists the nodes f selects as /cluster shows them: every
// registry entry, with addresses from the agents' topology reports for
// agents that declare none, and the topology's nodes without an agent.
func (a *API) clusterNodes(ctx context.Context, f registry.Filter) ([]nodeJSON, topology.Merged) {
	agents := a.opts.Registry.List(f)
	// Upstream agents declare no addresses: take them, and the calls, from
	// what the agents' topology reports say.
	var topo topology.Merged
	if a.opts.Cluster != nil {
		merged, err := a.opts.Cluster.Topology(ctx)
		if err != nil {
			a.logger.Debug("Topology for /cluster", "err", err)
		}
		topo = merged
	}
	nodes := make([]nodeJSON, 0, len(agents))
	for _, ag := range agents {
		n := nodeJSON{
			NodeID:             ag.ID,
			AgentID:            ag.ID,
			PodName:            ag.PodName,
			ContainerNames:     nonNil(ag.ContainerNames),
			NodeRole:           ag.Role.String(),
			RoleName:           ag.Role.WireName(),
			Tier:               ag.Role.Tier,
			SecondaryAddresses: make(map[string]addressJSON, len(ag.Secondary)),
			Labels:             ag.Labels,
			Status:             string(ag.Status),
			RegisteredAt:       utcPtr(ag.RegisteredAt),
			LastHeartbeat:      utcPtr(ag.LastHeartbeat),
			LastSeen:           utcPtr(ag.LastSeen),
			DisconnectedAt:     utcPtr(ag.DisconnectedAt),
			DisconnectReason:   ag.DisconnectReason,
		}
		if rej, ok := a.opts.Scraper.LastRejection(ag.ID); ok {
			n.LastRejection = &rejectionJSON{Reason: rej.Reason, Error: rej.Detail, At: rej.At.UTC()}
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if ag.Primary.IP != "" {
			n.PrimaryAddress = &addressJSON{IP: ag.Primary.IP, Port: ag.Primary.Port}
			for name, addr := range ag.Secondary {
				n.SecondaryAddresses[name] = addressJSON{IP: addr.IP, Port: addr.Port}
			}
		} else if node, ok := a.nodeOf(topo, ag.PodName); ok {
			addrs := topology.NodeAddresses(node)
			if p, ok := splitAddress(addrs.Primary); ok {
				n.PrimaryAddress = &p
			}
			for name, v := range addrs.Secondary {
				if p, ok := splitAddress(v); ok {
					n.SecondaryAddresses[name] = p
				}
			}
		}
		nodes = append(nodes, n)
	}
	if a.opts.Cluster != nil && f.AgentID == "" {
		for _, nw := range a.opts.Cluster.NodesWithoutAgent() {
			if selectsNode(f, nw) {
				nodes = append(nodes, noAgentJSON(nw))
			}
		}
	}
	return nodes, topo
}

// nodeOf finds the topology node of pod: by its pod_name label, else the
// node its agent was found to run on.
func (a *API) nodeOf(topo topology.Merged, pod string) (*databasev1.Node, bool) {
	if node, ok := topology.NodeForPod(topo, pod); ok {
		return node, true
	}
	if a.opts.Cluster == nil {
		return nil, false
	}
	return a.opts.Cluster.OwnNode(pod)
}

// selectsNode applies an agent selection to a node without an agent: role,
// pod name and address as for agents.
func selectsNode(f registry.Filter, n cluster.NodeWithoutAgent) bool {
	if f.HasRole && !n.Role.Match(f.Role) {
		return false
	}
	if f.PodName != "" && !strings.EqualFold(f.PodName, n.PodName) {
		return false
	}
	if f.Address != "" {
		host, port, err := net.SplitHostPort(n.Address)
		if err != nil {
			return false
		}
		wantHost, wantPort, err := net.SplitHostPort(f.Address)
		if err != nil { // an IP alone matches any port
			wantHost, wantPort = f.Address, port
		}
		if !sameHost(host, wantHost) || port != wantPort {
			return false
		}
	}
	return true
}

// sameHost compares hosts, IPs by value.
func sameHost(a, b string) bool {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return pa.Unmap() == pb.Unmap()
	}
	return strings.EqualFold(a, b)
}

// noAgentJSON lists a node without an agent: named by its topology name,
// with the addresses, labels and role the topology gives, and no agent.
func noAgentJSON(n cluster.NodeWithoutAgent) nodeJSON {
	out := nodeJSON{
		NodeID:             n.Name,
		PodName:            n.PodName,
		ContainerNames:     []string{},
		NodeRole:           n.Role.String(),
		RoleName:           n.Role.WireName(),
		Tier:               n.Role.Tier,
		SecondaryAddresses: map[string]addressJSON{},
		Labels:             map[string]string{},
		Status:             cluster.StatusNoAgent,
	}
	for k, v := range n.Node.GetLabels() {
		out.Labels[k] = v
	}
	addrs := topology.NodeAddresses(n.Node)
	if p, ok := splitAddress(addrs.Primary); ok {
		out.PrimaryAddress = &p
	}
	for name, v := range addrs.Secondary {
		if p, ok := splitAddress(v); ok {
			out.SecondaryAddresses[name] = p
		}
	}
	return out
}

// splitAddress turns "ip:port" into the design's address shape.
func splitAddress(hp string) (addressJSON, bool) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return addressJSON{}, false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return addressJSON{}, false
	}
	return addressJSON{IP: host, Port: p}, true
}

func (a *API) clusterTopology(w http.ResponseWriter, r *http.Request) {
	role, hasRole, err := roleOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "cluster topology collector not available")
		return
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	merged, err := a.opts.Cluster.Topology(ctx)
	if err != nil {
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("topology collection did not finish within the request budget: %v", err))
		return
	}
	if hasRole {
		merged = topologyOfRole(merged, role)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := topology.WriteJSON(w, merged); err != nil {
		a.logger.Debug("Writing /cluster/topology answer", "err", err)
	}
}

func (a *API) clusterLifecycle(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		respondErr(w, err)
		return
	}
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "cluster lifecycle collector not available")
		return
	}
	// Agents may take their full lifecycle timeout: lift the write deadline.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	res, err := a.opts.Cluster.Lifecycle(r.Context())
	if err != nil {
		respondErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := lifecycle.WriteJSON(w, res); err != nil {
		a.logger.Debug("Writing /cluster/lifecycle answer", "err", err)
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// config runs (or reuses) a configuration collection within the budget.
func (a *API) config(w http.ResponseWriter, r *http.Request) (cluster.ConfigSnapshot, bool) {
	if a.opts.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "configuration collector not available")
		return cluster.ConfigSnapshot{}, false
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	snap, err := a.opts.Cluster.Config(ctx)
	if err != nil {
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("configuration collection did not finish within the request budget: %v", err))
		return snap, false
	}
	return snap, true
}

func (a *API) clusterConfig(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	snap, ok := a.config(w, r)
	if !ok {
		return
	}
	nodes := snap.Nodes
	if isFiltered(f) {
		selected := map[string]bool{}
		for _, ag := range a.opts.Registry.List(f) {
			selected[ag.ID] = true
		}
		nodes = make([]configreport.NodeConfig, 0, len(snap.Nodes))
		for _, n := range snap.Nodes {
			if selected[n.AgentID] {
				nodes = append(nodes, n)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if err := configreport.WriteConfigJSON(w, nodes, a.now().Sub(snap.CollectedAt)); err != nil {
		a.logger.Debug("Writing /cluster/config answer", "err", err)
	}
}

func (a *API) clusterConfigConsistency(w http.ResponseWriter, r *http.Request) {
	role, hasRole, err := roleOf(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	snap, ok := a.config(w, r)
	if !ok {
		return
	}
	report := snap.Report
	if hasRole {
		report = reportOfRole(report, role)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := configreport.WriteReportJSON(w, report, a.now().Sub(snap.CollectedAt)); err != nil {
		a.logger.Debug("Writing /cluster/config/consistency answer", "err", err)
	}
}

// roleOf reads the query and its role parameter, the only one of the
// endpoints that select by role alone.
func roleOf(r *http.Request) (roles.Role, bool, error) {
	q, err := query(r)
	if err != nil {
		return roles.Role{}, false, err
	}
	return parseRole(q)
}

// topologyOfRole keeps the nodes that have a role matching role (the data
// tier is the node's "type" label) and the calls from or to them.
func topologyOfRole(m topology.Merged, role roles.Role) topology.Merged {
	out := topology.Merged{Status: m.Status, Nodes: []*databasev1.Node{}, Calls: []*fodcv1.Call{}}
	kept := map[string]bool{}
	for _, n := range m.Nodes {
		for _, wire := range n.GetRoles() {
			r, err := roles.FromRegistration(wire.String(), n.GetLabels())
			if err == nil && r.Match(role) {
				out.Nodes = append(out.Nodes, n)
				kept[n.GetMetadata().GetName()] = true
				break
			}
		}
	}
	for _, c := range m.Calls {
		if kept[c.GetSource()] || kept[c.GetTarget()] {
			out.Calls = append(out.Calls, c)
		}
	}
	return out
}

// reportOfRole keeps the groups of a consistency report whose role matches
// role; the pods without a usable configuration stay listed.
func reportOfRole(rep configreport.Report, role roles.Role) configreport.Report {
	groups := make([]configreport.GroupReport, 0, len(rep.Groups))
	for _, g := range rep.Groups {
		if r, err := roles.Parse(g.Role); err == nil && r.Match(role) {
			groups = append(groups, g)
		}
	}
	rep.Groups = groups
	return rep
}
