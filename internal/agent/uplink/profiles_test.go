package uplink

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/roles"
)

// Against a proxy that does not know ExtStreamProfiles (it answers
// Unimplemented), our agent switches that stream off and keeps
// registering, heartbeating and answering metrics on one connection.
func TestProfilesUnimplementedKeepsOtherStreams(t *testing.T) {
	up := &upstreamProxy{}
	addr := serveFake(t, up)
	var calls atomic.Int64
	profiles := func(context.Context, *fodcv1.ExtProfileCommand, func(*fodcv1.ExtProfileRequest) error) { calls.Add(1) }
	id := Identity{Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, PodName: "data-hot-2"}
	src := fixedSource{{Name: "banyandb_system_cpu_num", Value: 8}}
	c, err := New(Options{ProxyAddr: addr, Identity: func() Identity { return id }, Source: src, Profiles: profiles, HeartbeatInterval: time.Hour})
	require.NoError(t, err)
	startClient(t, c)

	waitStatus(t, c, func(st Status) bool { return len(st.Unimplemented) == 2 })
	require.ElementsMatch(t, []string{protocol.KindTopology.String(), protocol.KindProfiles.String()}, c.Status().Unimplemented)
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
	require.Zero(t, testutil.ToFloat64(c.m.reconnects))
	require.Zero(t, calls.Load())
}
