package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fodc-go/fodc/internal/timeutil"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
)

// SimConfig configures a Simulator.
type SimConfig struct {
	// ProxyAddr is the proxy's gRPC address. Required.
	ProxyAddr string
	// Agents is the number of simulated agents.
	Agents int
	// AgentsPerConn is how many agents share one gRPC connection. An agent
	// opens up to seven streams; keep AgentsPerConn*7 within the proxy's
	// concurrent stream limit (64 for ours).
	AgentsPerConn int
	// Release selects the streams each agent opens (default
	// protocol.ReleaseHEAD).
	Release protocol.Release
	// Shape supplies the registration's role and node type.
	Shape Shape
	// Payloads are the metrics replies. Required.
	Payloads *Payloads
	// ReplyLatency and ReplyJitter delay every metrics reply by
	// ReplyLatency plus a uniform random part of up to ReplyJitter.
	ReplyLatency, ReplyJitter time.Duration
	// HungFraction of the agents read metrics commands and never answer.
	HungFraction float64
	// FlapFraction of the agents drop their connection every FlapPeriod
	// (±25%) and register again under a new id, like an agent that
	// restarts.
	FlapFraction float64
	FlapPeriod   time.Duration
	// HeartbeatInterval is used until the proxy tells another one.
	HeartbeatInterval time.Duration
	// ReconnectInterval is the wait after a failed connection attempt.
	ReconnectInterval time.Duration
	// ConnectRate limits new registrations per second at start (0: none).
	ConnectRate int
	Logger      *slog.Logger
}

// SimStats counts what the simulated agents did.
type SimStats struct {
	// Established is the number of agents that registered and opened all
	// their streams at least once.
	Established int `json:"established"`
	// Registrations counts successful registrations, reconnects included.
	Registrations int64 `json:"registrations"`
	// FailedAttempts counts connection attempts that did not establish.
	FailedAttempts int64 `json:"failed_attempts"`
	// Heartbeats counts heartbeats sent; HeartbeatErrors those that failed.
	Heartbeats      int64 `json:"heartbeats"`
	HeartbeatErrors int64 `json:"heartbeat_errors"`
	// LatestReplies and WindowReplies count metrics replies sent.
	LatestReplies int64 `json:"latest_replies"`
	WindowReplies int64 `json:"window_replies"`
	// IgnoredCommands counts metrics commands hung agents left unanswered.
	IgnoredCommands int64 `json:"ignored_commands"`
	// HeartbeatInterval is the interval the proxy negotiated.
	HeartbeatInterval time.Duration `json:"heartbeat_interval_ns"`
}

// Simulator runs many simulated upstream agents in one process. Agents
// share gRPC connections; each one costs one goroutine per open stream and
// nothing else, and heartbeats are sent by a few shared goroutines. Replies
// are marshalled ahead of time (see Payloads). Its methods are safe for
// concurrent use; Run may be called once.
//
// It keeps its own session loop instead of running agentconn sessions,
// which the simulated upstream agent (agentsim) and our agent use: an
// agentconn session owns a ClientConn, a sender goroutine beside every
// receiver and a heartbeat goroutine, which would triple the goroutines
// per agent and give each agent a connection of its own, and it cannot
// send the pre-marshalled replies. What the wire needs is shared all the
// same: the streams of each release (protocol.Release.Streams), the
// agent_id metadata key and the registration rule
// (protocol.AcceptRegistration).
type Simulator struct {
	cfg     SimConfig
	streams []protocol.Kind
	codec   rawCodec
	logger  *slog.Logger
	conns   []*grpc.ClientConn
	agents  []*simAgent

	hbInterval    atomic.Int64
	registrations atomic.Int64
	failed        atomic.Int64
	heartbeats    atomic.Int64
	hbErrors      atomic.Int64
	latest        atomic.Int64
	window        atomic.Int64
	ignored       atomic.Int64

	mu          sync.Mutex    // guards the fields below
	established int           // agents established at least once
	changed     chan struct{} // closed and replaced when established grows
}

// NewSimulator validates cfg and creates the (lazy) connections. It
// starts no goroutines.
func NewSimulator(cfg SimConfig) (*Simulator, error) {
	if cfg.ProxyAddr == "" {
		return nil, errors.New("proxy gRPC address is empty (--proxy-addr)")
	}
	if cfg.Payloads == nil {
		return nil, errors.New("payloads are required")
	}
	if cfg.Agents < 0 || cfg.Agents >= 1_000_000 {
		return nil, fmt.Errorf("--agents (%d) must be within [0, 999999]", cfg.Agents)
	}
	streams := cfg.Release.Streams()
	codec, err := newRawCodec()
	if err != nil {
		return nil, err
	}
	if cfg.AgentsPerConn < 1 {
		cfg.AgentsPerConn = 8
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = time.Second
	}
	if cfg.FlapPeriod <= 0 {
		cfg.FlapPeriod = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Simulator{
		cfg:     cfg,
		streams: streams,
		codec:   codec,
		logger:  cfg.Logger.With("component", "bench_sim"),
		changed: make(chan struct{}),
	}
	s.hbInterval.Store(int64(cfg.HeartbeatInterval))
	nconns := (cfg.Agents + cfg.AgentsPerConn - 1) / cfg.AgentsPerConn
	for range nconns {
		conn, err := grpc.NewClient(cfg.ProxyAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(1<<30)))
		if err != nil {
			s.closeConns()
			return nil, fmt.Errorf("create client connection to %s: %w", cfg.ProxyAddr, err)
		}
		s.conns = append(s.conns, conn)
	}
	// Spread hung and flapping agents evenly rather than at random, so
	// that runs are repeatable.
	hungEvery, flapEvery := every(cfg.HungFraction), every(cfg.FlapFraction)
	for i := range cfg.Agents {
		pod := PodName(i)
		a := &simAgent{
			sim:  s,
			idx:  i,
			pod:  pod,
			conn: s.conns[i/cfg.AgentsPerConn],
			hung: hungEvery > 0 && i%hungEvery == hungEvery-1,
			flap: flapEvery > 0 && i%flapEvery == 0,
			reg: &fodcv1.RegisterAgentRequest{
				NodeRole:       cfg.Shape.role(),
				PodName:        pod,
				ContainerNames: []string{"banyandb"},
			},
			latest: &rawMessage{b: cfg.Payloads.Latest(pod)},
		}
		if cfg.Shape.NodeType != "" {
			a.reg.Labels = map[string]string{"type": cfg.Shape.NodeType}
		}
		s.agents = append(s.agents, a)
	}
	return s, nil
}

// every turns a fraction into "one in n" (0: none).
func every(fraction float64) int {
	if fraction <= 0 {
		return 0
	}
	return max(1, int(1/fraction+0.5))
}

func (s *Simulator) closeConns() {
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// Run starts every agent and the heartbeat senders, and serves until ctx
// is cancelled. It returns once every goroutine has stopped and the
// connections are closed.
func (s *Simulator) Run(ctx context.Context) error {
	defer s.closeConns()
	var wg sync.WaitGroup
	workers := min(4, len(s.agents))
	for w := range workers {
		wg.Go(func() { s.heartbeatLoop(ctx, w, workers) })
	}
	var pace *time.Ticker
	if s.cfg.ConnectRate > 0 {
		pace = time.NewTicker(time.Second / time.Duration(s.cfg.ConnectRate))
		defer pace.Stop()
	}
	for _, a := range s.agents {
		if pace != nil {
			select {
			case <-ctx.Done():
			case <-pace.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() { a.run(ctx) })
	}
	wg.Wait()
	return nil
}

// WaitEstablished blocks until n agents have registered and opened their
// streams at least once, or ctx ends.
func (s *Simulator) WaitEstablished(ctx context.Context, n int) error {
	s.mu.Lock()
	for s.established < n {
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			got := s.established
			s.mu.Unlock()
			return fmt.Errorf("%d of %d agents established: %w", got, n, ctx.Err())
		case <-ch:
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return nil
}

// Stats returns the counters so far.
func (s *Simulator) Stats() SimStats {
	s.mu.Lock()
	est := s.established
	s.mu.Unlock()
	return SimStats{
		Established:       est,
		Registrations:     s.registrations.Load(),
		FailedAttempts:    s.failed.Load(),
		Heartbeats:        s.heartbeats.Load(),
		HeartbeatErrors:   s.hbErrors.Load(),
		LatestReplies:     s.latest.Load(),
		WindowReplies:     s.window.Load(),
		IgnoredCommands:   s.ignored.Load(),
		HeartbeatInterval: time.Duration(s.hbInterval.Load()),
	}
}

func (s *Simulator) markEstablished() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.established++
	close(s.changed)
	s.changed = make(chan struct{})
}

// heartbeatLoop sends the heartbeats of agents w, w+n, w+2n, ... spread
// evenly over the negotiated interval.
func (s *Simulator) heartbeatLoop(ctx context.Context, w, n int) {
	var mine []*simAgent
	for i := w; i < len(s.agents); i += n {
		mine = append(mine, s.agents[i])
	}
	if len(mine) == 0 {
		return
	}
	t := time.NewTimer(s.heartbeatSpacing(len(mine)))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mine[i%len(mine)].heartbeat()
		t.Reset(s.heartbeatSpacing(len(mine)))
	}
}

func (s *Simulator) heartbeatSpacing(agents int) time.Duration {
	return max(time.Duration(s.hbInterval.Load())/time.Duration(agents), time.Microsecond)
}

// simAgent is one simulated agent. run owns its sessions; heartbeat is
// called by a heartbeat goroutine.
type simAgent struct {
	sim        *Simulator
	idx        int
	pod        string
	conn       *grpc.ClientConn
	hung, flap bool
	reg        *fodcv1.RegisterAgentRequest // sent as registration and heartbeat; never modified
	latest     *rawMessage

	windowOnce sync.Once
	window     *rawMessage

	established bool // run's goroutine only

	mu      sync.Mutex // guards regSend; held while a heartbeat is sent
	regSend grpc.ClientStream
}

// run connects and reconnects until ctx ends. A lost session is
// re-established at once, a failed attempt after the reconnect interval,
// like the upstream agent.
func (a *simAgent) run(ctx context.Context) {
	for ctx.Err() == nil {
		if a.session(ctx) {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		a.sim.failed.Add(1)
		t := time.NewTimer(a.sim.cfg.ReconnectInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// session registers, opens the agent's streams and serves them until any
// of them ends or ctx is cancelled. It reports whether the session was
// established. Every stream goroutine has stopped when it returns.
func (a *simAgent) session(ctx context.Context) bool {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := fodcv1.NewFODCServiceClient(a.conn)
	reg, err := client.RegisterAgent(sctx)
	if err != nil {
		return false
	}
	if err := reg.Send(a.reg); err != nil {
		return false
	}
	resp, err := reg.Recv()
	if err != nil {
		return false
	}
	agentID, interval, err := protocol.AcceptRegistration(resp, time.Duration(a.sim.hbInterval.Load()))
	if err != nil {
		a.sim.logger.Debug("Registration refused", "pod_name", a.pod, "err", err)
		return false
	}
	a.sim.hbInterval.Store(int64(interval))
	a.sim.registrations.Add(1)
	mdCtx := metadata.AppendToOutgoingContext(sctx, protocol.MetadataAgentID, agentID)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stops every stream goroutine
	for _, kind := range a.sim.streams {
		if err := a.open(mdCtx, client, kind, cancel, &wg); err != nil {
			a.sim.logger.Debug("Opening stream", "pod_name", a.pod, "stream", kind, "err", err)
			return false
		}
	}
	a.mu.Lock()
	a.regSend = reg
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.regSend = nil
		a.mu.Unlock()
	}()
	if !a.established {
		a.established = true
		a.sim.markEstablished()
	}
	if a.flap {
		p := a.sim.cfg.FlapPeriod
		t := time.AfterFunc(p*3/4+rand.N(p/2+1), cancel)
		defer t.Stop()
	}
	// The registration stream is only read to notice its end.
	for {
		if _, err := reg.Recv(); err != nil {
			return true
		}
	}
}

// heartbeat re-sends the registration on the live registration stream.
func (a *simAgent) heartbeat() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.regSend == nil {
		return
	}
	if err := a.regSend.SendMsg(a.reg); err != nil {
		a.sim.hbErrors.Add(1)
		return
	}
	a.sim.heartbeats.Add(1)
}

// open opens one stream and starts the goroutine that answers its
// commands, one after another. Any end of the stream ends the session.
func (a *simAgent) open(ctx context.Context, client fodcv1.FODCServiceClient, kind protocol.Kind, endSession context.CancelFunc, wg *sync.WaitGroup) error {
	var loop func()
	switch kind {
	case protocol.KindMetrics:
		st, err := client.StreamMetrics(ctx, grpc.ForceCodecV2(a.sim.codec))
		if err != nil {
			return err
		}
		loop = func() { a.serveMetrics(ctx, st) }
	case protocol.KindTopology:
		st, err := client.StreamClusterTopology(ctx)
		if err != nil {
			return err
		}
		loop = func() {
			serveCommands(st, func(c *fodcv1.StreamClusterTopologyResponse) []*fodcv1.StreamClusterTopologyRequest {
				if !c.GetRequestTopology() {
					return nil
				}
				return []*fodcv1.StreamClusterTopologyRequest{{Timestamp: timestamppb.Now(), Topology: &fodcv1.Topology{}}}
			})
		}
	case protocol.KindLifecycle:
		st, err := client.StreamLifecycle(ctx)
		if err != nil {
			return err
		}
		loop = func() {
			serveCommands(st, func(c *fodcv1.StreamLifecycleResponse) []*fodcv1.StreamLifecycleRequest {
				if !c.GetRequestLifecycle() {
					return nil
				}
				return []*fodcv1.StreamLifecycleRequest{{Timestamp: timestamppb.Now(), PodName: a.pod, LifecycleData: &fodcv1.LifecycleData{}}}
			})
		}
	case protocol.KindSchemaRegistry:
		st, err := client.StreamSchemaRegistry(ctx)
		if err != nil {
			return err
		}
		loop = func() {
			serveCommands(st, func(c *fodcv1.StreamSchemaRegistryResponse) []*fodcv1.StreamSchemaRegistryRequest {
				if !c.GetRequestRegistry() {
					return nil
				}
				return []*fodcv1.StreamSchemaRegistryRequest{{Done: true}}
			})
		}
	case protocol.KindCrash:
		st, err := client.StreamCrashDiagnostics(ctx)
		if err != nil {
			return err
		}
		// No crash records: commands are read and never answered.
		loop = func() {
			serveCommands(st, func(*fodcv1.StreamCrashDiagnosticsResponse) []*fodcv1.StreamCrashDiagnosticsRequest { return nil })
		}
	case protocol.KindPressure:
		st, err := client.StreamPressureProfiles(ctx)
		if err != nil {
			return err
		}
		loop = func() { serveCommands(st, pressureReply) }
	default:
		return fmt.Errorf("unknown stream %q", kind)
	}
	wg.Go(func() {
		defer endSession()
		loop()
	})
	return nil
}

// pressureReply answers a list with no records and a fetch with an error.
func pressureReply(c *fodcv1.StreamPressureProfilesResponse) []*fodcv1.StreamPressureProfilesRequest {
	switch cmd := c.GetCommand().(type) {
	case *fodcv1.StreamPressureProfilesResponse_ListProfiles:
		return []*fodcv1.StreamPressureProfilesRequest{{Payload: &fodcv1.StreamPressureProfilesRequest_ListComplete{
			ListComplete: &fodcv1.ListComplete{RequestId: cmd.ListProfiles.GetRequestId()},
		}}}
	case *fodcv1.StreamPressureProfilesResponse_FetchProfile:
		f := cmd.FetchProfile
		return []*fodcv1.StreamPressureProfilesRequest{{Payload: &fodcv1.StreamPressureProfilesRequest_Chunk{
			Chunk: &fodcv1.PressureProfileChunk{RequestId: f.GetRequestId(), ProfileId: f.GetProfileId(), Type: f.GetType(), Last: true, Error: "no profiles in fodc-bench"},
		}}}
	}
	return nil
}

// serveCommands answers each command with the messages reply returns,
// until the stream ends.
func serveCommands[Req, Resp any](st grpc.BidiStreamingClient[Req, Resp], reply func(*Resp) []*Req) {
	for {
		cmd, err := st.Recv()
		if err != nil {
			return
		}
		for _, m := range reply(cmd) {
			if err := st.Send(m); err != nil {
				return
			}
		}
	}
}

// serveMetrics answers every metrics command with the agent's prepared
// reply after the configured latency, or never for a hung agent.
func (a *simAgent) serveMetrics(ctx context.Context, st grpc.BidiStreamingClient[fodcv1.StreamMetricsRequest, fodcv1.StreamMetricsResponse]) {
	cfg := &a.sim.cfg
	for {
		cmd, err := st.Recv()
		if err != nil {
			return
		}
		if a.hung {
			a.sim.ignored.Add(1)
			continue
		}
		if !timeutil.Sleep(ctx, cfg.ReplyLatency+jitter(cfg.ReplyJitter)) {
			return
		}
		msg, counter := a.latest, &a.sim.latest
		if cmd.GetStartTime() != nil || cmd.GetEndTime() != nil {
			msg, counter = a.windowReply(), &a.sim.window
		}
		if err := st.SendMsg(msg); err != nil {
			return
		}
		counter.Add(1)
	}
}

func jitter(upTo time.Duration) time.Duration {
	if upTo <= 0 {
		return 0
	}
	return rand.N(upTo + 1)
}

// windowReply returns the agent's window reply, built on first use; an
// agent without history answers with no metrics.
func (a *simAgent) windowReply() *rawMessage {
	a.windowOnce.Do(func() {
		a.window = &rawMessage{b: a.sim.cfg.Payloads.Window(a.pod)}
	})
	return a.window
}
