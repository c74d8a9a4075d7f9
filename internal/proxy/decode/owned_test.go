package decode

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// An agent cannot write series under the proxy's own names, nor for a
// container it did not register; both are dropped and counted, by the
// wire decoder and the reference alike.
func TestProxyOwnedNamesAndContainers(t *testing.T) {
	info := NodeInfo{
		Node:       series.Node{AgentID: "a", PodName: "real-data-0", Role: "ROLE_DATA"},
		Containers: []string{"data"},
	}
	metric := func(name string, labels map[string]string) *fodcv1.Metric {
		return &fodcv1.Metric{Name: name, Labels: labels, Value: 1}
	}
	reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
		metric("fodc_agent_up", map[string]string{"agent_id": "forged", "pod_name": "victim-pod"}),
		metric("fodc_proxy_agents", map[string]string{"status": "online"}),
		metric("up", map[string]string{"job": "x"}),
		metric("banyandb_fodc_schema_consistency_status", map[string]string{"group": "g"}),
		metric("banyandb_write_total", map[string]string{"container_name": "data"}),
		metric("banyandb_write_total", map[string]string{"container_name": "sidecar"}),
		metric("banyandb_read_total", map[string]string{"pod_name": "victim-pod"}),
		metric("fodc_agentish", nil), // not reserved: no underscore after agent
	}}
	raw, err := proto.Marshal(reply)
	require.NoError(t, err)
	for _, window := range []bool{false, true} {
		b, st, err := Decode(info, raw, received, window, TimeRange{})
		require.NoError(t, err)
		require.Equal(t, 4, st.Reserved)
		require.Equal(t, 1, st.ForeignContainer)
		require.Zero(t, st.OutOfRange)
		var names []string
		for _, s := range b.Series {
			names = append(names, s.Name)
			if s.Name == "banyandb_read_total" {
				require.Equal(t, "real-data-0", s.Labels.Get("pod_name"))
				require.Equal(t, "victim-pod", s.Labels.Get("exported_pod_name"))
			}
			if s.Name == "banyandb_write_total" {
				require.Equal(t, "data", s.Labels.Get("container_name"))
			}
		}
		require.Equal(t, []string{"banyandb_read_total", "banyandb_write_total", "fodc_agentish"}, names)
		_, ok := requireSameAsBatch(t, info, raw, window)
		require.True(t, ok)
	}
}

// The ownership rules keep the wire decoder free of per-sample
// allocations, renames included.
func TestOwnedRulesAllocationFree(t *testing.T) {
	info := NodeInfo{Node: series.Node{PodName: "p", Role: "R"}, Labels: map[string]string{"type": "hot"}, Containers: []string{"c"}}
	ms := make([]*fodcv1.Metric, 0, 200)
	for range 200 {
		ms = append(ms, &fodcv1.Metric{Name: "m", Labels: map[string]string{"pod_name": "q", "node_type": "cold", "container_name": "c"}, Value: 1})
	}
	small, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: ms[:10]})
	require.NoError(t, err)
	large, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: ms})
	require.NoError(t, err)
	a := testing.AllocsPerRun(20, func() { _, _, _ = Decode(info, small, received, true, TimeRange{}) })
	b := testing.AllocsPerRun(20, func() { _, _, _ = Decode(info, large, received, true, TimeRange{}) })
	// A few more for 20 times the samples is slice growth in working
	// memory that the pool did not keep (the race detector makes
	// sync.Pool drop items at random); per-sample allocations would be
	// hundreds.
	require.LessOrEqual(t, b, a+8, "allocations grow with the samples: %v for 10, %v for 200", a, b)
}
