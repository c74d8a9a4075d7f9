package agentsvc

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

func TestTopologyRequestReply(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamClusterTopology(withID(ctx, id))
	require.NoError(t, err)
	var ts *streams.Topology
	require.Eventually(t, func() bool { var ok bool; ts, ok = h.table.Topology(id); return ok }, 10*time.Second, time.Millisecond)
	go func() {
		for {
			cmd, err := st.Recv()
			if err != nil {
				return
			}
			if !cmd.GetRequestTopology() {
				continue
			}
			_ = st.Send(&fodcv1.StreamClusterTopologyRequest{Topology: &fodcv1.Topology{Calls: []*fodcv1.Call{{Id: "a-b", Source: "a", Target: "b"}}}})
		}
	}()
	reply, err := ts.Request(ctx)
	require.NoError(t, err)
	require.Equal(t, "a-b", reply.GetTopology().GetCalls()[0].GetId())
}

// The chunks of an abandoned registry read are drained through its done
// marker and never reach the next read (W11).
func TestSchemaRegistryRoundsAreIsolated(t *testing.T) {
	h := newHarness(t, testOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "liaison-0")
	st, err := h.client.StreamSchemaRegistry(withID(ctx, id))
	require.NoError(t, err)
	var rs *streams.SchemaRegistry
	require.Eventually(t, func() bool { var ok bool; rs, ok = h.table.SchemaRegistry(id); return ok }, 10*time.Second, time.Millisecond)

	rctx, rcancel := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { _, err := rs.Read(rctx); first <- err }()
	_, err = st.Recv() // first command
	require.NoError(t, err)
	rcancel()
	require.ErrorIs(t, <-first, context.Canceled)

	second := make(chan *streams.RegistryRound, 1)
	go func() { r, _ := rs.Read(ctx); second <- r }()
	_, err = st.Recv() // second command
	require.NoError(t, err)
	chunk := func(group string) *fodcv1.StreamSchemaRegistryRequest {
		return &fodcv1.StreamSchemaRegistryRequest{Group: &fodcv1.SchemaRegistryGroup{Group: group,
			Objects: []*fodcv1.SchemaObjectFingerprint{{Kind: "measure", Name: group + "-m", Fingerprint: 7}}}}
	}
	// The late answer to the first read, then the answer to the second.
	for _, m := range []*fodcv1.StreamSchemaRegistryRequest{chunk("old-a"), chunk("old-b"), {Done: true}, chunk("new-a"), chunk("new-a"), {Done: true}} {
		require.NoError(t, st.Send(m))
	}
	r := <-second
	require.Len(t, r.Chunks, 2)
	for _, c := range r.Chunks {
		require.Equal(t, "new-a", c.GetGroup().GetGroup())
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.svc.metrics.repliesDiscarded.WithLabelValues(protocol.KindSchemaRegistry.String(), "abandoned")) == 1
	}, 10*time.Second, time.Millisecond)
}
