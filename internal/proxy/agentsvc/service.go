// Package agentsvc is the proxy's agent-facing gRPC service,
// banyandb.fodc.v1.FODCService.
//
// Every stream an agent opens becomes a session with one receiving
// goroutine and one sending goroutine (the only caller of Send). The
// registration stream registers the agent and turns every later message
// into a heartbeat; the other streams are attributed to a registered agent
// by the agent_id metadata and carry commands from the proxy and replies
// from the agent. All seven RPCs are accepted and kept open for as long as
// the agent keeps them: an upstream agent treats any end of any stream as a
// disconnect and re-registers (PROTOCOL.md §2.7).
package agentsvc

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// Stream kinds, used in metrics, logs and the hub.
const (
	KindRegister       = "register"
	KindMetrics        = "metrics"
	KindTopology       = "topology"
	KindLifecycle      = "lifecycle"
	KindCrash          = "crash"
	KindPressure       = "pressure"
	KindSchemaRegistry = "schema_registry"
	KindNodeConfig     = "node_config"
)

// MetadataAgentID is the gRPC metadata key that carries the agent id on
// every stream but the registration stream.
const MetadataAgentID = "agent_id"

// Options configures a Service.
type Options struct {
	// Registry is where agents are registered. Required.
	Registry *registry.Registry
	// HeartbeatInterval is sent to agents at registration (whole seconds,
	// at least one).
	HeartbeatInterval time.Duration
	// SendQueueLen bounds the commands queued for one stream's sender.
	SendQueueLen int
	// MaxPendingCommands bounds the unanswered commands of one stream,
	// abandoned ones included; beyond it the agent is disconnected as slow.
	MaxPendingCommands int
	// OnCrashRecord receives every crash record an agent sends. Optional.
	OnCrashRecord func(agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest)
	// MaxCommandAge is how long a command may stay unanswered before the
	// stream is closed as stuck (0: never).
	MaxCommandAge time.Duration
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Service implements fodcv1.FODCServiceServer. It is safe for concurrent
// use; construct it with New.
type Service struct {
	fodcv1.UnimplementedFODCServiceServer

	opts    Options
	logger  *slog.Logger
	metrics *metrics
	hub     *hub

	drainOnce sync.Once
	draining  chan struct{}
}

type metrics struct {
	streamsOpen      *prometheus.GaugeVec
	streamsRejected  *prometheus.CounterVec
	streamErrors     *prometheus.CounterVec
	slowDisconnects  *prometheus.CounterVec
	repliesDiscarded *prometheus.CounterVec
	heartbeats       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		streamsOpen: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fodc_proxy_agent_streams_open",
			Help: "Agent streams currently open, by stream kind.",
		}, []string{"stream"}),
		streamsRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_streams_rejected_total",
			Help: "Agent streams refused at open, by stream kind and reason.",
		}, []string{"stream", "reason"}),
		streamErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_stream_errors_total",
			Help: "Agent streams that ended with an error, by stream kind and gRPC code.",
		}, []string{"stream", "code"}),
		slowDisconnects: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_slow_disconnects_total",
			Help: "Agent streams closed because the agent did not keep up with commands.",
		}, []string{"stream"}),
		repliesDiscarded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_replies_discarded_total",
			Help: "Agent replies dropped because their caller had given up or no command was outstanding.",
		}, []string{"stream", "reason"}),
		heartbeats: f.NewCounter(prometheus.CounterOpts{
			Name: "fodc_proxy_agent_heartbeats_total",
			Help: "Heartbeats received from agents.",
		}),
	}
}

// New returns a Service. It starts no goroutines.
func New(opts Options) (*Service, error) {
	if opts.Registry == nil {
		return nil, errors.New("agentsvc: registry is required")
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 10 * time.Second
	}
	if opts.SendQueueLen <= 0 {
		opts.SendQueueLen = 64
	}
	if opts.MaxPendingCommands <= 0 {
		opts.MaxPendingCommands = 32
	}
	if opts.SendQueueLen < opts.MaxPendingCommands {
		opts.SendQueueLen = opts.MaxPendingCommands
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Service{
		opts:     opts,
		logger:   logger.With("component", "agentsvc"),
		metrics:  newMetrics(reg),
		hub:      newHub(),
		draining: make(chan struct{}),
	}, nil
}

// Drain ends every open session with codes.Unavailable and refuses new
// ones, so that a graceful server stop does not wait for streams that would
// otherwise never end.
func (s *Service) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
}

// heartbeatSeconds is the interval sent to agents, rounded up to whole
// seconds because the wire carries seconds and 0 means "keep your own".
func (s *Service) heartbeatSeconds() int64 {
	return max(1, int64(math.Ceil(s.opts.HeartbeatInterval.Seconds())))
}

// identityFrom converts a registration or heartbeat message.
func identityFrom(req *fodcv1.RegisterAgentRequest) registry.Identity {
	id := registry.Identity{
		RoleName:       req.GetNodeRole(),
		PodName:        req.GetPodName(),
		ContainerNames: req.GetContainerNames(),
		Labels:         req.GetLabels(),
	}
	if a := req.GetPrimaryAddress(); a != nil {
		id.Primary = registry.Address{IP: a.GetIp(), Port: int(a.GetPort())}
	}
	if len(req.GetSecondaryAddresses()) > 0 {
		id.Secondary = make(map[string]registry.Address, len(req.GetSecondaryAddresses()))
		for name, a := range req.GetSecondaryAddresses() {
			id.Secondary[name] = registry.Address{IP: a.GetIp(), Port: int(a.GetPort())}
		}
	}
	return id
}

// RegisterAgent registers the agent on its first message and treats every
// later message as a heartbeat. Heartbeats are never answered. The entry is
// unregistered when the stream ends.
func (s *Service) RegisterAgent(stream fodcv1.FODCService_RegisterAgentServer) error {
	ctx := stream.Context()
	select {
	case <-s.draining:
		return toStatus(errDraining)
	default:
	}
	first, err := s.firstRegistration(stream)
	if err != nil {
		return toStatus(err)
	}
	agent, err := s.opts.Registry.Register(identityFrom(first))
	if err != nil {
		code := codes.InvalidArgument
		switch {
		case errors.Is(err, registry.ErrTooManyAgents):
			code = codes.ResourceExhausted
		case errors.Is(err, registry.ErrClosed):
			code = codes.Unavailable
		}
		s.metrics.streamsRejected.WithLabelValues(KindRegister, code.String()).Inc()
		s.logger.Warn("Registration rejected", "pod_name", first.GetPodName(), "role", first.GetNodeRole(), "peer", peerAddr(ctx), "err", err)
		// Upstream agents read the message before the stream ends.
		_ = stream.Send(&fodcv1.RegisterAgentResponse{Success: false, Message: err.Error()})
		return status.Error(code, err.Error())
	}
	removed, ok := s.opts.Registry.Removed(agent.ID)
	if !ok { // superseded in the instant since Register
		return status.Errorf(codes.Aborted, "agent %s was removed during registration; register again", agent.ID)
	}
	// The handler goroutine is this stream's only sender: one response, now.
	if err := stream.Send(&fodcv1.RegisterAgentResponse{
		Success:                  true,
		Message:                  "Agent registered successfully",
		HeartbeatIntervalSeconds: s.heartbeatSeconds(),
		AgentId:                  agent.ID,
	}); err != nil {
		s.opts.Registry.Unregister(agent.ID, registry.ReasonDisconnected)
		return toStatus(err)
	}
	s.metrics.streamsOpen.WithLabelValues(KindRegister).Inc()
	defer s.metrics.streamsOpen.WithLabelValues(KindRegister).Dec()
	s.logger.Info("Agent connected", "agent_id", agent.ID, "pod_name", agent.PodName, "role", agent.RoleName, "peer", peerAddr(ctx))

	recvErr := make(chan error, 1)
	go func() {
		recvErr <- recvLoop(stream, func(hb *fodcv1.RegisterAgentRequest) error {
			s.metrics.heartbeats.Inc()
			if _, err := s.opts.Registry.Heartbeat(agent.ID, identityFrom(hb)); err != nil {
				return status.Errorf(codes.NotFound, "heartbeat: %v; register again", err)
			}
			return nil
		})
	}()
	select {
	case err = <-recvErr:
	case <-ctx.Done():
		err = ctx.Err()
	case <-removed:
		err = s.removedStatus(agent.ID)
	case <-s.draining:
		err = errDraining
	}
	if s.opts.Registry.Unregister(agent.ID, registry.ReasonDisconnected) {
		s.logger.Info("Agent disconnected", "agent_id", agent.ID, "pod_name", agent.PodName, "err", err)
	}
	return s.finish(KindRegister, err)
}

// registrationWait bounds how long a new registration stream may stay
// silent: agents send their registration right after opening the stream.
const registrationWait = 30 * time.Second

// firstRegistration waits for the registration message, but not past
// registrationWait or a drain, so that a silent client holds nothing.
func (s *Service) firstRegistration(stream fodcv1.FODCService_RegisterAgentServer) (*fodcv1.RegisterAgentRequest, error) {
	type result struct {
		m   *fodcv1.RegisterAgentRequest
		err error
	}
	got := make(chan result, 1)
	go func() { // ends when Recv returns, at the latest when the handler does
		m, err := stream.Recv()
		got <- result{m, err}
	}()
	t := time.NewTimer(registrationWait)
	defer t.Stop()
	select {
	case r := <-got:
		return r.m, r.err
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no registration message within %s of opening the stream", registrationWait)
	case <-s.draining:
		return nil, errDraining
	}
}

// finish counts and translates the error that ended a stream.
func (s *Service) finish(kind string, err error) error {
	st := toStatus(err)
	if st != nil {
		code := status.Code(st)
		if code != codes.Canceled {
			s.metrics.streamErrors.WithLabelValues(kind, code.String()).Inc()
		}
	}
	return st
}

// removedStatus explains to an agent why its id is no longer valid.
func (s *Service) removedStatus(agentID string) error {
	reason, ok := s.opts.Registry.Forgotten(agentID)
	switch {
	case !ok:
		return status.Errorf(codes.NotFound, "agent %s is not registered; register again", agentID)
	case reason == registry.ReasonShutdown:
		return errDraining
	case reason == registry.ReasonSuperseded:
		return status.Errorf(codes.NotFound, "agent %s was superseded by a newer registration of the same node; register again", agentID)
	default:
		return status.Errorf(codes.NotFound, "agent %s is no longer registered (%s); register again", agentID, reason)
	}
}

// authenticate attributes a non-registration stream to a live agent by its
// agent_id metadata (PROTOCOL.md §2.4; unlike upstream, unknown and stale
// ids are refused so that the agent re-registers cleanly, W6/W7).
func (s *Service) authenticate(ctx context.Context, kind string) (string, <-chan struct{}, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(MetadataAgentID)
	if len(ids) == 0 || ids[0] == "" {
		s.metrics.streamsRejected.WithLabelValues(kind, "missing_agent_id").Inc()
		return "", nil, status.Error(codes.Unauthenticated, "agent_id metadata missing; register first and send the returned agent_id")
	}
	id := ids[0]
	removed, ok := s.opts.Registry.Removed(id)
	if !ok {
		s.metrics.streamsRejected.WithLabelValues(kind, "unknown_agent_id").Inc()
		return "", nil, s.removedStatus(id)
	}
	return id, removed, nil
}

// serve runs one non-registration stream until the agent ends it, the agent
// leaves the registry, or the proxy drains. attach publishes the session
// for the collectors and returns its detach; handle consumes each reply.
func serve[Req, Resp any](s *Service, kind string, st serverStream[Req, Resp],
	attach func(ss *session[Resp]) (detach func(error), err error),
	handle func(*Req) error,
) error {
	ctx := st.Context()
	select {
	case <-s.draining:
		return toStatus(errDraining)
	default:
	}
	agentID, removed, err := s.authenticate(ctx, kind)
	if err != nil {
		return err
	}
	ss := newSession[Resp](agentID, kind, s.opts.SendQueueLen)
	detach, err := attach(ss)
	if err != nil {
		s.metrics.streamsRejected.WithLabelValues(kind, "duplicate").Inc()
		return err
	}
	s.metrics.streamsOpen.WithLabelValues(kind).Inc()
	defer s.metrics.streamsOpen.WithLabelValues(kind).Dec()
	s.logger.Debug("Agent stream opened", "agent_id", agentID, "stream", kind)

	recvErr := make(chan error, 1)
	// The receiver cannot be waited for: Recv unblocks only once this
	// handler has returned.
	go func() { recvErr <- recvLoop(st, handle) }()
	// This goroutine is the stream's only sender: it sends queued commands
	// until something ends the session, so an idle stream costs two
	// goroutines (this one and the receiver).
	err = sendUntilDone(st, ss, recvErr, removed, s.draining, func() error { return s.removedStatus(agentID) })
	ss.closeWith(err)
	detach(ss.cause())
	if errors.Is(ss.cause(), errSlow) || errors.Is(ss.cause(), errStuck) {
		s.metrics.slowDisconnects.WithLabelValues(kind).Inc()
		s.logger.Warn("Disconnected slow agent stream", "agent_id", agentID, "stream", kind)
	}
	s.logger.Debug("Agent stream closed", "agent_id", agentID, "stream", kind, "err", ss.cause())
	return s.finish(kind, ss.cause())
}

// serveOrdered runs a stream whose agent answers every command once and in
// order: the stream is published in the hub for the collectors (wrapped by
// wrap), and every complete reply goes to the oldest outstanding command.
// assemble turns wire messages into replies; it returns false while a
// multi-message reply is incomplete.
func serveOrdered[Cmd, Wire, Reply any](s *Service, kind string, st serverStream[Wire, Cmd],
	wrap func(ordered[Cmd, Reply]) any, assemble func(*Wire) (*Reply, bool),
) error {
	var o ordered[Cmd, Reply]
	return serve(s, kind, st,
		func(ss *session[Cmd]) (func(error), error) {
			o = newOrdered[Cmd, Reply](ss, s.opts.MaxPendingCommands, s.opts.MaxCommandAge)
			detach, err := s.hub.attach(ss.agentID, kind, wrap(o))
			if err != nil {
				return nil, err
			}
			return func(cause error) {
				detach(cause)
				o.close(cause)
			}, nil
		},
		func(w *Wire) error {
			complete, ok := assemble(w)
			if !ok {
				return nil // part of a multi-message reply
			}
			delivered, solicited := o.deliver(complete)
			switch {
			case !solicited:
				s.metrics.repliesDiscarded.WithLabelValues(kind, "unsolicited").Inc()
			case !delivered:
				s.metrics.repliesDiscarded.WithLabelValues(kind, "abandoned").Inc()
			}
			return nil
		})
}

// StreamMetricsRaw carries metrics commands and the agent's replies,
// which it passes on undecoded (see Register).
func (s *Service) StreamMetricsRaw(stream MetricsServer) error {
	return serveOrdered(s, KindMetrics, stream,
		func(o ordered[fodcv1.StreamMetricsResponse, RawMetrics]) any {
			return &MetricsStream{o}
		}, same[RawMetrics])
}

// same is the assemble function of streams with one message per reply.
func same[T any](m *T) (*T, bool) { return m, true }

func closeCause(err error) error {
	if err == nil {
		return errClosed
	}
	return err
}

// StreamClusterTopology carries topology commands and the agent's reports.
func (s *Service) StreamClusterTopology(stream fodcv1.FODCService_StreamClusterTopologyServer) error {
	return serveOrdered(s, KindTopology, stream,
		func(o ordered[fodcv1.StreamClusterTopologyResponse, fodcv1.StreamClusterTopologyRequest]) any {
			return &TopologyStream{o}
		}, same[fodcv1.StreamClusterTopologyRequest])
}

// ExtStreamNodeConfig carries configuration requests, an extension of this
// project: only our agents open it, and each command gets one report.
func (s *Service) ExtStreamNodeConfig(stream fodcv1.FODCService_ExtStreamNodeConfigServer) error {
	return serveOrdered(s, KindNodeConfig, stream,
		func(o ordered[fodcv1.ExtNodeConfigResponse, fodcv1.ExtNodeConfigRequest]) any {
			return &NodeConfigStream{o}
		}, same[fodcv1.ExtNodeConfigRequest])
}

// StreamLifecycle carries lifecycle commands. An agent answers a command
// once or, when its local collection fails, never; replies therefore go to
// whoever waits when they arrive (see LifecycleStream).
func (s *Service) StreamLifecycle(stream fodcv1.FODCService_StreamLifecycleServer) error {
	var ls *LifecycleStream
	return serve(s, KindLifecycle, stream,
		func(ss *session[fodcv1.StreamLifecycleResponse]) (func(error), error) {
			ls = newLifecycleStream(ss)
			return s.hub.attach(ss.agentID, KindLifecycle, ls)
		},
		func(m *fodcv1.StreamLifecycleRequest) error {
			if !ls.deliver(m) {
				s.metrics.repliesDiscarded.WithLabelValues(KindLifecycle, "unsolicited").Inc()
			}
			return nil
		})
}

// StreamCrashDiagnostics carries crash-record requests; the agent answers
// with one message per record it holds and no end marker, so records are
// handed to Options.OnCrashRecord as they arrive.
func (s *Service) StreamCrashDiagnostics(stream fodcv1.FODCService_StreamCrashDiagnosticsServer) error {
	return serve(s, KindCrash, stream,
		func(ss *session[fodcv1.StreamCrashDiagnosticsResponse]) (func(error), error) {
			return s.hub.attach(ss.agentID, KindCrash, &CrashStream{ss: ss})
		},
		func(m *fodcv1.StreamCrashDiagnosticsRequest) error {
			if s.opts.OnCrashRecord != nil {
				s.opts.OnCrashRecord(agentIDOf(stream.Context()), m)
			}
			return nil
		})
}

// StreamPressureProfiles carries profile list rounds and downloads (see
// PressureStream).
func (s *Service) StreamPressureProfiles(stream fodcv1.FODCService_StreamPressureProfilesServer) error {
	var ps *PressureStream
	return serve(s, KindPressure, stream,
		func(ss *session[fodcv1.StreamPressureProfilesResponse]) (func(error), error) {
			ps = newPressureStream(ss)
			detach, err := s.hub.attach(ss.agentID, KindPressure, ps)
			if err != nil {
				return nil, err
			}
			return func(cause error) {
				detach(cause)
				ps.close(cause)
			}, nil
		},
		func(m *fodcv1.StreamPressureProfilesRequest) error {
			if !ps.receive(m) {
				s.metrics.repliesDiscarded.WithLabelValues(KindPressure, "unsolicited").Inc()
			}
			return nil
		})
}

// agentIDOf reads the agent id of an authenticated stream.
func agentIDOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get(MetadataAgentID); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// StreamSchemaRegistry carries registry reads: every command is answered
// by chunks and a done marker, assembled here into one RegistryRound. The
// chunks of an abandoned round are drained through its done marker and
// discarded, never handed to the next read (W11).
func (s *Service) StreamSchemaRegistry(stream fodcv1.FODCService_StreamSchemaRegistryServer) error {
	var partial []*fodcv1.StreamSchemaRegistryRequest
	return serveOrdered(s, KindSchemaRegistry, stream,
		func(o ordered[fodcv1.StreamSchemaRegistryResponse, RegistryRound]) any {
			return &SchemaRegistryStream{o}
		},
		func(m *fodcv1.StreamSchemaRegistryRequest) (*RegistryRound, bool) {
			if m.GetGroup() != nil {
				partial = append(partial, m)
			}
			if !m.GetDone() {
				return nil, false
			}
			round := &RegistryRound{Chunks: partial}
			partial = nil
			return round, true
		})
}

// Metrics returns the live metrics stream of an agent.
func (s *Service) Metrics(agentID string) (*MetricsStream, bool) {
	return lookup[*MetricsStream](s, agentID, KindMetrics)
}

// Topology returns the live topology stream of an agent.
func (s *Service) Topology(agentID string) (*TopologyStream, bool) {
	return lookup[*TopologyStream](s, agentID, KindTopology)
}

// Lifecycle returns the live lifecycle stream of an agent.
func (s *Service) Lifecycle(agentID string) (*LifecycleStream, bool) {
	return lookup[*LifecycleStream](s, agentID, KindLifecycle)
}

// SchemaRegistry returns the live schema registry stream of an agent.
func (s *Service) SchemaRegistry(agentID string) (*SchemaRegistryStream, bool) {
	return lookup[*SchemaRegistryStream](s, agentID, KindSchemaRegistry)
}

// NodeConfig returns the live configuration stream of an agent; agents
// without the extension have none.
func (s *Service) NodeConfig(agentID string) (*NodeConfigStream, bool) {
	return lookup[*NodeConfigStream](s, agentID, KindNodeConfig)
}

// Crash returns the live crash diagnostics stream of an agent.
func (s *Service) Crash(agentID string) (*CrashStream, bool) {
	return lookup[*CrashStream](s, agentID, KindCrash)
}

// Pressure returns the live pressure profiles stream of an agent.
func (s *Service) Pressure(agentID string) (*PressureStream, bool) {
	return lookup[*PressureStream](s, agentID, KindPressure)
}

func lookup[T any](s *Service, agentID, kind string) (T, bool) {
	v, ok := s.hub.get(agentID, kind)
	if !ok {
		var zero T
		return zero, false
	}
	return v.(T), true
}

// HasStream reports whether the agent has a live stream of the kind.
func (s *Service) HasStream(agentID, kind string) bool {
	_, ok := s.hub.get(agentID, kind)
	return ok
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
