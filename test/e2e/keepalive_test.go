package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/netrelay"
)

// A half-open agent connection is noticed by server keepalive within
// seconds and the agent goes offline, long before the heartbeat sweep
// would even mark it unconnected (upstream weakness W4).
func TestHalfOpenConnectionIsDroppedByKeepalive(t *testing.T) {
	slow(t)
	p, _ := startProxy(t, func(c *proxy.Config) {
		c.GRPCKeepaliveTime = time.Second
		c.GRPCKeepaliveTimeout = time.Second
		c.AgentHeartbeatTimeout = 20 * time.Second
		c.AgentCleanupTimeout = 10 * time.Minute
	})
	r := netrelay.Start(t, p.GRPCAddr())
	a := startAgent(t, agentsim.Config{ProxyAddr: r.Addr(), Register: dataNode("data-0", "hot"), ReconnectInterval: time.Hour})
	base := "http://" + p.HTTPAddr()
	require.Equal(t, 1, getHealth(t, base).AgentsTotal)

	r.Freeze()
	// Without keepalive nothing would notice for AgentCleanupTimeout (10m).
	require.Eventually(t, func() bool {
		ns := clusterNodes(t, base, "")
		return len(ns) == 1 && ns[0].Status == "offline"
	}, wait, 50*time.Millisecond)
	require.Equal(t, 1, a.Registrations())
}
