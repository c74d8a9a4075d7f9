package uplink

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/roles"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func hotNode() Identity {
	return Identity{
		Role:           roles.Role{Kind: roles.KindData, Tier: "hot"},
		Labels:         map[string]string{"zone": "a", "empty": "", "pod_name": "ignored"},
		PodName:        "data-0",
		ContainerNames: []string{"data"},
		Primary:        Address{IP: "10.0.0.5", Port: 17912},
		Secondary: map[string]Address{
			AddressHTTP: {IP: "10.0.0.5", Port: 17913}, AddressGossip: {IP: "10.0.0.5", Port: 17932},
			AddressSchema: {IP: "10.0.0.5", Port: 17942}, AddressSchemaGossip: {IP: "10.0.0.5", Port: 17952},
			"custom": {IP: "10.0.0.5", Port: 1},
		},
	}
}

func TestRegisterRequest(t *testing.T) {
	id := hotNode()
	req := id.RegisterRequest()
	require.Equal(t, "ROLE_DATA", req.GetNodeRole())
	require.Equal(t, map[string]string{"type": "hot", "zone": "a", "empty": "", "pod_name": "ignored"}, req.GetLabels())
	require.Equal(t, "data-0", req.GetPodName())
	require.Equal(t, []string{"data"}, req.GetContainerNames())
	require.Equal(t, "10.0.0.5", req.GetPrimaryAddress().GetIp())
	require.EqualValues(t, 17912, req.GetPrimaryAddress().GetPort())
	require.Len(t, req.GetSecondaryAddresses(), 5)
	require.EqualValues(t, 17932, req.GetSecondaryAddresses()["gossip"].GetPort())
	require.NotContains(t, id.Labels, "type", "the identity's own map is not modified")

	// An explicit type label wins over the tier; no address means none sent.
	liaison := Identity{Role: roles.Role{Kind: roles.KindLiaison}, PodName: "l-0"}
	req = liaison.RegisterRequest()
	require.Equal(t, "ROLE_LIAISON", req.GetNodeRole())
	require.Nil(t, req.GetPrimaryAddress())
	require.Nil(t, req.GetSecondaryAddresses())
	unspecified := Identity{PodName: "x"}
	require.Equal(t, "ROLE_UNSPECIFIED", unspecified.RegisterRequest().GetNodeRole())
}

func TestNode(t *testing.T) {
	id := hotNode()
	n := id.Node()
	require.Equal(t, "10.0.0.5:17912", n.GetMetadata().GetName())
	require.Equal(t, []databasev1.Role{databasev1.Role_ROLE_DATA}, n.GetRoles())
	require.Equal(t, "10.0.0.5:17912", n.GetGrpcAddress())
	require.Equal(t, "10.0.0.5:17913", n.GetHttpAddress())
	require.Equal(t, "10.0.0.5:17932", n.GetPropertyRepairGossipGrpcAddress())
	require.Equal(t, "10.0.0.5:17942", n.GetPropertySchemaGrpcAddress())
	require.Equal(t, "10.0.0.5:17952", n.GetPropertySchemaGossipGrpcAddress())
	require.Equal(t, "data-0", n.GetLabels()["pod_name"])
	require.Equal(t, "hot", n.GetLabels()["type"])

	bare := Identity{PodName: "p"}
	n = bare.Node()
	require.Equal(t, "p", n.GetMetadata().GetName(), "named by the pod without a primary address")
	require.Empty(t, n.GetRoles())
	require.Empty(t, n.GetGrpcAddress())
}

func TestStampLabels(t *testing.T) {
	id := hotNode()
	require.Equal(t, map[string]string{
		"node_role": "ROLE_DATA", "pod_name": "data-0", "container_name": "data",
		"node_type": "hot", "node_zone": "a",
	}, id.StampLabels())
	two := Identity{Role: roles.Role{Kind: roles.KindLiaison}, PodName: "l", ContainerNames: []string{"a", "b"}}
	require.Equal(t, map[string]string{"node_role": "ROLE_LIAISON", "pod_name": "l"}, two.StampLabels(),
		"no container_name when it is ambiguous")
}

func TestStampSharesOneMapPerSeriesAndNeverOverwrites(t *testing.T) {
	seriesA := map[string]string{"s": "a", "pod_name": "own"}
	seriesB := map[string]string{"s": "b"}
	ms := []*fodcv1.Metric{
		{Name: "x", Labels: seriesA}, {Name: "x", Labels: seriesA},
		{Name: "x", Labels: seriesB}, {Name: "x", Labels: seriesB}, {Name: "x", Labels: seriesB},
		{Name: "y"}, {Name: "z"},
	}
	stamp(ms, map[string]string{"node_role": "ROLE_DATA", "pod_name": "data-0"})

	require.Equal(t, map[string]string{"s": "a", "pod_name": "own", "node_role": "ROLE_DATA"}, ms[0].GetLabels())
	require.Equal(t, map[string]string{"s": "b", "pod_name": "data-0", "node_role": "ROLE_DATA"}, ms[2].GetLabels())
	require.Equal(t, map[string]string{"pod_name": "data-0", "node_role": "ROLE_DATA"}, ms[5].GetLabels())
	require.Equal(t, map[string]string{"s": "a", "pod_name": "own"}, seriesA, "source maps are not modified")
	require.Equal(t, map[string]string{"s": "b"}, seriesB)
	require.Equal(t, mapPointer(ms[0].Labels), mapPointer(ms[1].Labels), "one map per series")
	require.Equal(t, mapPointer(ms[2].Labels), mapPointer(ms[4].Labels))
	require.NotEqual(t, mapPointer(ms[1].Labels), mapPointer(ms[2].Labels))
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in   string
		want Address
		ok   bool
	}{
		{"10.0.0.1:17912", Address{"10.0.0.1", 17912}, true},
		{"[::1]:80", Address{"::1", 80}, true},
		{"host:1", Address{"host", 1}, true},
		{"10.0.0.1", Address{}, false},
		{":80", Address{}, false},
		{"h:0", Address{}, false},
		{"h:70000", Address{}, false},
		{"h:x", Address{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddress(tc.in)
			if !tc.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
