// Package uplink is the agent's client of the FODC proxy: it registers the
// node, heartbeats, and answers the proxy's metrics and topology commands.
//
// One Client runs one connection at a time: an agentconn session set up for
// our agent (registration timeout, a stream answered Unimplemented is
// switched off, commands read ahead up to a bound). A session creates a
// gRPC ClientConn, opens RegisterAgent, sends the registration and waits for
// the reply (success and a non-empty agent_id), adopts the proxy's
// heartbeat interval, and opens StreamMetrics, StreamClusterTopology and,
// when Options.NodeConfig is set, ExtStreamNodeConfig (an extension of this
// project) with the gRPC metadata agent_id. Every stream has a receiver
// goroutine and a sender goroutine, the only caller of Send and CloseSend on
// that stream; commands are answered exactly once each, in order.
// Heartbeats are the registration request re-sent, with the current
// identity, on the registration stream. The proxy never acknowledges them,
// so every heartbeat is followed by a liveness probe, a small RPC with the
// heartbeat interval as deadline; two unanswered probes in a row end the
// session, so a proxy that vanished without closing the connection is left
// within about two heartbeat intervals.
//
// A stream the proxy does not implement (codes.Unimplemented on its first
// Recv, e.g. topology against an old proxy, or the configuration extension
// against an upstream proxy) is switched off for that connection. Any other
// stream error, or the end of the registration stream, ends the session:
// every stream is half-closed, the connection closed, and the Client
// connects again. A session that stayed healthy is followed by a prompt
// retry; failed attempts wait a capped exponential backoff with jitter,
// reset after the next healthy session.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultHeartbeatInterval    = 10 * time.Second
	DefaultReconnectInterval    = 5 * time.Second
	DefaultReconnectMaxInterval = time.Minute
	DefaultHealthyAfter         = 30 * time.Second
	DefaultRegisterTimeout      = 30 * time.Second
	DefaultCloseGrace           = 500 * time.Millisecond
)

// MaxMsgSize is the per-call send and receive limit, like the upstream
// HEAD agent's: a metrics reply is one message holding every sample.
const MaxMsgSize = 32 << 20

// Source answers metrics commands; *recorder.Recorder is one. Metrics it
// returns become the Client's; their Labels maps are never modified.
type Source interface {
	// Latest returns the current value of every current series.
	Latest() []*fodcv1.Metric
	// Window returns every sample with start <= t <= end; a bound whose
	// has flag is false is open.
	Window(start, end time.Time, hasStart, hasEnd bool) []*fodcv1.Metric
}

// Options configures a Client.
type Options struct {
	// ProxyAddr is the proxy's gRPC address, host:port. Required.
	ProxyAddr string
	// Identity returns the node's current identity; it is called for the
	// registration, every heartbeat and every reply. Required.
	Identity func() Identity
	// Source answers metrics commands. Required.
	Source Source
	// NodeConfig, when set, answers configuration commands on the
	// ExtStreamNodeConfig extension stream with a fresh report of the
	// node's configuration; nil leaves that stream unopened. It is called
	// from one goroutine per session, once per command, and must return
	// promptly: ctx ends when the session is torn down, and a slow report
	// delays the next one. A nil report is sent as an empty one, so that
	// every command still gets exactly one reply.
	NodeConfig func(ctx context.Context) *fodcv1.ExtNodeConfigRequest
	// Profiles, when set, answers on-demand profile commands on the
	// ExtStreamProfiles extension stream: it sends an acceptance or a
	// refusal, then the profile's chunks. nil leaves that stream
	// unopened. It runs on the stream's sender, one command at a time.
	Profiles func(ctx context.Context, cmd *fodcv1.ExtProfileCommand, send func(*fodcv1.ExtProfileRequest) error)
	// Lifecycle, SchemaRegistry, Crash and Pressure, when set, answer the
	// upstream streams of the same names (see streams.go); nil leaves a
	// stream unopened.
	Lifecycle      func(ctx context.Context) (*fodcv1.LifecycleData, error)
	SchemaRegistry func(ctx context.Context) ([]*fodcv1.SchemaRegistryGroup, error)
	Crash          func() []*fodcv1.StreamCrashDiagnosticsRequest
	Pressure       PressureSource
	// HeartbeatInterval is used until the proxy returns one.
	HeartbeatInterval time.Duration
	// ReconnectInterval is the first wait after a failed attempt; waits
	// double up to ReconnectMaxInterval.
	ReconnectInterval    time.Duration
	ReconnectMaxInterval time.Duration
	// HealthyAfter is how long a session must last to count as healthy
	// when no heartbeat was sent in it.
	HealthyAfter time.Duration
	// RegisterTimeout bounds the wait for the registration reply.
	RegisterTimeout time.Duration
	// CloseGrace is how long teardown waits, after half-closing every
	// stream, for the proxy to end them before closing the connection.
	CloseGrace time.Duration
	// DialOptions are added to the Client's own (tests use a dialer).
	DialOptions []grpc.DialOption
	// Now is the clock (default time.Now).
	Now func() time.Time
	// After waits between attempts (default time.After); tests inject a
	// fake to observe the backoff without waiting.
	After      func(time.Duration) <-chan time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Status is a snapshot of the Client's state.
type Status struct {
	// Connected reports a live registration.
	Connected bool
	// AgentID is the id of the live registration, else "".
	AgentID string
	// Registrations counts successful registrations.
	Registrations int
	// Attempts counts connection attempts.
	Attempts int
	// Heartbeats counts heartbeats sent.
	Heartbeats int
	// Probes counts liveness probes after heartbeats; ProbeFailures those
	// the proxy did not answer in time.
	Probes        int
	ProbeFailures int
	// Unimplemented lists the kinds (protocol.Kind names) of the streams
	// switched off in the live session.
	Unimplemented []string
	// LastError is the error that ended the last session or attempt.
	LastError string
}

// Client is the proxy client. Its methods are safe for concurrent use; Run
// may be called only once.
type Client struct {
	opts   Options
	logger *slog.Logger
	m      *metrics

	mu      sync.Mutex // guards the fields below
	running bool
	st      Status
	changed chan struct{} // closed and replaced on every change of st
}

// New validates opts, applies defaults and returns a Client that has not
// connected yet.
func New(opts Options) (*Client, error) {
	var errs []error
	if opts.ProxyAddr == "" {
		errs = append(errs, errors.New("uplink: proxy address is empty"))
	}
	if opts.Identity == nil {
		errs = append(errs, errors.New("uplink: identity is nil"))
	}
	if opts.Source == nil {
		errs = append(errs, errors.New("uplink: metrics source is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&opts.ReconnectInterval, DefaultReconnectInterval)
	def(&opts.ReconnectMaxInterval, DefaultReconnectMaxInterval)
	def(&opts.HealthyAfter, DefaultHealthyAfter)
	def(&opts.RegisterTimeout, DefaultRegisterTimeout)
	def(&opts.CloseGrace, DefaultCloseGrace)
	opts.ReconnectMaxInterval = max(opts.ReconnectMaxInterval, opts.ReconnectInterval)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		opts:    opts,
		logger:  opts.Logger.With("component", "uplink"),
		m:       newMetrics(opts.Registerer),
		changed: make(chan struct{}),
	}, nil
}

// Run connects, registers and serves commands until ctx is cancelled,
// reconnecting after every lost session. On cancellation it half-closes
// every stream, closes the connection and returns nil once all its
// goroutines have stopped.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("uplink: already running")
	}
	c.running = true
	c.mu.Unlock()

	bo := backoff{initial: c.opts.ReconnectInterval, max: c.opts.ReconnectMaxInterval}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.m.reconnects.Inc()
		}
		c.update(func(st *Status) { st.Attempts++ })
		healthy, err := c.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.update(func(st *Status) { st.LastError = err.Error() })
		if healthy {
			// A healthy session was lost (e.g. the proxy restarted): retry
			// at once, and back off from the start if that fails.
			bo.reset()
			c.logger.Info("Connection to proxy lost, reconnecting", "err", err)
			continue
		}
		wait := bo.next()
		c.logger.Warn("Connection to proxy failed, retrying", "err", err, "retry_in", wait.String(), "proxy_addr", c.opts.ProxyAddr)
		select {
		case <-ctx.Done():
			return nil
		case <-c.opts.After(wait):
		}
	}
}

// Status returns a snapshot of the Client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Unimplemented = slices.Clone(st.Unimplemented)
	return st
}

// WaitRegistered blocks until the Client has registered n times (n >= 1)
// or ctx ends.
func (c *Client) WaitRegistered(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("uplink: registration number %d out of range", n)
	}
	return c.WaitStatus(ctx, func(st Status) bool { return st.Registrations >= n })
}

// WaitStatus blocks until cond holds for the Client's status, checked now
// and after every change, or ctx ends. cond runs with the Client locked and
// must not call its methods.
func (c *Client) WaitStatus(ctx context.Context, cond func(Status) bool) error {
	c.mu.Lock()
	for !cond(c.st) {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return nil
}

// update changes the status (and the metrics that mirror it) under the
// lock and wakes WaitStatus.
func (c *Client) update(f func(*Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.st)
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) setRegistered(id string) {
	c.update(func(st *Status) {
		st.Connected = true
		st.AgentID = id
		st.Registrations++
		st.Unimplemented = nil
		c.m.connected.Set(1)
		c.m.registrations.Inc()
	})
}

func (c *Client) setUnregistered() {
	c.update(func(st *Status) {
		st.Connected = false
		st.AgentID = ""
		st.Unimplemented = nil
		c.m.connected.Set(0)
	})
}

func (c *Client) setUnimplemented(stream string) {
	c.update(func(st *Status) {
		st.Unimplemented = append(st.Unimplemented, stream)
		c.m.streamsDisabled.WithLabelValues(stream).Inc()
	})
}

func (c *Client) heartbeatSent() {
	c.update(func(st *Status) {
		st.Heartbeats++
		c.m.heartbeats.Inc()
	})
}

func (c *Client) probed(err error) {
	c.update(func(st *Status) {
		st.Probes++
		c.m.probes.Inc()
		if err != nil {
			st.ProbeFailures++
			c.m.probeFailures.Inc()
		}
	})
}
