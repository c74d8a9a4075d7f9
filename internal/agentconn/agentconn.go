// Package agentconn is one connection of an agent to a FODC proxy: it dials,
// registers on RegisterAgent, heartbeats on that stream, opens the per-kind
// command streams with the agent_id metadata (PROTOCOL.md §2.2–§2.5), runs
// one receiver and one sender goroutine per stream, and tears it all down.
//
// Our agent's proxy client (internal/agent/uplink) and the simulated
// upstream agent (internal/agentsim) both run their sessions here. What
// differs between them is configuration: which streams are opened, whether a
// registration reply is awaited forever (upstream) or for a bounded time,
// whether a stream the proxy answers Unimplemented is switched off (ours) or
// ends the session (upstream), how far a receiver may read ahead of its
// sender, and the hooks through which each counts what happened.
//
// Every stream has exactly one sender goroutine, the only caller of Send and
// CloseSend on it; it answers commands strictly in order through the
// stream's Handler. The receiver reads commands and hands them over. The
// first Recv error on any stream ends the session.
package agentconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
)

// SendCloseTimeout bounds how long teardown waits for the senders to
// half-close their streams. A sender can only be stuck in Send when the
// proxy stopped reading, and closing the connection unblocks it.
const SendCloseTimeout = time.Second

// ErrClosing is returned by a Handler's send function once the session is
// being torn down; the handler should return.
var ErrClosing = errors.New("agentconn: session closing")

// ProbeMisses is how many consecutive liveness probes may go unanswered
// before the session ends (Config.Probe).
const ProbeMisses = 2

// ErrProxyUnresponsive ends a session whose liveness probes went
// unanswered ProbeMisses times in a row.
var ErrProxyUnresponsive = errors.New("agentconn: proxy does not answer liveness probes")

// Handler answers one command of a stream. It runs on the stream's sender
// goroutine, one command at a time, in the order the commands arrived; it
// may call send any number of times (zero: no reply). ctx ends when the
// session starts its teardown.
type Handler[Cmd, Reply any] func(ctx context.Context, cmd *Cmd, send func(*Reply) error)

// Stream is one command stream to open after registration; build it with
// the constructor of its kind (Metrics, Topology, ...).
type Stream struct {
	kind  protocol.Kind
	start func(s *session, ctx context.Context, client fodcv1.FODCServiceClient) error
}

// Kind returns the stream's kind.
func (st Stream) Kind() protocol.Kind { return st.kind }

// rpc is the method of the generated client that opens a stream.
type rpc[Reply, Cmd any] func(fodcv1.FODCServiceClient, context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Reply, Cmd], error)

func newStream[Reply, Cmd any](kind protocol.Kind, open rpc[Reply, Cmd], h Handler[Cmd, Reply]) Stream {
	return Stream{kind: kind, start: func(s *session, ctx context.Context, client fodcv1.FODCServiceClient) error {
		st, err := open(client, ctx)
		if err != nil {
			return err
		}
		serve(s, kind, st, h)
		return nil
	}}
}

// Metrics is the StreamMetrics stream.
func Metrics(h Handler[fodcv1.StreamMetricsResponse, fodcv1.StreamMetricsRequest]) Stream {
	return newStream(protocol.KindMetrics, fodcv1.FODCServiceClient.StreamMetrics, h)
}

// Topology is the StreamClusterTopology stream.
func Topology(h Handler[fodcv1.StreamClusterTopologyResponse, fodcv1.StreamClusterTopologyRequest]) Stream {
	return newStream(protocol.KindTopology, fodcv1.FODCServiceClient.StreamClusterTopology, h)
}

// Lifecycle is the StreamLifecycle stream.
func Lifecycle(h Handler[fodcv1.StreamLifecycleResponse, fodcv1.StreamLifecycleRequest]) Stream {
	return newStream(protocol.KindLifecycle, fodcv1.FODCServiceClient.StreamLifecycle, h)
}

// SchemaRegistry is the StreamSchemaRegistry stream.
func SchemaRegistry(h Handler[fodcv1.StreamSchemaRegistryResponse, fodcv1.StreamSchemaRegistryRequest]) Stream {
	return newStream(protocol.KindSchemaRegistry, fodcv1.FODCServiceClient.StreamSchemaRegistry, h)
}

// Crash is the StreamCrashDiagnostics stream.
func Crash(h Handler[fodcv1.StreamCrashDiagnosticsResponse, fodcv1.StreamCrashDiagnosticsRequest]) Stream {
	return newStream(protocol.KindCrash, fodcv1.FODCServiceClient.StreamCrashDiagnostics, h)
}

// Pressure is the StreamPressureProfiles stream.
func Pressure(h Handler[fodcv1.StreamPressureProfilesResponse, fodcv1.StreamPressureProfilesRequest]) Stream {
	return newStream(protocol.KindPressure, fodcv1.FODCServiceClient.StreamPressureProfiles, h)
}

// NodeConfig is the ExtStreamNodeConfig extension stream of this project.
func NodeConfig(h Handler[fodcv1.ExtNodeConfigResponse, fodcv1.ExtNodeConfigRequest]) Stream {
	return newStream(protocol.KindNodeConfig, fodcv1.FODCServiceClient.ExtStreamNodeConfig, h)
}

// Profiles is the ExtStreamProfiles extension stream of this project.
func Profiles(h Handler[fodcv1.ExtProfileCommand, fodcv1.ExtProfileRequest]) Stream {
	return newStream(protocol.KindProfiles, fodcv1.FODCServiceClient.ExtStreamProfiles, h)
}

// Config describes one session. Addr, Register and HeartbeatInterval are
// required. The hooks are optional; they are called from the session's
// goroutines and must return promptly.
type Config struct {
	// Addr is the proxy's gRPC address, host:port.
	Addr string
	// DialOptions are added to insecure transport credentials.
	DialOptions []grpc.DialOption
	// Register returns the registration request. It is called for the
	// registration and again for every heartbeat; the messages are only
	// read.
	Register func() *fodcv1.RegisterAgentRequest
	// HeartbeatInterval is used when the proxy's reply carries none.
	HeartbeatInterval time.Duration
	// RegisterTimeout bounds the wait for the registration reply; 0 waits
	// until the stream or ctx ends, as the upstream agent does.
	RegisterTimeout time.Duration
	// Streams are opened, in order, once registered.
	Streams []Stream
	// ReadAhead is how many commands a receiver may read and queue while
	// its sender is still answering. 0 reads the next command only once
	// the previous one has been answered, as the upstream agent does.
	ReadAhead int
	// CloseGrace is how long teardown waits, after half-closing every
	// stream, for the proxy to end them before the connection is closed;
	// <= 0 closes at once (the proxy may then see Canceled, not io.EOF).
	CloseGrace time.Duration

	// Registered is called once the registration was accepted, with the
	// agent id and the heartbeat interval in force, before the streams
	// are opened.
	Registered func(agentID string, interval time.Duration)
	// Unregistered is called when a registered session ends, before its
	// teardown.
	Unregistered func()
	// Heartbeat is called after every heartbeat with the error of its
	// Send (nil: sent). A failed heartbeat does not end the session; the
	// registration stream's Recv decides.
	Heartbeat func(err error)
	// Command is called for every command read outside teardown, and for
	// every registration response after the first. For a command stream,
	// false drops the command unanswered.
	Command func(kind protocol.Kind) bool
	// Unimplemented, when set, switches a stream off for the session when
	// its first Recv fails with Unimplemented, and is told which; when
	// nil, that error ends the session like any other.
	Unimplemented func(kind protocol.Kind)
	// Probe, when true, checks after every heartbeat that the proxy is
	// still there (see probeLiveness) and ends the session with
	// ErrProxyUnresponsive when ProbeMisses probes in a row get no answer
	// within a heartbeat interval. The upstream agent has no such check.
	Probe bool
	// Probed is called after every liveness probe with nil when the proxy
	// answered, else the error that marks it as missed.
	Probed func(err error)
	// Logger receives debug logs of the session (default: discarded).
	Logger *slog.Logger
}

// Result tells how a session went.
type Result struct {
	// Established reports that the registration was accepted and every
	// stream of Config.Streams was opened.
	Established bool
}

// session is one connection: a ClientConn, its registration and the streams
// opened under one agent id. Run owns it and tears it down before
// returning.
type session struct {
	cfg    *Config
	logger *slog.Logger
	conn   *grpc.ClientConn

	// streamCtx is the context of every stream. It is not derived from
	// Run's ctx so that teardown can half-close the streams before the
	// connection goes; teardown cancels it last.
	streamCtx    context.Context
	cancelStream context.CancelFunc
	// handlerCtx is the Handlers' context; teardown cancels it first.
	handlerCtx     context.Context
	cancelHandlers context.CancelFunc

	sendWG  sync.WaitGroup // the sender goroutines
	recvWG  sync.WaitGroup // the receiver goroutines
	probeWG sync.WaitGroup // the liveness prober

	firstResp chan *fodcv1.RegisterAgentResponse // the registration reply; buffered 1
	hbStart   chan time.Duration                 // the heartbeat interval; buffered 1
	probeNow  chan struct{}                      // a heartbeat was sent; buffered 1
	closing   chan struct{}                      // closed when teardown starts

	mu     sync.Mutex    // guards the fields below
	err    error         // the first stream error
	failed chan struct{} // closed on the first stream error
	closed bool          // teardown has started
}

// Run makes one connection attempt and serves it until a stream fails or
// ctx is cancelled. The error says why the session ended (ctx.Err() on
// cancellation). Every goroutine of the session has stopped and the
// connection is closed when it returns.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	if cfg.Register == nil || cfg.HeartbeatInterval <= 0 {
		return res, errors.New("agentconn: Register and HeartbeatInterval are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Addr, dial...)
	if err != nil {
		return res, fmt.Errorf("create client connection to %s: %w", cfg.Addr, err)
	}
	streamCtx, cancelStream := context.WithCancel(context.Background())
	handlerCtx, cancelHandlers := context.WithCancel(ctx)
	s := &session{
		cfg:            &cfg,
		logger:         logger,
		conn:           conn,
		streamCtx:      streamCtx,
		cancelStream:   cancelStream,
		handlerCtx:     handlerCtx,
		cancelHandlers: cancelHandlers,
		firstResp:      make(chan *fodcv1.RegisterAgentResponse, 1),
		hbStart:        make(chan time.Duration, 1),
		probeNow:       make(chan struct{}, 1),
		closing:        make(chan struct{}),
		failed:         make(chan struct{}),
	}
	defer s.teardown()
	client := fodcv1.NewFODCServiceClient(conn)

	reg, err := client.RegisterAgent(streamCtx)
	if err != nil {
		return res, fmt.Errorf("open registration stream: %w", err)
	}
	s.serveRegistration(reg)
	var timeout <-chan time.Time
	if cfg.RegisterTimeout > 0 {
		t := time.NewTimer(cfg.RegisterTimeout)
		defer t.Stop()
		timeout = t.C
	}
	var resp *fodcv1.RegisterAgentResponse
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-timeout:
		return res, fmt.Errorf("no registration reply within %s", cfg.RegisterTimeout)
	case <-s.failed:
		// A rejecting proxy replies and then ends the stream; the receiver
		// hands over the reply before it reports the end, so prefer it.
		select {
		case resp = <-s.firstResp:
		default:
			return res, s.failure()
		}
	case resp = <-s.firstResp:
	}
	agentID, interval, err := protocol.AcceptRegistration(resp, cfg.HeartbeatInterval)
	if err != nil {
		return res, err
	}
	s.hbStart <- interval
	if cfg.Probe {
		s.probeWG.Go(func() { s.probeLiveness(interval) })
	}
	if cfg.Registered != nil {
		cfg.Registered(agentID, interval)
	}
	if cfg.Unregistered != nil {
		defer cfg.Unregistered()
	}

	mdCtx := metadata.AppendToOutgoingContext(streamCtx, protocol.MetadataAgentID, agentID)
	for _, st := range cfg.Streams {
		if err := st.start(s, mdCtx, client); err != nil {
			return res, fmt.Errorf("open %s stream: %w", st.kind, err)
		}
	}
	res.Established = true
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-s.failed:
		return res, s.failure()
	}
}

// fail records the first error of a stream and wakes Run. Errors after
// teardown has started are its result and are ignored.
func (s *session) fail(kind protocol.Kind, err error) {
	s.failWith(fmt.Errorf("%s stream: %w", kind, err))
}

// failWith is fail for an error that belongs to no stream.
func (s *session) failWith(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.err != nil {
		return
	}
	s.err = err
	close(s.failed)
}

func (s *session) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// command reports a command to Config.Command and whether to answer it.
func (s *session) command(kind protocol.Kind) bool {
	if s.isClosing() {
		return false
	}
	return s.cfg.Command == nil || s.cfg.Command(kind)
}

// teardown half-closes every stream, gives the proxy CloseGrace to end
// them, closes the connection and returns once every goroutine of the
// session has stopped.
func (s *session) teardown() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.cancelHandlers()

	sendersDone := make(chan struct{})
	receiversDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.sendWG.Wait(); close(sendersDone) })
	wg.Go(func() { s.recvWG.Wait(); close(receiversDone) })

	waitFor(sendersDone, SendCloseTimeout)
	if g := s.cfg.CloseGrace; g > 0 {
		waitFor(receiversDone, g)
	}
	if err := s.conn.Close(); err != nil {
		s.logger.Debug("Closing connection", "err", err)
	}
	s.cancelStream()
	wg.Wait()
	s.probeWG.Wait()
}

// waitFor waits until ch is closed or d has passed.
func waitFor(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// serveRegistration starts the registration stream's goroutines. The
// sender sends the registration, waits for the negotiated interval and then
// sends a heartbeat every interval, the first one an interval after
// registering. The receiver hands the first reply to Run and then reads
// anything else until the stream ends.
func (s *session) serveRegistration(st grpc.BidiStreamingClient[fodcv1.RegisterAgentRequest, fodcv1.RegisterAgentResponse]) {
	s.sendWG.Go(func() {
		defer func() { _ = st.CloseSend() }()
		if err := st.Send(s.cfg.Register()); err != nil {
			// The failure also surfaces on Recv, which ends the session.
			s.logger.Debug("Sending registration", "err", err)
		}
		var interval time.Duration
		select {
		case <-s.closing:
			return
		case interval = <-s.hbStart:
		}
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-s.closing:
				return
			case <-tick.C:
				err := st.Send(s.cfg.Register())
				if err != nil {
					s.logger.Debug("Sending heartbeat", "err", err)
				}
				if s.cfg.Heartbeat != nil {
					s.cfg.Heartbeat(err)
				}
				select {
				case s.probeNow <- struct{}{}:
				default: // a probe is still running; it covers this heartbeat
				}
			}
		}
	})
	s.recvWG.Go(func() {
		first := true
		for {
			resp, err := st.Recv()
			if err != nil {
				s.fail(protocol.KindRegister, err)
				return
			}
			if first {
				first = false
				s.firstResp <- resp
				continue
			}
			s.command(protocol.KindRegister)
		}
	})
}

// probeLiveness probes the connection after every heartbeat and ends the
// session when ProbeMisses probes in a row go unanswered.
//
// Heartbeats are never acknowledged (PROTOCOL.md), and a Send on a
// half-open connection succeeds into socket buffers, so neither they nor
// the streams' Recv notice a proxy that vanished without FIN or RST: only
// the 6 min client keepalive does, and it cannot be shorter because
// upstream proxies keep grpc-go's default enforcement (a ping more often
// than every 5 min earns GOAWAY too_many_pings). So the probe is an
// ordinary RPC instead: grpc.health.v1.Health/Check for the FODC service,
// with the heartbeat interval as its deadline. A proxy that is there
// answers at once with some status — ours and upstream's register no
// health service and say Unimplemented, a proxy that registers one says
// SERVING or NOT_FOUND — while nothing comes back through a dead path and
// the deadline passes. An RPC is a HEADERS frame each way, never a PING,
// and it counts as traffic for the server's ping-strike accounting, so it
// stays within every keepalive enforcement policy; at one small call per
// heartbeat interval it costs the proxy next to nothing.
func (s *session) probeLiveness(interval time.Duration) {
	health := healthpb.NewHealthClient(s.conn)
	req := &healthpb.HealthCheckRequest{Service: fodcv1.FODCService_ServiceDesc.ServiceName}
	misses := 0
	for {
		select {
		case <-s.closing:
			return
		case <-s.probeNow:
		}
		ctx, cancel := context.WithTimeout(s.handlerCtx, interval)
		_, err := health.Check(ctx, req)
		cancel()
		if s.isClosing() || s.handlerCtx.Err() != nil {
			return
		}
		if answered(err) {
			err = nil
			misses = 0
		} else {
			misses++
			s.logger.Debug("Liveness probe unanswered", "misses", misses, "err", err)
		}
		if s.cfg.Probed != nil {
			s.cfg.Probed(err)
		}
		if misses >= ProbeMisses {
			s.failWith(fmt.Errorf("%w: %d in a row, the last: %w", ErrProxyUnresponsive, misses, err))
			return
		}
	}
}

// answered reports whether a probe's result came from the proxy: any
// status but the ones the client makes up itself when no answer arrives
// (deadline passed, connection unusable, call cancelled).
func answered(err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Unavailable, codes.Canceled:
		return false
	default:
		return true
	}
}

// serve starts the goroutines of a command stream. The receiver reads
// commands and queues them (up to Config.ReadAhead, or one at a time in
// lockstep with the sender); the sender, the only goroutine that calls Send
// and CloseSend on st, answers each in order with h.
func serve[Reply, Cmd any](s *session, kind protocol.Kind, st grpc.BidiStreamingClient[Reply, Cmd], h Handler[Cmd, Reply]) {
	cmds := make(chan *Cmd, s.cfg.ReadAhead)
	var answered chan struct{} // lockstep only: the sender finished a command
	if s.cfg.ReadAhead == 0 {
		answered = make(chan struct{})
	}
	send := func(m *Reply) error {
		if s.isClosing() {
			return ErrClosing
		}
		return st.Send(m)
	}
	s.sendWG.Go(func() {
		defer func() { _ = st.CloseSend() }()
		for {
			select {
			case <-s.closing:
				return
			case cmd, ok := <-cmds:
				if !ok {
					return
				}
				h(s.handlerCtx, cmd, send)
				if answered == nil {
					continue
				}
				select {
				case answered <- struct{}{}:
				case <-s.closing:
					return
				}
			}
		}
	})
	s.recvWG.Go(func() {
		defer close(cmds)
		for first := true; ; first = false {
			cmd, err := st.Recv()
			if err != nil {
				if first && s.cfg.Unimplemented != nil && status.Code(err) == codes.Unimplemented {
					s.cfg.Unimplemented(kind)
					return
				}
				s.fail(kind, err)
				return
			}
			if !s.command(kind) {
				continue
			}
			select {
			case cmds <- cmd:
			case <-s.closing:
				return
			}
			if answered == nil {
				continue
			}
			select {
			case <-answered:
			case <-s.closing:
				return
			}
		}
	})
}
