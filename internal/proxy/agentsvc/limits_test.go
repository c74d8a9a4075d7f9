package agentsvc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// Registrations over a limit are refused with a readable answer and
// InvalidArgument, counted by reason, and leave nothing in the registry.
func TestRegistrationLimits(t *testing.T) {
	lim := RegistrationLimits{MaxLabels: 4, MaxContainers: 2, MaxNameLen: 32, MaxValueLen: 64}
	labels := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[strings.Repeat("k", i+1)] = "v"
		}
		return m
	}
	tests := []struct {
		name   string
		req    *fodcv1.RegisterAgentRequest
		reason string
	}{
		{"too many labels", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p", Labels: labels(5)}, reasonLabels},
		{"long pod name", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: strings.Repeat("p", 33)}, reasonNameLength},
		{"long label name", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p", Labels: map[string]string{strings.Repeat("k", 33): "v"}}, reasonNameLength},
		{"long label value", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p", Labels: map[string]string{"k": strings.Repeat("v", 65)}}, reasonValueLength},
		{"too many containers", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p", ContainerNames: []string{"a", "b", "c"}}, reasonContainers},
		{"long container name", &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "p", ContainerNames: []string{strings.Repeat("c", 33)}}, reasonNameLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, testOpts{Limits: lim})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := h.client.RegisterAgent(ctx)
			require.NoError(t, err)
			require.NoError(t, st.Send(tc.req))
			resp, err := st.Recv()
			require.NoError(t, err)
			require.False(t, resp.GetSuccess())
			require.Contains(t, resp.GetMessage(), "allowed")
			_, err = st.Recv()
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.registrationsRejected.WithLabelValues(tc.reason)))
			require.Empty(t, h.reg.List(registry.Filter{}))
		})
	}
}

// A heartbeat that grows over a limit ends the registration stream.
func TestHeartbeatOverALimitEndsTheStream(t *testing.T) {
	h := newHarness(t, testOpts{Limits: RegistrationLimits{MaxLabels: 2}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, _ := h.register(t, ctx, "data-0")
	require.NoError(t, st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "data-0", Labels: map[string]string{"a": "1", "b": "2", "c": "3"}}))
	_, err := st.Recv()
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.registrationsRejected.WithLabelValues(reasonLabels)))
}

// One peer registering faster than its rate is refused with
// ResourceExhausted after its burst; the refusal is counted.
func TestRegistrationRatePerPeer(t *testing.T) {
	h := newHarness(t, testOpts{Limits: RegistrationLimits{PerPeerRate: 0.001, PerPeerBurst: 3}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 3 {
		h.register(t, ctx, "data-0")
	}
	st, err := h.client.RegisterAgent(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "data-0"}))
	resp, err := st.Recv()
	require.NoError(t, err)
	require.False(t, resp.GetSuccess())
	require.Contains(t, resp.GetMessage(), "too many registrations")
	_, err = st.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Equal(t, 1.0, testutil.ToFloat64(h.svc.metrics.registrationsRejected.WithLabelValues(reasonRate)))
}

func TestPeerLimiterForgetsIdlePeersFirst(t *testing.T) {
	p := newPeerLimiter(1, 1)
	now := time.Unix(1000, 0)
	require.True(t, p.allow("10.0.0.1:5000", now))
	require.False(t, p.allow("10.0.0.1:5001", now), "one IP, whatever the port")
	require.True(t, p.allow("10.0.0.2:5000", now))
	require.True(t, p.allow("10.0.0.1:5000", now.Add(2*time.Second)), "refilled")
	for i := range maxPeers + 10 {
		p.allow(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), now)
	}
	require.LessOrEqual(t, len(p.peers), maxPeers)
	require.Nil(t, newPeerLimiter(0, 5), "no rate: no limiter")
	require.True(t, (*peerLimiter)(nil).allow("x", now))
}
