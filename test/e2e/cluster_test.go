package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
)

func replay(t *testing.T, p *proxy.Proxy, name string) (*agentsim.Agent, agentsim.Config) {
	t.Helper()
	rec, err := fixture.Load(name)
	require.NoError(t, err)
	cfg, err := agentsim.FromRecording(rec)
	require.NoError(t, err)
	return connect(t, p, cfg), cfg
}

type topoJSON struct {
	Nodes []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		GRPCAddress string            `json:"grpc_address"`
		CreatedAt   map[string]int64  `json:"created_at"`
		Labels      map[string]string `json:"labels"`
		Status      string            `json:"status"`
		Roles       []string          `json:"roles"`
	} `json:"nodes"`
	Calls []struct {
		ID, Source, Target string
	} `json:"calls"`
}

// The recorded upstream data node's topology comes out of
// /cluster/topology, and /cluster fills the node's addresses from it.
func TestTopologyAndClusterFromRecording(t *testing.T) {
	p, _ := startProxy(t, nil)
	replay(t, p, "head-agent-data-node")
	base := "http://" + p.HTTPAddr()

	r := get(t, base+"/cluster/topology")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var topo topoJSON
	require.NoError(t, json.Unmarshal([]byte(r.body), &topo))
	require.Len(t, topo.Nodes, 1)
	n := topo.Nodes[0]
	require.Equal(t, "127.0.0.1:27912", n.Metadata.Name)
	require.Equal(t, []string{"ROLE_META", "ROLE_DATA", "ROLE_LIAISON"}, n.Roles)
	require.Equal(t, "banyand-data-0", n.Labels["pod_name"])
	require.Equal(t, "online", n.Status)
	require.Positive(t, n.CreatedAt["seconds"])
	require.NotNil(t, topo.Calls)

	r = get(t, base+"/cluster")
	require.Equal(t, http.StatusOK, r.code)
	var cl struct {
		Nodes []struct {
			PodName        string `json:"pod_name"`
			PrimaryAddress struct {
				IP   string `json:"ip"`
				Port int    `json:"port"`
			} `json:"primary_address"`
			SecondaryAddresses map[string]struct {
				IP   string `json:"ip"`
				Port int    `json:"port"`
			} `json:"secondary_addresses"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl))
	require.Len(t, cl.Nodes, 1)
	require.Equal(t, "127.0.0.1", cl.Nodes[0].PrimaryAddress.IP)
	require.Equal(t, 27912, cl.Nodes[0].PrimaryAddress.Port)
	require.Equal(t, 27913, cl.Nodes[0].SecondaryAddresses["http"].Port)
	require.Equal(t, 27916, cl.Nodes[0].SecondaryAddresses["schema"].Port)
}

type lifecycleJSON struct {
	Groups []struct {
		Name              string   `json:"name"`
		Errors            []string `json:"errors"`
		SchemaConsistency *struct {
			Status string `json:"status"`
			Issues []struct {
				Kind, Name, Node, Type string
			} `json:"issues"`
		} `json:"schema_consistency"`
	} `json:"groups"`
	LifecycleStatuses []struct {
		PodName string `json:"pod_name"`
		Reports []struct {
			Filename   string `json:"filename"`
			ReportJSON string `json:"report_json"`
		} `json:"reports"`
	} `json:"lifecycle_statuses"`
	AgentSummary struct {
		Total, Requested, Responded int
		NotResponded                int `json:"not_responded"`
	} `json:"agent_summary"`
	Error string `json:"error"`
}

func getLifecycle(t *testing.T, base string) lifecycleJSON {
	t.Helper()
	r := get(t, base+"/cluster/lifecycle")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var lc lifecycleJSON
	require.NoError(t, json.Unmarshal([]byte(r.body), &lc), r.body)
	return lc
}

func TestLifecycleFromRecordings(t *testing.T) {
	p, _ := startProxy(t, nil)
	base := "http://" + p.HTTPAddr()
	require.Equal(t, "FODC unavailable: no agents registered", getLifecycle(t, base).Error)

	replay(t, p, "v0.10.3-agent-data-node")
	replay(t, p, "head-agent-liaison-fake")
	lc := getLifecycle(t, base)
	require.Empty(t, lc.Error)
	require.Equal(t, 2, lc.AgentSummary.Total)
	require.Equal(t, 2, lc.AgentSummary.Requested)
	require.Equal(t, 2, lc.AgentSummary.Responded)
	require.Len(t, lc.LifecycleStatuses, 1, "only the data node has reports")
	require.Equal(t, "banyand-data-0", lc.LifecycleStatuses[0].PodName)
	require.Equal(t, "20260101_000000.json", lc.LifecycleStatuses[0].Reports[0].Filename)
	require.Contains(t, lc.LifecycleStatuses[0].Reports[0].ReportJSON, `"report_version": "2.1"`)
}

// fingerprints is a lifecycle reply of a node that caches one measure.
func fingerprints(node string, cache, runtime uint64) func() *fodcv1.StreamLifecycleRequest {
	return func() *fodcv1.StreamLifecycleRequest {
		return &fodcv1.StreamLifecycleRequest{LifecycleData: &fodcv1.LifecycleData{Groups: []*fodcv1.GroupLifecycleInfo{{
			Name: "sw_metric", Catalog: "CATALOG_MEASURE",
			ResourceOpts: &commonv1.ResourceOpts{ShardNum: 2},
			SchemaConsistency: &fodcv1.SchemaConsistency{Objects: []*fodcv1.ObjectConsistency{{
				Kind: "measure", Name: "service_cpm",
				NodeFingerprints: []*fodcv1.NodeFingerprint{{Node: node, CacheFingerprint: cache, RuntimeFingerprint: runtime}},
			}}},
		}}}}
	}
}

func liaisonNode(pod string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_LIAISON", PodName: pod}
}

// Several liaisons, the first failing: the registry truth comes from the
// next one; a stale cache on a data node is reported after two rounds,
// and the verdict is exported as a gauge.
func TestSchemaConsistencyWithFailingLiaison(t *testing.T) {
	p, _ := startProxy(t, nil)
	base := "http://" + p.HTTPAddr()
	broken := connect(t, p, agentsim.Config{Register: liaisonNode("liaison-0"),
		SchemaRegistry: func() []*fodcv1.StreamSchemaRegistryRequest {
			return []*fodcv1.StreamSchemaRegistryRequest{{Group: &fodcv1.SchemaRegistryGroup{Error: "list groups: unavailable"}}}
		}})
	good := connect(t, p, agentsim.Config{Register: liaisonNode("liaison-1"),
		SchemaRegistry: func() []*fodcv1.StreamSchemaRegistryRequest {
			return []*fodcv1.StreamSchemaRegistryRequest{{Group: &fodcv1.SchemaRegistryGroup{Group: "sw_metric",
				Objects: []*fodcv1.SchemaObjectFingerprint{{Kind: "measure", Name: "service_cpm", Fingerprint: 42}}}}}
		}})
	connect(t, p, agentsim.Config{Register: dataNode("data-0", "hot"), Lifecycle: fingerprints("data-0", 41, 41)})

	first := getLifecycle(t, base)
	require.Len(t, first.Groups, 1)
	require.Equal(t, "CONSISTENCY_STATUS_UNKNOWN", first.Groups[0].SchemaConsistency.Status, "an issue seen once is suppressed")
	second := getLifecycle(t, base)
	require.Equal(t, "CONSISTENCY_STATUS_INCONSISTENT", second.Groups[0].SchemaConsistency.Status)
	require.Len(t, second.Groups[0].SchemaConsistency.Issues, 1)
	is := second.Groups[0].SchemaConsistency.Issues[0]
	require.Equal(t, "SCHEMA_ISSUE_TYPE_CACHE_STALE", is.Type)
	require.Equal(t, "data-0", is.Node)
	require.Equal(t, 2, broken.Commands(protocol.KindSchemaRegistry))
	require.Equal(t, 2, good.Commands(protocol.KindSchemaRegistry))

	r := get(t, base+"/metrics")
	require.Contains(t, r.body, "\nbanyandb_fodc_schema_consistency_status{group=\"sw_metric\"} 2\n")
}

// An agent whose lifecycle collection fails never answers: the call
// returns the others, and the next call does not wait the full timeout for
// it again nor pile up commands on it.
func TestLifecycleAgentThatNeverAnswers(t *testing.T) {
	slow(t)
	p, _ := startProxy(t, func(c *proxy.Config) { c.LifecycleTimeout = 2 * time.Second })
	base := "http://" + p.HTTPAddr()
	silent := connect(t, p, agentsim.Config{Register: dataNode("data-silent", "hot"),
		Lifecycle: func() *fodcv1.StreamLifecycleRequest { return nil }})
	connect(t, p, agentsim.Config{Register: dataNode("data-ok", "hot"), Lifecycle: fingerprints("data-ok", 1, 1)})

	lc := getLifecycle(t, base)
	require.Equal(t, 2, lc.AgentSummary.Requested)
	require.Equal(t, 1, lc.AgentSummary.Responded)
	require.Equal(t, 1, lc.AgentSummary.NotResponded)

	// Concurrent callers share one collection.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			lc := getLifecycle(t, base)
			require.Equal(t, 1, lc.AgentSummary.Responded)
		})
	}
	wg.Wait()
	require.LessOrEqual(t, silent.Commands(protocol.KindLifecycle), 4, "one command per collection at most")
}

// Topology is merged across agents by node name and call id.
func TestTopologyMergedAcrossAgents(t *testing.T) {
	p, _ := startProxy(t, nil)
	node := func(name, pod string, role databasev1.Role) *databasev1.Node {
		return &databasev1.Node{Metadata: &commonv1.Metadata{Name: name}, GrpcAddress: name, Roles: []databasev1.Role{role},
			Labels: map[string]string{"pod_name": pod}}
	}
	view := func(self *databasev1.Node, others ...*databasev1.Node) func() *fodcv1.StreamClusterTopologyRequest {
		return func() *fodcv1.StreamClusterTopologyRequest {
			tp := &fodcv1.Topology{Nodes: append([]*databasev1.Node{self}, others...)}
			for _, o := range others {
				tp.Calls = append(tp.Calls, &fodcv1.Call{Id: self.GetMetadata().GetName() + "-" + o.GetMetadata().GetName(),
					Source: self.GetMetadata().GetName(), Target: o.GetMetadata().GetName()})
			}
			return &fodcv1.StreamClusterTopologyRequest{Topology: tp}
		}
	}
	l := node("10.0.0.1:17912", "liaison-0", databasev1.Role_ROLE_LIAISON)
	d0 := node("10.0.0.2:17912", "data-0", databasev1.Role_ROLE_DATA)
	d1 := node("10.0.0.3:17912", "data-1", databasev1.Role_ROLE_DATA)
	connect(t, p, agentsim.Config{Register: liaisonNode("liaison-0"), Topology: view(l, d0, d1)})
	connect(t, p, agentsim.Config{Register: dataNode("data-0", "hot"), Topology: view(d0)})
	connect(t, p, agentsim.Config{Register: dataNode("data-1", "hot"), Topology: view(d1)})

	var topo topoJSON
	r := get(t, "http://"+p.HTTPAddr()+"/cluster/topology")
	require.NoError(t, json.Unmarshal([]byte(r.body), &topo))
	require.Len(t, topo.Nodes, 3)
	for i, want := range []string{"10.0.0.1:17912", "10.0.0.2:17912", "10.0.0.3:17912"} {
		require.Equal(t, want, topo.Nodes[i].Metadata.Name)
		require.Equal(t, "online", topo.Nodes[i].Status)
	}
	require.Len(t, topo.Calls, 2)
	require.Equal(t, fmt.Sprintf("%s-%s", l.GetMetadata().GetName(), d0.GetMetadata().GetName()), topo.Calls[0].ID)

	r = get(t, "http://"+p.HTTPAddr()+"/cluster?role=datanode-hot")
	var cl struct {
		Nodes []struct {
			PodName        string `json:"pod_name"`
			PrimaryAddress struct {
				IP string `json:"ip"`
			} `json:"primary_address"`
		} `json:"nodes"`
		Calls []struct{ ID string } `json:"calls"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl))
	require.Len(t, cl.Nodes, 2)
	require.Equal(t, "10.0.0.2", cl.Nodes[0].PrimaryAddress.IP)
	require.Len(t, cl.Calls, 2)
}

// A liaison's topology names every node of the cluster. The recorded
// liaison's own node (which carries no pod_name label) is matched to the
// liaison agent; a data node it names that has no registered agent (here
// the recorded data node's entry, whose agent never connects) is listed in
// /cluster and /cluster/topology as no_agent, counted in /metrics and named
// by /health.
func TestNodeWithoutAgentFromRecordedLiaisonTopology(t *testing.T) {
	p, _ := startProxy(t, nil)
	base := "http://" + p.HTTPAddr()
	liaisonRec, err := fixture.Load("head-agent-liaison-fake")
	require.NoError(t, err)
	cfg, err := agentsim.FromRecording(liaisonRec)
	require.NoError(t, err)
	dataRec, err := fixture.Load("head-agent-data-node")
	require.NoError(t, err)
	dataCfg, err := agentsim.FromRecording(dataRec)
	require.NoError(t, err)
	liaisonView, dataView := cfg.Topology(), dataCfg.Topology()
	require.Len(t, liaisonView.GetTopology().GetNodes(), 1)
	require.Len(t, dataView.GetTopology().GetNodes(), 1)
	view := proto.CloneOf(liaisonView)
	view.Topology.Nodes = append(view.Topology.Nodes, dataView.GetTopology().GetNodes()...)
	cfg.Topology = func() *fodcv1.StreamClusterTopologyRequest { return view }
	connect(t, p, cfg)

	var topo struct {
		Nodes []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Status   string                `json:"status"`
		} `json:"nodes"`
	}
	r := get(t, base+"/cluster/topology")
	require.Equal(t, http.StatusOK, r.code, r.body)
	require.NoError(t, json.Unmarshal([]byte(r.body), &topo))
	status := map[string]string{}
	for _, n := range topo.Nodes {
		status[n.Metadata.Name] = n.Status
	}
	require.Equal(t, map[string]string{"127.0.0.1:27999": "online", "127.0.0.1:27912": "no_agent"}, status)

	r = get(t, base+"/cluster")
	var cl struct {
		Nodes []struct {
			NodeID         string `json:"node_id"`
			AgentID        string `json:"agent_id"`
			PodName        string `json:"pod_name"`
			NodeRole       string `json:"node_role"`
			Status         string `json:"status"`
			PrimaryAddress *struct {
				IP   string `json:"ip"`
				Port int    `json:"port"`
			} `json:"primary_address"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl), r.body)
	require.Len(t, cl.Nodes, 2, r.body)
	require.Equal(t, "banyand-liaison-0", cl.Nodes[0].PodName)
	require.Equal(t, "online", cl.Nodes[0].Status)
	require.Equal(t, "127.0.0.1", cl.Nodes[0].PrimaryAddress.IP, "the liaison's address comes from its own node")
	require.Equal(t, 27999, cl.Nodes[0].PrimaryAddress.Port)
	n := cl.Nodes[1]
	require.Equal(t, "no_agent", n.Status)
	require.Equal(t, "banyand-data-0", n.PodName)
	require.Equal(t, "127.0.0.1:27912", n.NodeID)
	require.Empty(t, n.AgentID)
	require.Equal(t, "datanode", n.NodeRole)
	require.Equal(t, 27912, n.PrimaryAddress.Port)

	r = get(t, base+"/cluster?pod_name=banyand-data-0")
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl))
	require.Len(t, cl.Nodes, 1)
	r = get(t, base+"/cluster?role=liaison")
	require.NoError(t, json.Unmarshal([]byte(r.body), &cl))
	require.Len(t, cl.Nodes, 1)

	h := getHealth(t, base)
	require.Equal(t, "degraded", h.Status)
	require.Equal(t, []string{"1 nodes without an agent: banyand-data-0"}, h.Reasons)
	r = get(t, base+"/metrics")
	require.Contains(t, r.body, "\nfodc_proxy_nodes_without_agent{role=\"datanode\"} 1\n")
}
