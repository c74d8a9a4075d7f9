package cluster

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newViews builds Views over e with the proxy's default timeouts where
// opts leaves them zero.
func newViews(t *testing.T, e *proxytest.Env, opts Options) *Views {
	t.Helper()
	opts.Registry = e.Registry
	opts.Streams = e.Streams
	opts.TopologyTimeout = cmp.Or(opts.TopologyTimeout, 5*time.Second)
	opts.LifecycleTimeout = cmp.Or(opts.LifecycleTimeout, 50*time.Second)
	opts.FailedAgentWait = cmp.Or(opts.FailedAgentWait, time.Second)
	opts.RegistryTimeout = cmp.Or(opts.RegistryTimeout, 50*time.Second)
	opts.ConfigTimeout = cmp.Or(opts.ConfigTimeout, 5*time.Second)
	opts.ConfigCacheTTL = cmp.Or(opts.ConfigCacheTTL, 15*time.Second)
	c, err := New(opts, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	return c
}

func data(pod string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod}
}

// Concurrent callers share one topology collection: the agent is asked once.
func TestTopologyCallersShareOneCollection(t *testing.T) {
	e := proxytest.Start(t, nil, agentsvc.Options{}, streams.Limits{})
	a, _ := e.StartAgent(t, agentsim.Config{Register: data("data-0"),
		ReplyDelay: func(protocol.Kind) time.Duration { return 200 * time.Millisecond }}, protocol.KindTopology)
	c := newViews(t, e, Options{})
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			_, err := c.Topology(context.Background())
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.Equal(t, 1, a.Commands(protocol.KindTopology))
}

// A caller that gives up does not cancel the collection for the others.
func TestTopologyCallerGivingUpDoesNotCancelOthers(t *testing.T) {
	e := proxytest.Start(t, nil, agentsvc.Options{}, streams.Limits{})
	e.StartAgent(t, agentsim.Config{Register: data("data-0"),
		ReplyDelay: func(protocol.Kind) time.Duration { return 200 * time.Millisecond }}, protocol.KindTopology)
	c := newViews(t, e, Options{})
	impatient, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.Topology(impatient); done <- err }()
	patient := make(chan int, 1)
	go func() {
		m, err := c.Topology(context.Background())
		require.NoError(t, err)
		patient <- len(m.Status)
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	// The agentsim topology is empty but its pod is registered: no node, so
	// no status; what matters is that the patient caller got an answer.
	require.Equal(t, 0, <-patient)
}

// An agent whose lifecycle collection failed is waited for only briefly in
// the next round (it answers that round too late to be counted), and is
// waited for normally again once it has answered.
func TestLifecycleFailedAgentIsNotWaitedForAgain(t *testing.T) {
	e := proxytest.Start(t, nil, agentsvc.Options{}, streams.Limits{})
	var mu sync.Mutex
	calls := 0
	flaky, _ := e.StartAgent(t, agentsim.Config{Register: data("data-flaky"),
		// The first collection fails (nothing is sent); later ones answer
		// after 100ms.
		Lifecycle: func() *fodcv1.StreamLifecycleRequest {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				return nil
			}
			return &fodcv1.StreamLifecycleRequest{PodName: "data-flaky"}
		},
		ReplyDelay: func(kind protocol.Kind) time.Duration {
			if kind == protocol.KindLifecycle {
				return 100 * time.Millisecond
			}
			return 0
		}}, protocol.KindLifecycle)
	e.StartAgent(t, agentsim.Config{Register: data("data-ok")}, protocol.KindLifecycle)
	c := newViews(t, e, Options{LifecycleTimeout: 400 * time.Millisecond, FailedAgentWait: time.Millisecond})

	first, err := c.Lifecycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, first.Summary.NotResponded)

	// Its command is still unanswered after the lifecycle timeout: the next
	// round asks again but waits only FailedAgentWait, shorter than the
	// agent's 100ms answer.
	ls, ok := e.Streams.Lifecycle(podID(t, e, "data-flaky"))
	require.True(t, ok)
	since, pending := ls.Pending()
	require.True(t, pending)
	require.Eventually(t, func() bool { return time.Since(since) > 400*time.Millisecond }, proxytest.Wait, time.Millisecond)
	second, err := c.Lifecycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, second.Summary.NotResponded, "the failed agent was not waited for")
	require.Equal(t, 2, flaky.Commands(protocol.KindLifecycle), "one command per round")

	// Its late answer cleared the failure: the third round waits for it.
	require.Eventually(t, func() bool { _, pending := ls.Pending(); return !pending }, proxytest.Wait, time.Millisecond)
	third, err := c.Lifecycle(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2, third.Summary.Responded)
}

func podID(t *testing.T, e *proxytest.Env, pod string) string {
	t.Helper()
	for _, a := range e.Registry.List(registryFilterPod(pod)) {
		return a.ID
	}
	t.Fatalf("pod %s not registered", pod)
	return ""
}

func registryFilterPod(pod string) registry.Filter { return registry.Filter{PodName: pod} }
