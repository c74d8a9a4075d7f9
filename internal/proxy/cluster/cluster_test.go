package cluster

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
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
// waited for normally again once it has answered. The agents are played
// through their stream handles, so the rounds run on synctest's clock and
// the margins are exact.
func TestLifecycleFailedAgentIsNotWaitedForAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10},
			slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		require.NoError(t, err)
		table := streams.NewTable(streams.Limits{SendQueueLen: 8, MaxPending: 8})
		// lifecycleAgent registers pod and answers its n-th lifecycle
		// command with answer(n) after delay, or never when answer is nil.
		lifecycleAgent := func(pod string, delay time.Duration, answer func(n int) bool) (*streams.Lifecycle, *atomic.Int32) {
			a, err := reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: pod})
			require.NoError(t, err)
			ls, err := table.OpenLifecycle(a.ID)
			require.NoError(t, err)
			t.Cleanup(func() { ls.Close(nil) })
			commands := new(atomic.Int32)
			go func() {
				for {
					select {
					case <-ls.Outbox():
						if !answer(int(commands.Add(1))) {
							continue
						}
						time.Sleep(delay)
						ls.Receive(&fodcv1.StreamLifecycleRequest{PodName: pod})
					case <-ls.Done():
						return
					}
				}
			}()
			return ls, commands
		}
		// The flaky agent's first collection fails (nothing is sent);
		// later ones answer after 100ms.
		flaky, flakyCommands := lifecycleAgent("data-flaky", 100*time.Millisecond, func(n int) bool { return n > 1 })
		lifecycleAgent("data-ok", 0, func(int) bool { return true })
		c, err := New(Options{
			Registry: reg, Streams: table,
			TopologyTimeout: 5 * time.Second, LifecycleTimeout: 400 * time.Millisecond, FailedAgentWait: time.Millisecond,
			RegistryTimeout: 50 * time.Second, ConfigTimeout: 5 * time.Second, ConfigCacheTTL: 15 * time.Second,
		}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		require.NoError(t, err)

		first, err := c.Lifecycle(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, first.Summary.NotResponded)

		// Its command is still unanswered after the lifecycle timeout: the
		// next round asks again but waits only FailedAgentWait, shorter than
		// the agent's 100ms answer.
		_, pending := flaky.Pending()
		require.True(t, pending)
		time.Sleep(time.Millisecond) // the pending command is now older than the timeout
		second, err := c.Lifecycle(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, second.Summary.NotResponded, "the failed agent was not waited for")
		require.EqualValues(t, 2, flakyCommands.Load(), "one command per round")

		// Its late answer cleared the failure: the third round waits for it.
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		_, pending = flaky.Pending()
		require.False(t, pending)
		third, err := c.Lifecycle(t.Context())
		require.NoError(t, err)
		require.Equal(t, 2, third.Summary.Responded)
	})
}
