package topology

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
)

// recorded returns the agent's first topology reply in a recording.
func recorded(t *testing.T, name string) *fodcv1.StreamClusterTopologyRequest {
	t.Helper()
	rec, err := fixture.Load(name)
	require.NoError(t, err)
	frames := rec.Frames(fixture.MethodStreamClusterTopology, fixture.AgentToProxy)
	require.NotEmpty(t, frames, "no topology reply in %s", name)
	m, err := frames[0].Message()
	require.NoError(t, err)
	return m.(*fodcv1.StreamClusterTopologyRequest)
}

// upstreamBody reads the upstream proxy's /cluster/topology answer of a
// recording.
func upstreamBody(t *testing.T, name string) []byte {
	t.Helper()
	dir, err := fixture.Dir()
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, name+".http", "cluster_topology.txt"))
	require.NoError(t, err)
	return b
}

func TestMergeRecorded(t *testing.T) {
	answers := []AgentTopology{
		{AgentID: "id-liaison", PodName: "banyand-liaison-0", Reply: recorded(t, "head-agent-liaison-fake")},
		{AgentID: "id-data", PodName: "banyand-data-0", Reply: recorded(t, "head-agent-data-node")},
	}
	hb := time.Date(2026, 11, 26, 20, 8, 53, 651507089, time.UTC)
	lookups := map[string]int{}
	m := Merge(answers, func(pod string) (NodeStatus, bool) {
		lookups[pod]++
		switch pod {
		case "banyand-data-0":
			return NodeStatus{Status: "online", LastHeartbeat: hb}, true
		case "banyand-liaison-0":
			return NodeStatus{Status: "online", LastHeartbeat: hb}, true
		}
		return NodeStatus{}, false
	})

	require.Len(t, m.Nodes, 2)
	require.Empty(t, m.Calls)
	data, liaison := m.Nodes[0], m.Nodes[1]
	require.Equal(t, "127.0.0.1:27912", data.GetMetadata().GetName())
	require.Equal(t, "127.0.0.1:27999", liaison.GetMetadata().GetName())
	require.Equal(t, []string{"ROLE_META", "ROLE_DATA", "ROLE_LIAISON"}, RoleNames(data.GetRoles()))
	require.Equal(t, []string{"ROLE_LIAISON"}, RoleNames(liaison.GetRoles()))
	require.Equal(t, map[string]string{"pod_name": "banyand-data-0"}, data.GetLabels())
	// The liaison's own node lost its pod_name label (PROTOCOL.md §3.3), so
	// no registry status can be attached to it.
	require.Equal(t, map[string]string{"type": "hot", "zone": "z1"}, liaison.GetLabels())
	require.Equal(t, map[string]NodeStatus{"127.0.0.1:27912": {Status: "online", LastHeartbeat: hb}}, m.Status)
	require.Equal(t, map[string]int{"banyand-data-0": 1}, lookups)

	require.Equal(t, Addresses{
		Primary:   "127.0.0.1:27912",
		Secondary: map[string]string{"http": "127.0.0.1:27913", "schema": "127.0.0.1:27916"},
	}, NodeAddresses(data))
	require.Equal(t, Addresses{Primary: "127.0.0.1:27999"}, NodeAddresses(liaison))

	n, ok := NodeForPod(m, "banyand-data-0")
	require.True(t, ok)
	require.Same(t, data, n)
	_, ok = NodeForPod(m, "banyand-liaison-0")
	require.False(t, ok)
	_, ok = NodeForPod(m, "")
	require.False(t, ok)
}

// TestWriteJSONMatchesUpstream renders each recorded reply alone and
// compares it with what the upstream proxy answered for the same reply.
func TestWriteJSONMatchesUpstream(t *testing.T) {
	tests := []struct {
		name   string
		pod    string
		status *NodeStatus
	}{
		{
			name:   "head-agent-data-node",
			pod:    "banyand-data-0",
			status: &NodeStatus{Status: "online", LastHeartbeat: time.Date(2026, 11, 26, 20, 8, 53, 651507089, time.UTC)},
		},
		{
			name:   "v0.10.3-agent-data-node",
			pod:    "banyand-data-0",
			status: &NodeStatus{Status: "online", LastHeartbeat: time.Date(2026, 11, 26, 20, 9, 58, 448097571, time.UTC)},
		},
		{name: "head-agent-liaison-fake", pod: "banyand-liaison-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Merge([]AgentTopology{{AgentID: "a", PodName: tt.pod, Reply: recorded(t, tt.name)}},
				func(pod string) (NodeStatus, bool) {
					if tt.status == nil || pod != tt.pod {
						return NodeStatus{}, false
					}
					return *tt.status, true
				})
			var buf bytes.Buffer
			require.NoError(t, WriteJSON(&buf, m))
			require.JSONEq(t, string(upstreamBody(t, tt.name)), buf.String())

			// Check the shape explicitly too, so a change in the sample
			// cannot hide a regression.
			var body struct {
				Nodes []map[string]json.RawMessage `json:"nodes"`
				Calls []json.RawMessage            `json:"calls"`
			}
			require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
			require.NotNil(t, body.Calls)
			require.Len(t, body.Nodes, 1)
			node := body.Nodes[0]
			var created map[string]int64
			require.NoError(t, json.Unmarshal(node["created_at"], &created))
			require.ElementsMatch(t, []string{"seconds", "nanos"}, keys(created))
			var roles []string
			require.NoError(t, json.Unmarshal(node["roles"], &roles))
			require.Contains(t, roles, "ROLE_LIAISON")
			_, hasStatus := node["status"]
			_, hasHB := node["last_heartbeat"]
			require.Equal(t, tt.status != nil, hasStatus)
			require.Equal(t, tt.status != nil, hasHB)
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func node(name, grpc string, labels map[string]string, roles ...databasev1.Role) *databasev1.Node {
	return &databasev1.Node{
		Metadata:    &commonv1.Metadata{Name: name},
		GrpcAddress: grpc,
		Labels:      labels,
		Roles:       roles,
	}
}

func reply(nodes []*databasev1.Node, calls ...*fodcv1.Call) *fodcv1.StreamClusterTopologyRequest {
	return &fodcv1.StreamClusterTopologyRequest{Topology: &fodcv1.Topology{Nodes: nodes, Calls: calls}}
}

// syntheticAnswers are three agents whose copies of the same nodes and
// calls conflict.
func syntheticAnswers() []AgentTopology {
	return []AgentTopology{
		{AgentID: "id-b", PodName: "pod-b", Reply: reply([]*databasev1.Node{
			node("node-b", "10.0.0.2:17912", map[string]string{"pod_name": "pod-b", "zone": "z2"}, databasev1.Role_ROLE_DATA),
			node("node-a", "10.9.9.9:1", map[string]string{"tier": "x", "zone": "wrong"}),
			node("node-c", "10.0.0.3:2", map[string]string{"from": "b", "only_b": "1"}),
		}, &fodcv1.Call{Id: "node-b-node-a", Source: "node-b", Target: "node-a"},
			&fodcv1.Call{Id: "shared", Source: "from-b", Target: "x"})},
		{AgentID: "id-a", PodName: "pod-a", Reply: reply([]*databasev1.Node{
			node("node-a", "10.0.0.1:17912", map[string]string{"pod_name": "pod-a", "zone": "z1"}, databasev1.Role_ROLE_LIAISON),
			node("node-b", "10.9.9.9:2", map[string]string{"zone": "z9", "extra": "e"}),
			node("node-c", "10.0.0.3:1", map[string]string{"from": "a"}),
			{Metadata: &commonv1.Metadata{}}, // nameless: skipped
			nil,
		}, &fodcv1.Call{Id: "node-a-node-b", Source: "node-a", Target: "node-b"},
			&fodcv1.Call{Id: "shared", Source: "from-a", Target: "x"}, nil)},
		// A second, older registration of pod-a reporting a stale copy.
		{AgentID: "id-a2", PodName: "pod-a", Reply: reply([]*databasev1.Node{
			node("node-a", "10.9.9.9:3", map[string]string{"pod_name": "pod-a", "zone": "old"}),
		})},
		{AgentID: "id-silent", PodName: "pod-z"},
	}
}

func TestMergeConflicts(t *testing.T) {
	answers := syntheticAnswers()
	before := proto.CloneOf(answers[0].Reply)
	m := Merge(answers, func(pod string) (NodeStatus, bool) {
		if pod == "pod-b" {
			return NodeStatus{Status: "unconnected"}, true
		}
		return NodeStatus{}, false
	})

	require.Len(t, m.Nodes, 3)
	byName := map[string]*databasev1.Node{}
	for _, n := range m.Nodes {
		byName[n.GetMetadata().GetName()] = n
	}
	require.Equal(t, []string{"node-a", "node-b", "node-c"}, []string{
		m.Nodes[0].GetMetadata().GetName(), m.Nodes[1].GetMetadata().GetName(), m.Nodes[2].GetMetadata().GetName(),
	})
	// The owner's copy wins; the first owner (agent id order) among two.
	require.Equal(t, "10.0.0.1:17912", byName["node-a"].GetGrpcAddress())
	require.Equal(t, []databasev1.Role{databasev1.Role_ROLE_LIAISON}, byName["node-a"].GetRoles())
	require.Equal(t, map[string]string{"pod_name": "pod-a", "zone": "z1", "tier": "x"}, byName["node-a"].GetLabels())
	require.Equal(t, "10.0.0.2:17912", byName["node-b"].GetGrpcAddress())
	require.Equal(t, map[string]string{"pod_name": "pod-b", "zone": "z2", "extra": "e"}, byName["node-b"].GetLabels())
	// Nobody owns node-c: the first agent by pod name wins.
	require.Equal(t, "10.0.0.3:1", byName["node-c"].GetGrpcAddress())
	require.Equal(t, map[string]string{"from": "a", "only_b": "1"}, byName["node-c"].GetLabels())

	require.Len(t, m.Calls, 3)
	require.Equal(t, "node-a-node-b", m.Calls[0].GetId())
	require.Equal(t, "node-b-node-a", m.Calls[1].GetId())
	require.Equal(t, "shared", m.Calls[2].GetId())
	require.Equal(t, "from-a", m.Calls[2].GetSource())

	require.Equal(t, map[string]NodeStatus{"node-b": {Status: "unconnected"}}, m.Status)

	// The inputs are untouched and not shared.
	require.True(t, proto.Equal(before, answers[0].Reply))
	m.Nodes[0].Labels["mutated"] = "yes"
	for _, a := range answers {
		for _, n := range a.Reply.GetTopology().GetNodes() {
			require.NotContains(t, n.GetLabels(), "mutated")
		}
	}

	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, Merge(answers, nil)))
	var body struct {
		Nodes []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Status   *string               `json:"status"`
			Roles    []string              `json:"roles"`
		} `json:"nodes"`
		Calls []map[string]string `json:"calls"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
	require.Len(t, body.Nodes, 3)
	require.Nil(t, body.Nodes[1].Status)
	require.NotNil(t, body.Nodes[2].Roles, "roles must be present even when empty")
	require.Empty(t, body.Nodes[2].Roles)
	require.Equal(t, map[string]string{"id": "shared", "source": "from-a", "target": "x"}, body.Calls[2])
}

// TestMergeOrderIndependent merges every permutation of the same answers
// and requires byte-identical output.
func TestMergeOrderIndependent(t *testing.T) {
	answers := syntheticAnswers()
	status := func(pod string) (NodeStatus, bool) {
		return NodeStatus{Status: "online", LastHeartbeat: time.Unix(1700000000, 5).UTC()}, pod == "pod-a"
	}
	render := func(in []AgentTopology) string {
		var buf bytes.Buffer
		require.NoError(t, WriteJSON(&buf, Merge(in, status)))
		return buf.String()
	}
	want := render(answers)
	n := 0
	permute(answers, 0, func(p []AgentTopology) {
		n++
		require.Equal(t, want, render(p))
	})
	require.Equal(t, 24, n)
}

func permute(a []AgentTopology, k int, f func([]AgentTopology)) {
	if k == len(a) {
		f(a)
		return
	}
	for i := k; i < len(a); i++ {
		a[k], a[i] = a[i], a[k]
		permute(a, k+1, f)
		a[k], a[i] = a[i], a[k]
	}
}

func TestWriteJSONEmptyAndFull(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, Merge(nil, nil)))
	require.JSONEq(t, `{"nodes":[],"calls":[]}`, buf.String())

	full := &databasev1.Node{
		Metadata:                        &commonv1.Metadata{Group: "g", Name: "n", Id: 7, CreateRevision: 3, ModRevision: 4},
		Roles:                           []databasev1.Role{databasev1.Role_ROLE_DATA, databasev1.Role(9)},
		GrpcAddress:                     "10.0.0.1:17912",
		HttpAddress:                     "10.0.0.1:17913",
		CreatedAt:                       &timestamppb.Timestamp{Seconds: 12, Nanos: 34},
		Labels:                          map[string]string{"pod_name": "p"},
		PropertyRepairGossipGrpcAddress: "10.0.0.1:17932",
		PropertySchemaGrpcAddress:       "10.0.0.1:17916",
		PropertySchemaGossipGrpcAddress: "10.0.0.1:17917",
	}
	loc := time.FixedZone("X", 3600)
	m := Merge([]AgentTopology{{PodName: "p", Reply: reply([]*databasev1.Node{full})}}, func(string) (NodeStatus, bool) {
		return NodeStatus{Status: "online", LastHeartbeat: time.Date(2026, 1, 2, 3, 4, 5, 6, loc)}, true
	})
	buf.Reset()
	require.NoError(t, WriteJSON(&buf, m))
	require.JSONEq(t, `{"nodes":[{
		"metadata":{"group":"g","name":"n","id":7,"create_revision":3,"mod_revision":4},
		"grpc_address":"10.0.0.1:17912","http_address":"10.0.0.1:17913",
		"created_at":{"seconds":12,"nanos":34},
		"labels":{"pod_name":"p"},
		"property_repair_gossip_grpc_address":"10.0.0.1:17932",
		"property_schema_grpc_address":"10.0.0.1:17916",
		"property_schema_gossip_grpc_address":"10.0.0.1:17917",
		"status":"online","last_heartbeat":"2026-01-02T03:04:05.000000006+01:00",
		"roles":["ROLE_DATA","UNKNOWN_ROLE_9"]}],"calls":[]}`, buf.String())
	// Field order follows the upstream body.
	s := buf.String()
	require.Less(t, bytes.Index([]byte(s), []byte(`"labels"`)), bytes.Index([]byte(s), []byte(`"status"`)))
	require.Less(t, bytes.Index([]byte(s), []byte(`"last_heartbeat"`)), bytes.Index([]byte(s), []byte(`"roles"`)))

	require.Equal(t, Addresses{
		Primary: "10.0.0.1:17912",
		Secondary: map[string]string{
			"http": "10.0.0.1:17913", "gossip": "10.0.0.1:17932",
			"schema": "10.0.0.1:17916", "schema_gossip": "10.0.0.1:17917",
		},
	}, NodeAddresses(full))
	require.Equal(t, Addresses{}, NodeAddresses(nil))
}

func TestPreferOnline(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		entries []NodeStatus
		want    NodeStatus
		ok      bool
	}{
		{name: "none"},
		{name: "one", entries: []NodeStatus{{Status: "unconnected", LastHeartbeat: t0}}, want: NodeStatus{Status: "unconnected", LastHeartbeat: t0}, ok: true},
		{
			name: "online beats a newer unconnected",
			entries: []NodeStatus{
				{Status: "unconnected", LastHeartbeat: t0.Add(time.Hour)},
				{Status: "online", LastHeartbeat: t0},
			},
			want: NodeStatus{Status: "online", LastHeartbeat: t0}, ok: true,
		},
		{
			name: "latest heartbeat among online",
			entries: []NodeStatus{
				{Status: "online", LastHeartbeat: t0},
				{Status: "online", LastHeartbeat: t0.Add(time.Second)},
				{Status: "unconnected", LastHeartbeat: t0.Add(time.Hour)},
			},
			want: NodeStatus{Status: "online", LastHeartbeat: t0.Add(time.Second)}, ok: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PreferOnline(tt.entries)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}
