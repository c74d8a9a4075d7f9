package httpapi

import (
	"net/http"
	"strings"
	"time"

	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/graph"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/topology"
)

// Bounds of /cluster/graph's window parameter: the span of the agents'
// flight recorders rates are computed over.
const (
	defaultGraphWindow = time.Minute
	minGraphWindow     = 10 * time.Second
	maxGraphWindow     = 30 * time.Minute
)

// graphNodeJSON is one node of /cluster/graph: /cluster's node plus what
// the console colours it by.
type graphNodeJSON struct {
	// ID names the node in edges: its pod name, else its agent id.
	ID string `json:"id"`
	nodeJSON
	// ConfigDrift is how many parameters the node does not share with
	// the majority of its role group in the last configuration report.
	ConfigDrift int `json:"config_drift"`
	// Crashes is how many crash records of the node's pod are cached.
	Crashes int `json:"crashes"`
	// Streams are the kinds of stream the node's agent has open: seven
	// for an upstream HEAD agent or ours, four for v0.10.1–v0.10.3,
	// three for v0.10.0, plus our extensions.
	Streams []string `json:"streams"`
}

// graphEdgeJSON is one edge of /cluster/graph.
type graphEdgeJSON struct {
	// Layer is "pipeline" (queue traffic) or "lifecycle" (a call from the
	// agents' topology, such as a migration between tiers).
	Layer          string   `json:"layer"`
	Source         string   `json:"source"`
	Target         string   `json:"target"`
	Operation      string   `json:"operation,omitempty"`
	Group          string   `json:"group,omitempty"`
	RecordedBy     string   `json:"recorded_by,omitempty"`
	Rate           *float64 `json:"rate,omitempty"`
	ErrorRatio     *float64 `json:"error_ratio,omitempty"`
	P99Seconds     *float64 `json:"p99_seconds,omitempty"`
	BytesPerSecond *float64 `json:"bytes_per_second,omitempty"`
}

// clusterGraph serves the nodes and the two edge layers of the cluster.
// Rates are computed over the `window` (a duration, default 1m) of every
// agent's flight recorder; one window request per agent, no second scrape.
func (a *API) clusterGraph(w http.ResponseWriter, r *http.Request) {
	q, err := query(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	window := defaultGraphWindow
	v, err := single(q, "window")
	if err != nil {
		respondErr(w, err)
		return
	}
	if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < minGraphWindow || d > maxGraphWindow {
			respondErr(w, badParam("window", "%q is not a duration from %s to %s", v, minGraphWindow, maxGraphWindow))
			return
		}
		window = d
	}
	ctx, cancel := a.withBudget(w, r)
	defer cancel()
	nodes, topo := a.clusterNodes(ctx, registry.Filter{})
	results := a.opts.Scraper.Scrape(ctx, registry.Filter{}, series.Window{Start: a.now().Add(-window)})
	batches := make([]series.Batch, 0, len(results))
	for i := range results {
		if results[i].Up() {
			batches = append(batches, results[i].Batch)
		}
	}

	var drift map[string]int
	if a.opts.Cluster != nil {
		// A young configuration collection is reused (--config-cache-ttl).
		if _, err := a.opts.Cluster.Config(ctx); err != nil {
			a.logger.Debug("Configuration for /cluster/graph", "err", err)
		}
		drift = a.opts.Cluster.DriftByPod()
	}
	var crashes map[string]int
	if a.opts.Diagnostics != nil {
		crashes = a.opts.Diagnostics.CountByPod()
	}
	out := struct {
		Nodes         []graphNodeJSON `json:"nodes"`
		Edges         []graphEdgeJSON `json:"edges"`
		WindowSeconds float64         `json:"window_seconds"`
		UpdatedAt     time.Time       `json:"updated_at"`
	}{Nodes: []graphNodeJSON{}, Edges: []graphEdgeJSON{}, WindowSeconds: window.Seconds(), UpdatedAt: a.now().UTC()}
	known := map[string]bool{}
	for _, n := range nodes {
		id := n.PodName
		if id == "" {
			id = n.AgentID
		}
		known[id] = true
		out.Nodes = append(out.Nodes, graphNodeJSON{ID: id, nodeJSON: n, ConfigDrift: drift[n.PodName], Crashes: crashes[strings.ToLower(n.PodName)],
			Streams: a.openStreams(n.AgentID)})
	}
	name := a.nodeNamer(topo, known)
	for _, e := range graph.Pipeline(batches, name) {
		ge := graphEdgeJSON{Layer: "pipeline", Source: e.Source, Target: e.Target, Operation: e.Operation, Group: e.Group,
			RecordedBy: e.RecordedBy, P99Seconds: e.P99Seconds, BytesPerSecond: e.BytesPerSecond}
		rate, ratio := e.Rate, e.ErrorRatio
		ge.Rate, ge.ErrorRatio = &rate, &ratio
		out.Edges = append(out.Edges, ge)
	}
	for _, c := range topo.Calls {
		out.Edges = append(out.Edges, graphEdgeJSON{Layer: "lifecycle", Source: name(c.GetSource()), Target: name(c.GetTarget())})
	}
	writeJSON(w, out)
}

// nodeNamer maps what metrics and topology calls name a node by (a pod
// name, a topology node name, an address) to the graph's node ids. A pod's
// topology node is found the way /cluster finds it (nodeOf): by its
// pod_name label, else the node its upstream agent runs on.
func (a *API) nodeNamer(topo topology.Merged, known map[string]bool) func(string) string {
	alias := map[string]string{}
	for pod := range known {
		n, ok := a.nodeOf(topo, pod)
		if !ok {
			continue
		}
		for _, name := range []string{n.GetMetadata().GetName(), n.GetGrpcAddress(), n.GetHttpAddress()} {
			if name != "" && !known[name] {
				alias[name] = pod
			}
		}
	}
	return func(s string) string {
		if p, ok := alias[s]; ok && !known[s] {
			return p
		}
		return s
	}
}

// openStreams lists the kinds of stream the agent has open.
func (a *API) openStreams(agentID string) []string {
	out := []string{}
	if a.opts.Streams == nil || agentID == "" {
		return out
	}
	for _, k := range []protocol.Kind{protocol.KindRegister, protocol.KindMetrics, protocol.KindTopology, protocol.KindLifecycle,
		protocol.KindSchemaRegistry, protocol.KindCrash, protocol.KindPressure, protocol.KindNodeConfig, protocol.KindProfiles} {
		if k == protocol.KindRegister || a.opts.Streams.Has(agentID, k) {
			out = append(out, k.String())
		}
	}
	return out
}
