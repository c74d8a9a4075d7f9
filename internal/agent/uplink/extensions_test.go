package uplink

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/roles"
)

// Every configuration command of our proxy gets exactly one fresh report,
// in order: the n-th request sees the n-th report, and a nil report still
// answers its own command (as an empty one) instead of shifting the rest.
func TestNodeConfigAnsweredInOrder(t *testing.T) {
	p := startProxy(t)
	var calls atomic.Int64
	nodeConfig := func(ctx context.Context) *fodcv1.ExtNodeConfigRequest {
		n := calls.Add(1)
		if ctx.Err() != nil {
			return &fodcv1.ExtNodeConfigRequest{Errors: []string{"context already done"}}
		}
		if n == 3 {
			return nil
		}
		return &fodcv1.ExtNodeConfigRequest{
			RuntimeConfig: map[string]string{"seq": strconv.FormatInt(n, 10)},
			StartupParams: map[string]*fodcv1.ExtParamValues{"measure-flush-timeout": {Values: []string{"1s"}}},
		}
	}
	id := Identity{Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, PodName: "data-hot-0"}
	c, err := New(Options{ProxyAddr: p.GRPCAddr(), Identity: func() Identity { return id }, Source: fixedSource{}, NodeConfig: nodeConfig})
	require.NoError(t, err)
	startClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, c.WaitRegistered(ctx, 1))
	agentID := c.Status().AgentID
	require.Eventually(t, func() bool { return p.Streams.Has(agentID, protocol.KindNodeConfig) }, wait, 5*time.Millisecond)
	cs, ok := p.Streams.NodeConfig(agentID)
	require.True(t, ok)

	for want := int64(1); want <= 5; want++ {
		r, err := cs.Request(ctx)
		require.NoError(t, err, "request %d", want)
		require.Empty(t, r.GetErrors())
		if want == 3 {
			require.Empty(t, r.GetRuntimeConfig(), "the nil report answers its own command")
			require.NotNil(t, r.GetCollectedAt())
			continue
		}
		require.Equal(t, strconv.FormatInt(want, 10), r.GetRuntimeConfig()["seq"], "request %d", want)
		require.Equal(t, []string{"1s"}, r.GetStartupParams()["measure-flush-timeout"].GetValues())
	}
	require.Equal(t, int64(5), calls.Load(), "one collection per command")
	require.Equal(t, 5.0, testutil.ToFloat64(c.m.commands.WithLabelValues(protocol.KindNodeConfig.String())))
	st := c.Status()
	require.Empty(t, st.Unimplemented)
	require.Equal(t, 1, st.Registrations)
}

// Without Options.NodeConfig the extension stream is not opened, so our
// proxy lists the agent as not supporting it.
func TestNodeConfigNilLeavesStreamUnopened(t *testing.T) {
	p := startProxy(t)
	id := Identity{Role: roles.Role{Kind: roles.KindLiaison}, PodName: "liaison-0"}
	c, err := New(Options{ProxyAddr: p.GRPCAddr(), Identity: func() Identity { return id }, Source: fixedSource{}})
	require.NoError(t, err)
	startClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, c.WaitRegistered(ctx, 1))
	agentID := c.Status().AgentID
	// The configuration stream would be opened right after the topology
	// stream. The proxy may attach streams in any order, so this check can
	// miss a late stream but never fails a correct client.
	require.Eventually(t, func() bool { return p.Streams.Has(agentID, protocol.KindTopology) }, wait, 5*time.Millisecond)
	_, ok := p.Streams.NodeConfig(agentID)
	require.False(t, ok)
}

// Against an upstream proxy, which answers an extension stream with
// Unimplemented, our agent switches that stream off for the connection
// while registration, heartbeats and metrics stay up: no reconnect, no
// second registration, and the extension's callback is never made.
func TestExtensionUnimplementedKeepsOtherStreams(t *testing.T) {
	for _, tc := range []struct {
		kind protocol.Kind
		with func(*Options, *atomic.Int64)
	}{
		{protocol.KindNodeConfig, func(o *Options, calls *atomic.Int64) {
			o.NodeConfig = func(context.Context) *fodcv1.ExtNodeConfigRequest {
				calls.Add(1)
				return &fodcv1.ExtNodeConfigRequest{}
			}
		}},
		{protocol.KindProfiles, func(o *Options, calls *atomic.Int64) {
			o.Profiles = func(context.Context, *fodcv1.ExtProfileCommand, func(*fodcv1.ExtProfileRequest) error) { calls.Add(1) }
		}},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			up := &upstreamProxy{}
			addr := serveFake(t, up)
			var calls atomic.Int64
			id := Identity{Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, PodName: "data-hot-1"}
			opts := Options{ProxyAddr: addr, Identity: func() Identity { return id }, Source: fixedSource{{Name: "banyandb_system_cpu_num", Value: 8}}, HeartbeatInterval: time.Hour}
			tc.with(&opts, &calls)
			c, err := New(opts)
			require.NoError(t, err)
			startClient(t, c)

			waitStatus(t, c, func(st Status) bool { return len(st.Unimplemented) == 2 })
			require.ElementsMatch(t, []string{protocol.KindTopology.String(), tc.kind.String()}, c.Status().Unimplemented)
			// A heartbeat that arrives after the switch-off proves the
			// registration stream outlived it.
			_, hbAtSwitchOff, _, _ := up.snapshot()
			up.waitUntil(t, func() bool {
				_, hb, replies, _ := up.snapshot()
				return hb > hbAtSwitchOff && len(replies) >= 1
			})
			regs, _, replies, _ := up.snapshot()
			require.Len(t, regs, 1, "no reconnect loop")
			require.Len(t, replies[0].GetMetrics(), 1, "the metrics command was answered")
			st := c.Status()
			require.True(t, st.Connected)
			require.Equal(t, 1, st.Registrations)
			require.Equal(t, 1, st.Attempts)
			require.Empty(t, st.LastError)
			require.Zero(t, testutil.ToFloat64(c.m.reconnects))
			require.Equal(t, 1.0, testutil.ToFloat64(c.m.streamsDisabled.WithLabelValues(tc.kind.String())))
			require.Zero(t, calls.Load())
		})
	}
}
