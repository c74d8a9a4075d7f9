package agentsvc

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

func TestTopologyRequestReply(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamClusterTopology(withID(ctx, id))
	require.NoError(t, err)
	var ts *TopologyStream
	require.Eventually(t, func() bool { var ok bool; ts, ok = h.svc.Topology(id); return ok }, 10*time.Second, time.Millisecond)
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
	h := newHarness(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "liaison-0")
	st, err := h.client.StreamSchemaRegistry(withID(ctx, id))
	require.NoError(t, err)
	var rs *SchemaRegistryStream
	require.Eventually(t, func() bool { var ok bool; rs, ok = h.svc.SchemaRegistry(id); return ok }, 10*time.Second, time.Millisecond)

	rctx, rcancel := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { _, err := rs.Read(rctx); first <- err }()
	_, err = st.Recv() // first command
	require.NoError(t, err)
	rcancel()
	require.ErrorIs(t, <-first, context.Canceled)

	second := make(chan *RegistryRound, 1)
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
		return testutil.ToFloat64(h.svc.metrics.repliesDiscarded.WithLabelValues(KindSchemaRegistry, "abandoned")) == 1
	}, 10*time.Second, time.Millisecond)
}

// An agent whose lifecycle collection fails never answers; the proxy does
// not pile up commands, and a report that arrives later goes to whoever
// waits then.
func TestLifecycleZeroOrOneReply(t *testing.T) {
	h := newHarness(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamLifecycle(withID(ctx, id))
	require.NoError(t, err)
	var ls *LifecycleStream
	require.Eventually(t, func() bool { var ok bool; ls, ok = h.svc.Lifecycle(id); return ok }, 10*time.Second, time.Millisecond)
	commands := make(chan struct{}, 10)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
			commands <- struct{}{}
		}
	}()

	rctx, rcancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = ls.Request(rctx, time.Hour)
	rcancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	<-commands
	since, pending := ls.Pending()
	require.True(t, pending)
	require.False(t, since.IsZero())

	// A second caller does not send another command while one is pending.
	got := make(chan *fodcv1.StreamLifecycleRequest, 1)
	go func() { r, _ := ls.Request(ctx, time.Hour); got <- r }()
	require.Eventually(t, func() bool {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		return ls.waiting == 1
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, st.Send(&fodcv1.StreamLifecycleRequest{PodName: "data-0"}))
	require.Equal(t, "data-0", (<-got).GetPodName())
	require.Empty(t, commands, "no second command was sent")
	_, pending = ls.Pending()
	require.False(t, pending)
	last, at, ok := ls.Last()
	require.True(t, ok)
	require.False(t, at.IsZero())
	require.Equal(t, "data-0", last.GetPodName())

	// With a short resend interval a new command goes out.
	go func() { r, _ := ls.Request(ctx, 0); got <- r }()
	<-commands
	require.NoError(t, st.Send(&fodcv1.StreamLifecycleRequest{PodName: "again"}))
	require.Equal(t, "again", (<-got).GetPodName())
}
