package scrape

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	scraper *Scraper
	reg     *registry.Registry
	table   *streams.Table
	prom    *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	table := streams.NewTable(streams.Limits{SendQueueLen: 8, MaxPending: 8})
	prom := prometheus.NewRegistry()
	s, err := New(reg, table, decode.Limits{MaxLabels: 4}, slog.New(slog.DiscardHandler), prom)
	require.NoError(t, err)
	return &fixture{scraper: s, reg: reg, table: table, prom: prom}
}

// agent registers a node and opens its metrics stream; the test plays the
// agent through the returned handle.
func (f *fixture) agent(t *testing.T, pod string) *streams.Metrics {
	t.Helper()
	a, err := f.reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: pod, Labels: map[string]string{"type": "hot"}})
	require.NoError(t, err)
	m, err := f.table.OpenMetrics(a.ID)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close(nil) })
	return m
}

func reply(t *testing.T, value float64) *series.RawMetrics {
	t.Helper()
	// Now, inside a synctest bubble, is 2000-01-01, the earliest time the
	// scraper keeps.
	raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(time.Now()), Metrics: []*fodcv1.Metric{
		{Name: "a_total", Value: 1, Labels: map[string]string{"x": "1"}},
		{Name: "b", Value: value},
	}})
	require.NoError(t, err)
	return &series.RawMetrics{Bytes: raw}
}

func TestScrapeDecodesWithNodeIdentity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		m := f.agent(t, "p")
		go func() { <-m.Outbox(); m.Deliver(reply(t, 2)) }()
		rs := f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{})
		require.Len(t, rs, 1)
		require.True(t, rs[0].Up())
		require.Empty(t, rs[0].Batch.Series, "a latest scrape is packed")
		b := rs[0].Packed.Batch()
		require.Len(t, b.Series, 2)
		require.Equal(t, "a_total", b.Series[0].Name)
		require.Equal(t, "hot", b.Series[0].Labels.Get("node_type"))
		require.Equal(t, "p", b.Series[0].Labels.Get("pod_name"))
		require.InDelta(t, 2.0, b.Series[1].Points[0].Value, 0)
		require.Equal(t, 1.0, testutil.ToFloat64(f.scraper.metrics.requests.WithLabelValues("latest", "ok")))
	})
}

// Identical concurrent scrapes send one command to each agent and both
// get its answer.
func TestConcurrentScrapesShareOneCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		m := f.agent(t, "p")
		results := make(chan []Result, 2)
		for range 2 {
			go func() { results <- f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{}) }()
		}
		synctest.Wait()
		require.Len(t, m.Outbox(), 1)
		<-m.Outbox()
		require.Equal(t, streams.Delivered, m.Deliver(reply(t, 3)))
		a, b := <-results, <-results
		require.True(t, a[0].Up())
		require.Equal(t, a[0].Packed.Batch(), b[0].Packed.Batch())
	})
}

func TestSilentAgentTimesOutOthersAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		quick := f.agent(t, "a-quick")
		f.agent(t, "b-silent")
		go func() { <-quick.Outbox(); quick.Deliver(reply(t, 1)) }()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		rs := f.scraper.Scrape(ctx, registry.Filter{}, series.Window{})
		require.Len(t, rs, 2)
		require.True(t, rs[0].Up())
		require.False(t, rs[1].Up())
		require.ErrorIs(t, rs[1].Err, context.DeadlineExceeded)
		require.Equal(t, 5*time.Second, rs[1].Duration)
		require.Equal(t, 1.0, testutil.ToFloat64(f.scraper.metrics.requests.WithLabelValues("latest", "timeout")))
	})
}

func TestAgentWithoutStreamIsReported(t *testing.T) {
	f := newFixture(t)
	_, err := f.reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "p"})
	require.NoError(t, err)
	rs := f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{})
	require.Len(t, rs, 1)
	require.ErrorIs(t, rs[0].Err, ErrNoStream)
}

func TestUndecodableReplyIsAgentDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		m := f.agent(t, "p")
		go func() { <-m.Outbox(); m.Deliver(&series.RawMetrics{Bytes: []byte{0xff, 0xff, 0xff}}) }()
		rs := f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{})
		require.Len(t, rs, 1)
		require.False(t, rs[0].Up())
		require.ErrorContains(t, rs[0].Err, "undecodable reply")
		require.Nil(t, rs[0].Packed)
		require.Equal(t, 1.0, testutil.ToFloat64(f.scraper.metrics.decodeErrors))
		require.Equal(t, 1.0, testutil.ToFloat64(f.scraper.metrics.requests.WithLabelValues("latest", "decode_error")))
		require.Zero(t, testutil.ToFloat64(f.scraper.metrics.requests.WithLabelValues("latest", "ok")))
	})
}

func TestNewRequiresDependencies(t *testing.T) {
	_, err := New(nil, nil, decode.Limits{}, nil, nil)
	require.Error(t, err)
}

// A reply over a limit is refused whole: the agent is down in this scrape
// with the reason, the rejection is counted and remembered for /cluster,
// and forgotten once the agent's next reply is accepted.
func TestReplyOverALimitIsRefusedWhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t) // MaxLabels: 4
		m := f.agent(t, "p")
		a := f.reg.List(registry.Filter{})[0]
		wide := map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
		raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "ok", Value: 1}, {Name: "wide", Labels: wide, Value: 2}}})
		require.NoError(t, err)
		go func() { <-m.Outbox(); m.Deliver(&series.RawMetrics{Bytes: raw}) }()
		rs := f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{})
		require.False(t, rs[0].Up())
		require.ErrorContains(t, rs[0].Err, "labels_per_series")
		require.Nil(t, rs[0].Packed, "nothing of the reply is served")
		require.Equal(t, 1.0, testutil.ToFloat64(f.scraper.metrics.repliesRejected.WithLabelValues("labels_per_series")))
		rej, ok := f.scraper.LastRejection(a.ID)
		require.True(t, ok)
		require.Equal(t, "labels_per_series", rej.Reason)

		go func() { <-m.Outbox(); m.Deliver(reply(t, 1)) }()
		rs = f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{})
		require.True(t, rs[0].Up())
		_, ok = f.scraper.LastRejection(a.ID)
		require.False(t, ok, "an accepted reply clears the rejection")
	})
}

// Samples with times no agent can mean are left out of the answer and
// counted; the rest of the reply is kept.
func TestOutOfRangeTimesAreDroppedAndCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		m := f.agent(t, "p")
		now := time.Now()
		raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Timestamp: timestamppb.New(now), Metrics: []*fodcv1.Metric{
			{Name: "ok", Value: 1},
			{Name: "year_0", Value: 2, Timestamp: &timestamppb.Timestamp{Seconds: -62167219200}},
			{Name: "year_10000", Value: 3, Timestamp: &timestamppb.Timestamp{Seconds: 253402300800}},
			{Name: "wraps", Value: 4, Timestamp: &timestamppb.Timestamp{Seconds: 1 << 62}},
			{Name: "tomorrow", Value: 5, Timestamp: timestamppb.New(now.Add(23 * time.Hour))},
		}})
		require.NoError(t, err)
		go func() { <-m.Outbox(); m.Deliver(&series.RawMetrics{Bytes: raw}) }()
		rs := f.scraper.Scrape(t.Context(), registry.Filter{}, series.Window{Start: now.Add(-time.Hour)})
		require.Len(t, rs, 1)
		require.True(t, rs[0].Up())
		var names []string
		for _, s := range rs[0].Batch.Series {
			names = append(names, s.Name)
		}
		require.Equal(t, []string{"ok", "tomorrow"}, names)
		require.Equal(t, 3.0, testutil.ToFloat64(f.scraper.metrics.rejected.WithLabelValues(reasonTimestamp)))
	})
}
