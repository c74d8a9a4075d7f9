// Package configsource answers the proxy's configuration commands for the
// agent: each answer is a fresh nodeconfig.Collect report, but a caller
// waits for one at most a timeout, and concurrent callers share the one
// collection that is running.
package configsource

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
)

// Source answers the proxy's configuration commands with a fresh
// nodeconfig.Collect, bounded by a timeout.
//
// Collect's HTTP request honours its context, but its reads of /proc and
// the cgroup files cannot be interrupted (reading a process's cmdline can
// block while that process is stuck in the kernel). So each collection
// runs in a goroutine of its own, and a caller waits at most the timeout:
// then it gets a report that says so, with the agent's own parameters.
// While a collection is running no other is started; callers share it.
// Close stops waiting for the collection goroutine after a grace period.
//
// A Source is safe for concurrent use.
type Source struct {
	opts    nodeconfig.Options
	timeout time.Duration
	logger  *slog.Logger

	ctx    context.Context // ends on close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the collection goroutine

	mu      sync.Mutex  // guards running
	running *collection // nil when no collection is running
}

// collection is one run of Collect; report is set before done is closed.
type collection struct {
	done   chan struct{}
	report *fodcv1.ExtNodeConfigRequest
}

// New returns a Source that collects with opts and waits at most timeout
// for a collection; a nil logger discards. opts.AgentParams should already
// be redacted where Collect cannot see a secret by its name.
func New(opts nodeconfig.Options, timeout time.Duration, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Source{opts: opts, timeout: timeout, logger: logger, ctx: ctx, cancel: cancel}
}

// Get returns a report collected after the call started, or, when that
// takes longer than the timeout or ctx ends first, a report of the agent's
// own parameters with an error that says why the rest is missing.
func (s *Source) Get(ctx context.Context) *fodcv1.ExtNodeConfigRequest {
	s.mu.Lock()
	c := s.running
	if c == nil {
		c = &collection{done: make(chan struct{})}
		s.running = c
		cctx, cancel := context.WithTimeout(s.ctx, s.timeout)
		s.wg.Go(func() {
			defer cancel()
			c.report = nodeconfig.Collect(cctx, s.opts)
			s.mu.Lock()
			s.running = nil
			s.mu.Unlock()
			close(c.done)
		})
	}
	s.mu.Unlock()

	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return c.report
	case <-t.C:
		s.logger.Warn("Node configuration collection is slow; reporting without it", "timeout", s.timeout.String())
		return s.partial(fmt.Sprintf("collection of the node's configuration did not finish within %s", s.timeout))
	case <-ctx.Done():
		return s.partial(fmt.Sprintf("collection of the node's configuration abandoned: %v", ctx.Err()))
	}
}

// partial is a report of the agent's parameters and one error.
func (s *Source) partial(msg string) *fodcv1.ExtNodeConfigRequest {
	// Without a source of the node's configuration Collect does no I/O:
	// it only redacts and converts the agent's parameters.
	r := nodeconfig.Collect(context.Background(), nodeconfig.Options{AgentParams: s.opts.AgentParams})
	return &fodcv1.ExtNodeConfigRequest{
		CollectedAt: timestamppb.Now(),
		AgentParams: r.GetAgentParams(),
		Errors:      []string{msg},
	}
}

// Close cancels a running collection and waits up to grace for it to end.
// Call it once no Get is running.
func (s *Source) Close(grace time.Duration) {
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		// Only a read blocked in the kernel gets here; it ends when the
		// process does.
		s.logger.Warn("Node configuration read still blocked at shutdown; not waiting for it", "grace", grace.String())
	}
}
