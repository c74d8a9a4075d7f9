package discovery

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	"github.com/fodc-go/fodc/internal/agent/uplink"
	"github.com/fodc-go/fodc/internal/roles"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func discoveredNode() *databasev1.Node {
	return &databasev1.Node{
		Metadata:                        &commonv1.Metadata{Name: "10.0.0.9:17912"},
		Roles:                           []databasev1.Role{databasev1.Role_ROLE_META, databasev1.Role_ROLE_DATA},
		GrpcAddress:                     "10.0.0.9:17912",
		HttpAddress:                     "10.0.0.9:17913",
		Labels:                          map[string]string{"type": "warm", "zone": "b"},
		PropertyRepairGossipGrpcAddress: "10.0.0.9:17932",
	}
}

func TestMergeNode(t *testing.T) {
	base := uplink.Identity{
		Role:      roles.Role{Kind: roles.KindLiaison},
		PodName:   "p",
		Primary:   uplink.Address{IP: "1.2.3.4", Port: 1},
		Secondary: map[string]uplink.Address{"gossip": {IP: "1.2.3.4", Port: 2}},
	}
	got := Merge(base, true, discoveredNode())
	require.Equal(t, roles.Role{Kind: roles.KindLiaison}, got.Role, "explicit role wins")
	require.Equal(t, base.Primary, got.Primary, "explicit --node-ip wins")
	require.Equal(t, map[string]uplink.Address{"gossip": {IP: "1.2.3.4", Port: 2}, "http": {IP: "10.0.0.9", Port: 17913}}, got.Secondary)
	require.Equal(t, map[string]string{"type": "warm", "zone": "b"}, got.Labels)

	metaOnly := &databasev1.Node{Roles: []databasev1.Role{databasev1.Role_ROLE_META}}
	got = Merge(uplink.Identity{PodName: "p"}, false, metaOnly)
	require.Equal(t, roles.Role{}, got.Role, "a meta-only node is reported as unspecified, like upstream")
	require.True(t, got.Primary.IsZero())
}
