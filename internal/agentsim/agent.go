package agentsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultReconnectInterval = 5 * time.Second
	DefaultCloseGrace        = time.Second
)

const (
	// maxMsgSize is the HEAD agent's fixed per-call send and receive limit.
	maxMsgSize = 32 << 20
	// defaultSyntheticSeries is the size of the generator used when
	// Config.Metrics is nil.
	defaultSyntheticSeries = 32
)

// Config describes one simulated agent. Only ProxyAddr and Register are
// required. The callbacks are called from the stream goroutines: each one is
// called by one goroutine at a time, but different callbacks run concurrently.
// Messages they return are only read, never modified, and may be shared.
type Config struct {
	// ProxyAddr is the proxy's gRPC address, host:port.
	ProxyAddr string
	// Release selects the upstream release imitated, and with it the set
	// of streams (default protocol.ReleaseHEAD).
	Release protocol.Release
	// NoLifecycle imitates --lifecycle-port 0: StreamLifecycle and, on HEAD,
	// StreamSchemaRegistry are not opened.
	NoLifecycle bool
	// NoPressureProfiles imitates --pressure-profiler-enabled=false on HEAD:
	// StreamPressureProfiles is not opened.
	NoPressureProfiles bool
	// Register is sent to register and is re-sent unchanged as every
	// heartbeat. New keeps a copy.
	Register *fodcv1.RegisterAgentRequest
	// HeartbeatInterval is used when the proxy returns
	// heartbeat_interval_seconds <= 0 (default 10s).
	HeartbeatInterval time.Duration
	// ReconnectInterval is the wait between failed connection attempts
	// (default 5s). The first attempt after a lost session is immediate.
	ReconnectInterval time.Duration
	// NoReconnect makes Run return the error that ended the first session
	// instead of reconnecting.
	NoReconnect bool
	// CloseGrace is how long teardown waits, after half-closing every
	// stream, for the proxy to end them before the connection is closed
	// (default 1s). Negative closes at once, as the upstream agent does; the
	// proxy may then see Canceled instead of io.EOF.
	CloseGrace time.Duration
	// Metrics answers a metrics command (empty: latest; start/end set:
	// window). Returning nil sends an empty reply, since the agent always
	// sends exactly one. Nil: a synthetic generator for Register's pod and
	// role.
	Metrics func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest
	// Topology answers request_topology=true. Nil, or a nil return: an
	// empty topology.
	Topology func() *fodcv1.StreamClusterTopologyRequest
	// Lifecycle answers request_lifecycle=true. Nil: an empty but present
	// lifecycle_data. Returning nil sends nothing, which is how the upstream
	// agent fails (PROTOCOL.md §3.4).
	Lifecycle func() *fodcv1.StreamLifecycleRequest
	// SchemaRegistry returns the chunks that answer request_registry=true;
	// the agent appends {done: true}. Nil: only the done message.
	SchemaRegistry func() []*fodcv1.StreamSchemaRegistryRequest
	// Crash returns one message per stored crash record; no terminator is
	// sent, so zero records means no reply at all. Nil: no records.
	Crash func() []*fodcv1.StreamCrashDiagnosticsRequest
	// PressureRecords returns the records sent before list_complete. Nil:
	// no records.
	PressureRecords func() []*fodcv1.PressureProfileRecord
	// PressureFile returns the content of a profile for a fetch; an error
	// is sent as an error chunk with last=true. Nil: every fetch fails.
	PressureFile func(profileID, typ string) ([]byte, error)
	// ReplyDelay, when set, returns how long to wait before answering each
	// command on the stream of the given kind.
	ReplyDelay func(kind protocol.Kind) time.Duration
	// Logger receives the agent's logs (default: discarded).
	Logger *slog.Logger
}

// Agent is one simulated upstream agent. Its methods are safe for concurrent
// use; Run may be called only once.
type Agent struct {
	cfg    Config
	logger *slog.Logger

	started    atomic.Bool
	reconnects atomic.Int64

	mu         sync.Mutex // guards the fields below
	agentID    string
	ids        []string      // agent ids of all successful registrations, in order
	heartbeats int           // sent successfully
	changed    chan struct{} // closed and replaced on every registration, command and heartbeat
	commands   map[protocol.Kind]int
	hung       map[protocol.Kind]bool
	lastErr    error
	hbInterval time.Duration // negotiated in the current or last session
}

// New validates cfg, applies the defaults and returns an Agent that has not
// connected yet.
func New(cfg Config) (*Agent, error) {
	if cfg.ProxyAddr == "" {
		return nil, errors.New("proxy address is empty")
	}
	if cfg.Register == nil {
		return nil, errors.New("registration request is nil")
	}
	switch cfg.Release {
	case protocol.ReleaseHEAD, protocol.ReleaseV0103, protocol.ReleaseV0100:
	default:
		return nil, fmt.Errorf("unknown agent version %d", int(cfg.Release))
	}
	cfg.Register = proto.CloneOf(cfg.Register)
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = DefaultReconnectInterval
	}
	if cfg.CloseGrace == 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = newSynthetic(syntheticOptions{
			pod:        cfg.Register.GetPodName(),
			role:       cfg.Register.GetNodeRole(),
			container:  firstOrEmpty(cfg.Register.GetContainerNames()),
			nodeLabels: headNodeLabels(cfg.Release, cfg.Register.GetLabels()),
			typed:      cfg.Release.Typed(),
			series:     defaultSyntheticSeries,
			seed:       1,
		}).reply
	}
	return &Agent{
		cfg:      cfg,
		logger:   cfg.Logger.With("component", "agentsim", "pod_name", cfg.Register.GetPodName()),
		changed:  make(chan struct{}),
		commands: make(map[protocol.Kind]int),
		hung:     make(map[protocol.Kind]bool),
	}, nil
}

func firstOrEmpty(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// headNodeLabels returns the node labels a HEAD agent stamps on its series
// as node_<k>; older agents stamp none.
func headNodeLabels(r protocol.Release, labels map[string]string) map[string]string {
	if r != protocol.ReleaseHEAD {
		return nil
	}
	return labels
}

// Streams returns the kinds of the streams the agent opens after
// registering, in opening order: those of its release, less the ones that
// Config.NoLifecycle and Config.NoPressureProfiles switch off.
func (a *Agent) Streams() []protocol.Kind {
	var out []protocol.Kind
	for _, k := range a.cfg.Release.Streams() {
		switch {
		case a.cfg.NoLifecycle && (k == protocol.KindLifecycle || k == protocol.KindSchemaRegistry):
		case a.cfg.NoPressureProfiles && k == protocol.KindPressure:
		default:
			out = append(out, k)
		}
	}
	return out
}

// Run connects, registers and serves commands until ctx is cancelled,
// reconnecting after every lost session unless Config.NoReconnect is set.
// On cancellation it half-closes every stream, closes the connection and
// returns nil once all its goroutines have stopped.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent already running")
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			a.reconnects.Add(1)
		}
		established, err := a.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.mu.Lock()
		a.lastErr = err
		a.mu.Unlock()
		if a.cfg.NoReconnect {
			return err
		}
		if established {
			// Upstream reconnects at once after losing a session.
			a.logger.Info("Session lost, reconnecting", "err", err)
			continue
		}
		a.logger.Warn("Connection attempt failed, retrying", "err", err, "retry_in", a.cfg.ReconnectInterval)
		t := time.NewTimer(a.cfg.ReconnectInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// AgentID returns the id of the current registration, or "" while the agent
// is not registered.
func (a *Agent) AgentID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agentID
}

// WaitRegistered blocks until the agent has registered successfully n times
// (n >= 1) and returns the agent id of the n-th registration. A registration
// counts when its reply arrives; the other streams are opened right after,
// so the proxy may not have seen them yet when WaitRegistered returns.
func (a *Agent) WaitRegistered(ctx context.Context, n int) (string, error) {
	if n < 1 {
		return "", fmt.Errorf("registration number %d out of range", n)
	}
	if err := a.waitUntil(ctx, func() bool { return len(a.ids) >= n }); err != nil {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ids[n-1], nil
}

// WaitCommands blocks until the agent has read at least n commands on the
// stream of the given kind (counted as by Commands), or ctx ends.
func (a *Agent) WaitCommands(ctx context.Context, kind protocol.Kind, n int) error {
	return a.waitUntil(ctx, func() bool { return a.commands[kind] >= n })
}

// WaitHeartbeats blocks until the agent has sent at least n heartbeats, or
// ctx ends.
func (a *Agent) WaitHeartbeats(ctx context.Context, n int) error {
	return a.waitUntil(ctx, func() bool { return a.heartbeats >= n })
}

// waitUntil blocks until cond, called with a.mu held, holds; it is checked
// now and after every change.
func (a *Agent) waitUntil(ctx context.Context, cond func() bool) error {
	a.mu.Lock()
	for !cond() {
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		a.mu.Lock()
	}
	a.mu.Unlock()
	return nil
}

// changedLocked wakes waitUntil; a.mu must be held.
func (a *Agent) changedLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Registrations returns the number of successful registrations.
func (a *Agent) Registrations() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

// Reconnects returns the number of connection attempts made after the first.
func (a *Agent) Reconnects() int { return int(a.reconnects.Load()) }

// Commands returns how many commands the agent has read on the stream of
// the given kind, across all sessions, hung ones included. On
// protocol.KindRegister it counts responses after the first of each session.
func (a *Agent) Commands(kind protocol.Kind) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.commands[kind]
}

// Heartbeats returns the number of heartbeats sent successfully.
func (a *Agent) Heartbeats() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heartbeats
}

// heartbeatSent counts a heartbeat sent.
func (a *Agent) heartbeatSent() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heartbeats++
	a.changedLocked()
}

// SetHang makes the agent read the commands of the stream of the given kind
// and never answer them (hang=true), or answer them again (hang=false).
// Commands read while hung are dropped, not answered later.
func (a *Agent) SetHang(kind protocol.Kind, hang bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hung[kind] = hang
}

// LastStreamError returns the error that ended the most recent session or
// connection attempt, or nil if none has ended yet.
func (a *Agent) LastStreamError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// command counts a command on the stream of kind and reports whether to
// answer it.
func (a *Agent) command(kind protocol.Kind) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.commands[kind]++
	a.changedLocked()
	return !a.hung[kind]
}

func (a *Agent) setRegistered(id string, interval time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.agentID = id
	a.hbInterval = interval
	a.ids = append(a.ids, id)
	a.changedLocked()
}

func (a *Agent) setUnregistered() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.agentID = ""
}

// heartbeatInterval returns the interval negotiated at the last registration.
func (a *Agent) heartbeatInterval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hbInterval
}
