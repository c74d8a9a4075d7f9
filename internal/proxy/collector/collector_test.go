package collector

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// barrierRequester answers every request with the reply of its round once
// n callers are waiting, like an agent stream that coalesces identical
// concurrent requests into one command.
type barrierRequester struct {
	n     int
	calls atomic.Int64

	mu      sync.Mutex
	waiting int
	release chan struct{}
	reply   *fodcv1.StreamMetricsRequest
	round   int
}

func (b *barrierRequester) Request(ctx context.Context, _ agentsvc.Window) (*fodcv1.StreamMetricsRequest, error) {
	b.calls.Add(1)
	b.mu.Lock()
	if b.release == nil {
		b.release = make(chan struct{})
		b.round++
		b.reply = &fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(time.Unix(1_700_000_000, 0)), Metrics: []*fodcv1.Metric{
			{Name: "up", Labels: map[string]string{"pod_name": "p"}, Value: float64(b.round), Type: fodcv1.MetricType_METRIC_TYPE_GAUGE},
			{Name: "a_total", Labels: map[string]string{"x": "1"}, Value: 2, Type: fodcv1.MetricType_METRIC_TYPE_COUNTER},
		}}
	}
	release, reply := b.release, b.reply
	b.waiting++
	if b.waiting == b.n {
		close(b.release)
		b.release, b.waiting = nil, 0
	}
	b.mu.Unlock()
	select {
	case <-release:
		return reply, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newTestCollector(t *testing.T, req Requester) *Collector {
	t.Helper()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10})
	require.NoError(t, err)
	_, err = reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "p", Labels: map[string]string{"type": "hot"}})
	require.NoError(t, err)
	c, err := New(Options{Registry: reg, Streams: func(string) (Requester, bool) { return req, true }})
	require.NoError(t, err)
	return c
}

func TestCollectSharesEnrichmentOfCoalescedReplies(t *testing.T) {
	tests := []struct {
		name       string
		concurrent int
	}{
		{"two callers", 2},
		{"four callers", 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &barrierRequester{n: tc.concurrent}
			c := newTestCollector(t, req)
			results := make([][]Result, tc.concurrent)
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() { results[i] = c.Collect(t.Context(), registry.Filter{}, agentsvc.Window{}) })
			}
			wg.Wait()
			first := results[0][0]
			require.NoError(t, first.Err)
			require.Len(t, first.Batch.Series, 2)
			require.Equal(t, "a_total", first.Batch.Series[0].Name)
			require.Equal(t, "hot", first.Batch.Series[0].Labels.Get("node_type"))
			require.InDelta(t, 1.0, first.Batch.Series[1].Points[0].Value, 0)
			for _, rs := range results[1:] {
				require.Len(t, rs, 1)
				require.NoError(t, rs[0].Err)
				require.Equal(t, first.Batch, rs[0].Batch)
			}

			// A later collection gets a new reply and its own enrichment.
			req.n = 1
			later := c.Collect(t.Context(), registry.Filter{}, agentsvc.Window{})
			require.NoError(t, later[0].Err)
			require.InDelta(t, 2.0, later[0].Batch.Series[1].Points[0].Value, 0)
			require.NotSame(t, &first.Batch.Series[0], &later[0].Batch.Series[0])
			require.Empty(t, c.shared.calls, "nothing is kept after a collection")
			require.Nil(t, later[0].release)
		})
	}
}

func TestSharerEnrichesOnce(t *testing.T) {
	s := newSharer()
	reply := &fodcv1.StreamMetricsRequest{}
	proceed := make(chan struct{})
	var enriched atomic.Int64
	enrich := func() series.Batch {
		enriched.Add(1)
		<-proceed
		return series.Batch{Series: []series.Series{{Name: "x"}}}
	}
	const callers = 3
	batches := make([]series.Batch, callers)
	releases := make([]func(), callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { batches[i], releases[i] = s.batch(reply, enrich) })
	}
	require.Eventually(t, func() bool { return s.holders(reply) == callers }, 30*time.Second, time.Millisecond)
	close(proceed)
	wg.Wait()
	require.EqualValues(t, 1, enriched.Load())
	for _, b := range batches[1:] {
		require.Same(t, &batches[0].Series[0], &b.Series[0])
	}

	// The entry lives until the last holder releases it.
	releases[0]()
	releases[1]()
	late, lateRelease := s.batch(reply, func() series.Batch { t.Fatal("enriched again while held"); return series.Batch{} })
	require.Same(t, &batches[0].Series[0], &late.Series[0])
	lateRelease()
	releases[2]()
	require.Zero(t, s.holders(reply))
	again, againRelease := s.batch(reply, func() series.Batch { return series.Batch{Series: []series.Series{{Name: "y"}}} })
	defer againRelease()
	require.Equal(t, "y", again.Series[0].Name)
}
