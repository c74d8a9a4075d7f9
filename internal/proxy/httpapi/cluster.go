package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
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
	Status             registry.Status        `json:"status"`
	RegisteredAt       time.Time              `json:"registered_at"`
	LastHeartbeat      time.Time              `json:"last_heartbeat"`
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
	agents := a.opts.Registry.List(f)
	// Upstream agents declare no addresses: take them, and the calls, from
	// what the agents' topology reports say.
	var topo topology.Merged
	calls := []callJSON{}
	if a.opts.Cluster != nil {
		ctx, cancel := a.withBudget(w, r)
		merged, err := a.opts.Cluster.Topology(ctx)
		cancel()
		if err != nil {
			a.logger.Debug("Topology for /cluster", "err", err)
		}
		topo = merged
		for _, c := range merged.Calls {
			calls = append(calls, callJSON{ID: c.GetId(), Source: c.GetSource(), Target: c.GetTarget()})
		}
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
			Status:             ag.Status,
			RegisteredAt:       ag.RegisteredAt.UTC(),
			LastHeartbeat:      ag.LastHeartbeat.UTC(),
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if ag.Primary.IP != "" {
			n.PrimaryAddress = &addressJSON{IP: ag.Primary.IP, Port: ag.Primary.Port}
			for name, addr := range ag.Secondary {
				n.SecondaryAddresses[name] = addressJSON{IP: addr.IP, Port: addr.Port}
			}
		} else if node, ok := topology.NodeForPod(topo, ag.PodName); ok {
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
	writeJSON(w, struct {
		Nodes     []nodeJSON `json:"nodes"`
		Calls     []callJSON `json:"calls"`
		UpdatedAt time.Time  `json:"updated_at"`
	}{nodes, calls, a.now().UTC()})
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
