package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
)

// flagNodeCmdline is the flag whose value is a whole command line; its
// secrets are redacted word by word before it is reported.
const flagNodeCmdline = "node-cmdline"

// FlagParams returns the current value of every flag of fs, name -> values
// (one per element for slice and array flags), for the agent_params of the
// configuration report. --help and --version are not configuration and are
// left out. The values are not redacted: New does that.
func FlagParams(fs *pflag.FlagSet) map[string][]string {
	out := make(map[string][]string)
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "help", "version":
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			out[f.Name] = sv.GetSlice()
			return
		}
		out[f.Name] = []string{f.Value.String()}
	})
	return out
}

// Params returns c as the agent's flags would show it: FlagParams of a flag
// set bound to a copy of c. It lacks flags that are not part of Config
// (logging); main passes the full set with WithAgentParams.
func (c *Config) Params() map[string][]string {
	cp := *c
	cp.NodeLabels = maps.Clone(c.NodeLabels)
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	cp.RegisterFlags(fs)
	return FlagParams(fs)
}

// redactAgentParams returns a copy of params whose --node-cmdline value has
// the secrets of its words redacted (nodeconfig.RedactArgv); an unreadable
// line is redacted whole. nodeconfig.Collect redacts the rest by name.
func redactAgentParams(params map[string][]string) map[string][]string {
	out := maps.Clone(params)
	if vs, ok := out[flagNodeCmdline]; ok {
		red := make([]string, len(vs))
		for i, v := range vs {
			words, err := nodeconfig.SplitShell(v)
			if err != nil {
				red[i] = nodeconfig.Redacted
				continue
			}
			red[i] = nodeconfig.QuoteShell(nodeconfig.RedactArgv(words))
		}
		out[flagNodeCmdline] = red
	}
	return out
}

// nodeConfigSource answers the proxy's configuration commands with a fresh
// nodeconfig.Collect, bounded by a timeout.
//
// Collect's HTTP request honours its context, but its reads of /proc and
// the cgroup files cannot be interrupted (reading a process's cmdline can
// block while that process is stuck in the kernel). So each collection
// runs in a goroutine of its own, and a caller waits at most the timeout:
// then it gets a report that says so, with the agent's own parameters.
// While a collection is running no other is started; callers share it.
// close stops waiting for the collection goroutine after a grace period.
//
// A nodeConfigSource is safe for concurrent use.
type nodeConfigSource struct {
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

func newNodeConfigSource(cfg *Config, agentParams map[string][]string, logger *slog.Logger) *nodeConfigSource {
	o := nodeconfig.Options{
		PID:         cfg.NodePID,
		CgroupRoot:  cfg.NodeCgroupRoot,
		Cmdline:     cfg.NodeCmdline,
		AgentParams: redactAgentParams(agentParams),
		HTTPClient: &http.Client{
			Timeout: cfg.NodeConfigTimeout,
			// No Proxy: the node is local, HTTP_PROXY must not apply. No
			// idle connections: collections are rare.
			Transport: &http.Transport{DisableKeepAlives: true},
		},
	}
	if cfg.NodePprofAddr != "" {
		o.PprofURL, _ = cfg.pprofURL() // Validate has passed
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &nodeConfigSource{opts: o, timeout: cfg.NodeConfigTimeout, logger: logger, ctx: ctx, cancel: cancel}
}

// Get returns a report collected after the call started, or, when that
// takes longer than the timeout or ctx ends first, a report of the agent's
// own parameters with an error that says why the rest is missing.
func (s *nodeConfigSource) Get(ctx context.Context) *fodcv1.ExtNodeConfigRequest {
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
func (s *nodeConfigSource) partial(msg string) *fodcv1.ExtNodeConfigRequest {
	// Without a source of the node's configuration Collect does no I/O:
	// it only redacts and converts the agent's parameters.
	r := nodeconfig.Collect(context.Background(), nodeconfig.Options{AgentParams: s.opts.AgentParams})
	return &fodcv1.ExtNodeConfigRequest{
		CollectedAt: timestamppb.Now(),
		AgentParams: r.GetAgentParams(),
		Errors:      []string{msg},
	}
}

// close cancels a running collection and waits up to grace for it to end.
// Call it once no Get is running.
func (s *nodeConfigSource) close(grace time.Duration) {
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
