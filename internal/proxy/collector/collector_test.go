package collector

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
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
	reply   *agentsvc.RawMetrics
	round   int
	// garbage makes every reply undecodable.
	garbage bool
}

func (b *barrierRequester) Request(ctx context.Context, _ agentsvc.Window) (*agentsvc.RawMetrics, error) {
	b.calls.Add(1)
	b.mu.Lock()
	if b.release == nil {
		b.release = make(chan struct{})
		b.round++
		raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(time.Unix(1_700_000_000, 0)), Metrics: []*fodcv1.Metric{
			{Name: "up", Labels: map[string]string{"pod_name": "p"}, Value: float64(b.round), Type: fodcv1.MetricType_METRIC_TYPE_GAUGE},
			{Name: "a_total", Labels: map[string]string{"x": "1"}, Value: 2, Type: fodcv1.MetricType_METRIC_TYPE_COUNTER},
		}})
		if err != nil {
			panic(err)
		}
		if b.garbage {
			raw = raw[:len(raw)-1]
		}
		b.reply = &agentsvc.RawMetrics{Bytes: raw}
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

func TestCollectUndecodableReplyIsAgentDown(t *testing.T) {
	req := &barrierRequester{n: 2, garbage: true}
	prom := prometheus.NewRegistry()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10})
	require.NoError(t, err)
	_, err = reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "p"})
	require.NoError(t, err)
	c, err := New(Options{Registry: reg, Registerer: prom, Streams: func(string) (Requester, bool) { return req, true }})
	require.NoError(t, err)
	results := make([][]Result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = c.Collect(t.Context(), registry.Filter{}, agentsvc.Window{}) })
	}
	wg.Wait()
	for _, rs := range results {
		require.Len(t, rs, 1)
		require.False(t, rs[0].Up())
		require.ErrorContains(t, rs[0].Err, "undecodable reply")
		require.Empty(t, rs[0].Batch.Series)
	}
	// Both collections got the same reply; they share its decoding only
	// while both run (see TestSharerSharesErrors).
	require.InDelta(t, 1.5, testutil.ToFloat64(c.metrics.decodeErrors), 0.5)
	require.Equal(t, 2.0, testutil.ToFloat64(c.metrics.requests.WithLabelValues("latest", "decode_error")))
	require.Zero(t, testutil.ToFloat64(c.metrics.requests.WithLabelValues("latest", "ok")))
	require.Empty(t, c.shared.calls)
}

func TestSharerSharesErrors(t *testing.T) {
	s := newSharer()
	reply := &agentsvc.RawMetrics{}
	proceed := make(chan struct{})
	var enriched atomic.Int64
	enrich := func() (series.Batch, error) {
		enriched.Add(1)
		<-proceed
		return series.Batch{}, errors.New("bad bytes")
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			var release func()
			_, release, errs[i] = s.batch(reply, enrich)
			release()
		})
	}
	require.Eventually(t, func() bool { return s.holders(reply) == len(errs) }, 30*time.Second, time.Millisecond)
	close(proceed)
	wg.Wait()
	require.EqualValues(t, 1, enriched.Load())
	for _, err := range errs {
		require.EqualError(t, err, "bad bytes")
	}
	require.Zero(t, s.holders(reply))
}

func TestSharerEnrichesOnce(t *testing.T) {
	s := newSharer()
	reply := &agentsvc.RawMetrics{}
	proceed := make(chan struct{})
	var enriched atomic.Int64
	enrich := func() (series.Batch, error) {
		enriched.Add(1)
		<-proceed
		return series.Batch{Series: []series.Series{{Name: "x"}}}, nil
	}
	const callers = 3
	batches := make([]series.Batch, callers)
	releases := make([]func(), callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			var err error
			batches[i], releases[i], err = s.batch(reply, enrich)
			if err != nil {
				panic(err)
			}
		})
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
	late, lateRelease, err := s.batch(reply, func() (series.Batch, error) {
		t.Error("enriched again while held")
		return series.Batch{}, nil
	})
	require.NoError(t, err)
	require.Same(t, &batches[0].Series[0], &late.Series[0])
	lateRelease()
	releases[2]()
	require.Zero(t, s.holders(reply))
	again, againRelease, err := s.batch(reply, func() (series.Batch, error) {
		return series.Batch{Series: []series.Series{{Name: "y"}}}, nil
	})
	require.NoError(t, err)
	defer againRelease()
	require.Equal(t, "y", again.Series[0].Name)
}
