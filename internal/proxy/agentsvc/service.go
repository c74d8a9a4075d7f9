// Package agentsvc is the proxy's agent-facing gRPC service,
// banyandb.fodc.v1.FODCService.
//
// Every stream an agent opens becomes a handle in the stream table
// (package streams). The handler's goroutine is the stream's receiver and,
// while idle, its only goroutine: commands are sent by a goroutine that
// runs only while some wait, and the proxy ends a stream by writing its
// final status (see stopper). The registration stream registers
// the agent and turns every later message into a heartbeat; the other
// streams are attributed to a registered agent by the agent_id metadata and
// carry commands from the proxy and replies from the agent. All seven RPCs are accepted and kept open for as long as
// the agent keeps them: an upstream agent treats any end of any stream as a
// disconnect and re-registers (PROTOCOL.md §2.7).
package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Options configures a Service.
type Options struct {
	// Registry is where agents are registered. Required.
	Registry *registry.Registry
	// Streams is the table the service publishes open streams in.
	// Required.
	Streams *streams.Table
	// HeartbeatInterval is sent to agents at registration (whole seconds,
	// at least one). Required.
	HeartbeatInterval time.Duration
	// RegistrationWait bounds how long a new registration stream may stay
	// silent before its first message. Required.
	RegistrationWait time.Duration
	// Limits bound what registrations and heartbeats may carry and how
	// often one peer may register.
	Limits RegistrationLimits
	// OnCrashRecord receives every crash record an agent sends. Optional.
	OnCrashRecord func(agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest)
}

// Service implements fodcv1.FODCServiceServer. It is safe for concurrent
// use; construct it with New.
type Service struct {
	fodcv1.UnimplementedFODCServiceServer

	opts    Options
	logger  *slog.Logger
	metrics *metrics
	perPeer *peerLimiter // nil: no rate limit

	// drained is cancelled by Drain; every open stream watches it with
	// context.AfterFunc, which costs no goroutine.
	drained context.Context
	drain   context.CancelFunc
}

// New returns a Service whose metrics go to reg. It starts no goroutines.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	var errs []error
	if opts.Registry == nil || opts.Streams == nil {
		errs = append(errs, errors.New("agentsvc: registry and stream table are required"))
	}
	if opts.HeartbeatInterval <= 0 || opts.RegistrationWait <= 0 {
		errs = append(errs, errors.New("agentsvc: heartbeat interval and registration wait must be positive"))
	}
	if logger == nil || reg == nil {
		errs = append(errs, errors.New("agentsvc: logger and registerer are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	drained, drain := context.WithCancel(context.Background())
	return &Service{
		opts:    opts,
		logger:  logger.With("component", "agentsvc"),
		metrics: m,
		perPeer: newPeerLimiter(opts.Limits.PerPeerRate, opts.Limits.PerPeerBurst),
		drained: drained,
		drain:   drain,
	}, nil
}

// Drain ends every open session with codes.Unavailable and refuses new
// ones, so that a graceful server stop does not wait for streams that would
// otherwise never end.
func (s *Service) Drain() { s.drain() }

// onDrain arranges for stop(errDraining) when the service drains, at once
// if it has; the returned function cancels that.
func (s *Service) onDrain(stop func(error)) func() bool {
	return context.AfterFunc(s.drained, func() { stop(errDraining) })
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
// later message as a heartbeat. Heartbeats are never answered. When the
// stream ends the entry goes offline (registry.Disconnect) with the reason:
// the node stays listed, reported down, until the cleanup timeout or until
// it registers again.
func (s *Service) RegisterAgent(stream fodcv1.FODCService_RegisterAgentServer) error {
	ctx := stream.Context()
	st, err := stopperOf(ctx)
	if err != nil {
		return err
	}
	if s.drained.Err() != nil {
		return toStatus(errDraining)
	}
	first, err := s.firstRegistration(stream, st)
	if err != nil {
		return toStatus(err)
	}
	if lerr := s.admit(ctx, first); lerr != nil {
		code := codes.InvalidArgument
		if lerr.reason == reasonRate {
			code = codes.ResourceExhausted
		}
		s.metrics.streamsRejected.WithLabelValues(protocol.KindRegister.String(), code.String()).Inc()
		// Upstream agents read the message before the stream ends.
		_ = stream.Send(&fodcv1.RegisterAgentResponse{Success: false, Message: lerr.Error()})
		return status.Error(code, lerr.Error())
	}
	principal := principalOf(ctx)
	if pod := first.GetPodName(); !principal.MayRegister(pod) {
		s.metrics.streamsRejected.WithLabelValues(protocol.KindRegister.String(), codes.PermissionDenied.String()).Inc()
		msg := fmt.Sprintf("pod name %q does not match the agent's identity (%s)", truncate(pod), principal.Bound())
		s.logger.Warn("Registration refused", "pod_name", truncate(pod), "principal", principal.Name, "peer", peerAddr(ctx), "err", msg)
		_ = stream.Send(&fodcv1.RegisterAgentResponse{Success: false, Message: msg})
		return status.Error(codes.PermissionDenied, msg)
	}
	id := identityFrom(first)
	id.Principal, id.Authenticated = principal.Name, principal.Authenticated
	agent, err := s.opts.Registry.Register(id)
	if err != nil {
		code := codes.InvalidArgument
		switch {
		case errors.Is(err, registry.ErrForeignPrincipal):
			code = codes.PermissionDenied
		case errors.Is(err, registry.ErrTooManyAgents):
			code = codes.ResourceExhausted
		case errors.Is(err, registry.ErrClosed):
			code = codes.Unavailable
		}
		s.metrics.streamsRejected.WithLabelValues(protocol.KindRegister.String(), code.String()).Inc()
		s.logger.Warn("Registration rejected", "pod_name", first.GetPodName(), "role", first.GetNodeRole(), "peer", peerAddr(ctx), "err", err)
		// Upstream agents read the message before the stream ends.
		_ = stream.Send(&fodcv1.RegisterAgentResponse{Success: false, Message: err.Error()})
		return status.Error(code, err.Error())
	}
	removed, ok := s.opts.Registry.RemovedContext(agent.ID)
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
		s.opts.Registry.Disconnect(agent.ID, registry.ReasonDisconnected, "registration answer not delivered: "+status.Code(toStatus(err)).String())
		return toStatus(err)
	}
	s.metrics.streamsOpen.WithLabelValues(protocol.KindRegister.String()).Inc()
	defer s.metrics.streamsOpen.WithLabelValues(protocol.KindRegister.String()).Dec()
	s.logger.Info("Agent connected", "agent_id", agent.ID, "pod_name", agent.PodName, "role", agent.RoleName, "peer", peerAddr(ctx))

	// This goroutine receives the heartbeats; the agent leaving the
	// registry or the proxy draining stop the stream, which makes Recv
	// return.
	unwatchRemoved := context.AfterFunc(removed, func() { st.stop(s.removedStatus(agent.ID)) })
	unwatchDrain := s.onDrain(st.stop)
	err = recvLoop(stream, func(hb *fodcv1.RegisterAgentRequest) error {
		s.metrics.heartbeats.Inc()
		if lerr := s.opts.Limits.check(hb); lerr != nil {
			s.metrics.registrationsRejected.WithLabelValues(lerr.reason).Inc()
			return status.Errorf(codes.InvalidArgument, "heartbeat refused: %v", lerr)
		}
		if _, err := s.opts.Registry.Heartbeat(agent.ID, identityFrom(hb)); err != nil {
			return status.Errorf(codes.NotFound, "heartbeat: %v; register again", err)
		}
		return nil
	})
	unwatchRemoved()
	unwatchDrain()
	s.noteTooLarge(protocol.KindRegister, agent.ID, err)
	if cause := st.stopped(); cause != nil {
		err = cause
	}
	reason, detail := disconnectCause(err)
	if s.opts.Registry.Disconnect(agent.ID, reason, detail) {
		s.logger.Info("Agent disconnected", "agent_id", agent.ID, "pod_name", agent.PodName, "detail", detail, "err", err)
	}
	return s.finish(protocol.KindRegister, err)
}

// admit applies the registration limits and the per-peer rate to a first
// registration message, counting and logging a refusal.
func (s *Service) admit(ctx context.Context, first *fodcv1.RegisterAgentRequest) *limitError {
	peer := peerAddr(ctx)
	lerr := s.opts.Limits.check(first)
	if lerr == nil && !s.perPeer.allow(peer, time.Now()) {
		lerr = &limitError{reasonRate, fmt.Sprintf("too many registrations from %s; retry later", truncate(peer))}
	}
	if lerr != nil {
		s.metrics.registrationsRejected.WithLabelValues(lerr.reason).Inc()
		s.logger.Warn("Registration refused", "pod_name", truncate(first.GetPodName()), "peer", peer, "reason", lerr.reason, "err", lerr)
	}
	return lerr
}

// disconnectCause says why a registration stream ended, for the offline
// entry it leaves behind: the proxy shutting down, or the stream ending with
// the gRPC code the agent sees ("stream ended: Unavailable"; an agent that
// closed its side cleanly gives "stream ended: OK"). A stream ended because
// its entry was superseded or removed leaves nothing behind: Disconnect
// ignores ids that are no longer usable.
func disconnectCause(err error) (registry.Reason, string) {
	if errors.Is(err, errDraining) {
		return registry.ReasonShutdown, "proxy shutdown"
	}
	return registry.ReasonDisconnected, "stream ended: " + status.Code(toStatus(err)).String()
}

// firstRegistration waits for the registration message, but not past
// Options.RegistrationWait or a drain, so that a silent client holds nothing:
// either stops the stream, which ends the wait in Recv.
func (s *Service) firstRegistration(stream fodcv1.FODCService_RegisterAgentServer, st *stopper) (*fodcv1.RegisterAgentRequest, error) {
	wait := s.opts.RegistrationWait
	t := time.AfterFunc(wait, func() {
		st.stop(status.Errorf(codes.DeadlineExceeded, "no registration message within %s of opening the stream", wait))
	})
	unwatchDrain := s.onDrain(st.stop)
	m, err := stream.Recv()
	// Once both are cancelled, neither can stop the stream any more. One
	// that could not be cancelled has stopped it, or is about to.
	timedOut, drained := !t.Stop(), !unwatchDrain()
	switch {
	case timedOut:
		return nil, status.Errorf(codes.DeadlineExceeded, "no registration message within %s of opening the stream", wait)
	case drained:
		return nil, errDraining
	}
	return m, err
}

// finish counts and translates the error that ended a stream.
func (s *Service) finish(kind protocol.Kind, err error) error {
	st := toStatus(err)
	if st != nil {
		code := status.Code(st)
		if code != codes.Canceled {
			s.metrics.streamErrors.WithLabelValues(kind.String(), code.String()).Inc()
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
	case reason == registry.ReasonDisconnected:
		return status.Errorf(codes.NotFound, "agent %s is offline: its registration stream ended; register again", agentID)
	case reason == registry.ReasonRestart:
		return status.Errorf(codes.NotFound, "agent %s was registered with an earlier run of the proxy; register again", agentID)
	default:
		return status.Errorf(codes.NotFound, "agent %s is no longer registered (%s); register again", agentID, reason)
	}
}

// authenticate attributes a non-registration stream to a live agent by its
// agent_id metadata (PROTOCOL.md §2.4; unlike upstream, unknown and stale
// ids are refused so that the agent re-registers cleanly, W6/W7).
func (s *Service) authenticate(ctx context.Context, kind protocol.Kind) (string, context.Context, error) {
	id := agentIDOf(ctx)
	if id == "" {
		s.metrics.streamsRejected.WithLabelValues(kind.String(), "missing_agent_id").Inc()
		return "", nil, status.Error(codes.Unauthenticated, "agent_id metadata missing; register first and send the returned agent_id")
	}
	removed, ok := s.opts.Registry.RemovedContext(id)
	if !ok {
		s.metrics.streamsRejected.WithLabelValues(kind.String(), "unknown_agent_id").Inc()
		return "", nil, s.removedStatus(id)
	}
	// The stream must come from whoever registered the id: the same
	// certificate or token or, unauthenticated, the same connection.
	if a, ok := s.opts.Registry.Get(id); ok && a.Principal != principalOf(ctx).Name {
		s.metrics.streamsRejected.WithLabelValues(kind.String(), "foreign_principal").Inc()
		s.logger.Warn("Agent stream refused: not opened by the agent's principal", "agent_id", id, "stream", kind, "peer", peerAddr(ctx))
		return "", nil, status.Errorf(codes.PermissionDenied, "agent %s was registered by another connection or identity", id)
	}
	return id, removed, nil
}

// agentIDOf reads the agent id a stream was opened with.
func agentIDOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if ids := md.Get(protocol.MetadataAgentID); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// serve runs one non-registration stream until the agent ends it, the agent
// leaves the registry, or the proxy drains. open publishes the stream's
// handle in the table; receive takes each message of the agent and says
// what became of it.
func serve[Req, Cmd any, H handle[Cmd]](s *Service, kind protocol.Kind, stream serverStream[Req, Cmd],
	open func(agentID string) (H, error), receive func(H, *Req) streams.Outcome,
) error {
	ctx := stream.Context()
	st, err := stopperOf(ctx)
	if err != nil {
		return err
	}
	if s.drained.Err() != nil {
		return toStatus(errDraining)
	}
	agentID, removed, err := s.authenticate(ctx, kind)
	if err != nil {
		return err
	}
	h, err := open(agentID)
	if err != nil {
		s.metrics.streamsRejected.WithLabelValues(kind.String(), "duplicate").Inc()
		return toStatus(err)
	}
	s.metrics.streamsOpen.WithLabelValues(kind.String()).Inc()
	defer s.metrics.streamsOpen.WithLabelValues(kind.String()).Dec()
	s.logger.Debug("Agent stream opened", "agent_id", agentID, "stream", kind)

	// Whatever closes the handle (the agent leaving the registry, the proxy
	// draining, a stuck command, a failed Send) stops the stream, which
	// ends the receive loop below. Commands are sent by the handle's own
	// sender goroutine, which runs only while commands wait: an idle stream
	// costs this goroutine alone.
	h.Attach(stream.Send, st.stop)
	unwatchRemoved := context.AfterFunc(removed, func() { h.Close(s.removedStatus(agentID)) })
	unwatchDrain := s.onDrain(h.Close)
	err = recvLoop(stream, func(m *Req) error {
		switch o := receive(h, m); o {
		case streams.Unsolicited, streams.Abandoned:
			s.metrics.repliesDiscarded.WithLabelValues(kind.String(), o.String()).Inc()
		}
		return nil
	})
	unwatchRemoved()
	unwatchDrain()
	s.noteTooLarge(kind, agentID, err)
	h.Close(err)
	// gRPC forbids Send once the handler returned; Close stopped the
	// stream, so a Send in progress fails at once.
	h.Wait()
	cause := h.Err()
	if errors.Is(cause, streams.ErrStuck) {
		s.metrics.slowDisconnects.WithLabelValues(kind.String()).Inc()
		s.logger.Warn("Disconnected agent stream that left a command unanswered", "agent_id", agentID, "stream", kind, "err", cause)
	}
	s.logger.Debug("Agent stream closed", "agent_id", agentID, "stream", kind, "err", cause)
	return s.finish(kind, cause)
}

// noteTooLarge counts and logs a message refused for being over
// --grpc-max-msg-size: gRPC ends the stream with ResourceExhausted, and the
// agent usually re-registers and sends it again, so the refusal must be
// visible where an operator looks.
func (s *Service) noteTooLarge(kind protocol.Kind, agentID string, err error) {
	if status.Code(err) != codes.ResourceExhausted {
		return
	}
	s.metrics.messagesTooLarge.WithLabelValues(kind.String()).Inc()
	s.logger.Warn("Agent message over --grpc-max-msg-size refused; the stream ends", "agent_id", agentID, "stream", kind, "err", err)
}

// StreamMetricsRaw carries metrics commands and the agent's replies,
// which it passes on undecoded (see Register).
func (s *Service) StreamMetricsRaw(stream MetricsServer) error {
	return serve(s, protocol.KindMetrics, stream, s.opts.Streams.OpenMetrics, func(h *streams.Metrics, m *series.RawMetrics) streams.Outcome {
		o := h.Deliver(m) // shares the reply with the callers that get it
		m.Release()       // the receiver's own reference
		return o
	})
}

// StreamClusterTopology carries topology commands and the agent's reports.
func (s *Service) StreamClusterTopology(stream fodcv1.FODCService_StreamClusterTopologyServer) error {
	return serve(s, protocol.KindTopology, stream, s.opts.Streams.OpenTopology, (*streams.Topology).Deliver)
}

// ExtStreamNodeConfig carries configuration requests, an extension of this
// project: only our agents open it, and each command gets one report.
func (s *Service) ExtStreamNodeConfig(stream fodcv1.FODCService_ExtStreamNodeConfigServer) error {
	return serve(s, protocol.KindNodeConfig, stream, s.opts.Streams.OpenNodeConfig, (*streams.NodeConfig).Deliver)
}

// ExtStreamProfiles carries on-demand profile requests, an extension of
// this project: only our agents open it (see streams.Profiles).
func (s *Service) ExtStreamProfiles(stream fodcv1.FODCService_ExtStreamProfilesServer) error {
	return serve(s, protocol.KindProfiles, stream, s.opts.Streams.OpenProfiles, (*streams.Profiles).Receive)
}

// StreamLifecycle carries lifecycle commands. An agent answers a command
// once or, when its local collection fails, never; replies therefore go to
// whoever waits when they arrive (see streams.Lifecycle).
func (s *Service) StreamLifecycle(stream fodcv1.FODCService_StreamLifecycleServer) error {
	return serve(s, protocol.KindLifecycle, stream, s.opts.Streams.OpenLifecycle, (*streams.Lifecycle).Receive)
}

// StreamCrashDiagnostics carries crash-record requests; the agent answers
// with one message per record it holds and no end marker, so records are
// handed to Options.OnCrashRecord as they arrive.
func (s *Service) StreamCrashDiagnostics(stream fodcv1.FODCService_StreamCrashDiagnosticsServer) error {
	return serve(s, protocol.KindCrash, stream, s.opts.Streams.OpenCrash,
		func(c *streams.Crash, m *fodcv1.StreamCrashDiagnosticsRequest) streams.Outcome {
			if s.opts.OnCrashRecord == nil {
				return streams.Unsolicited
			}
			s.opts.OnCrashRecord(c.AgentID(), m)
			return streams.Delivered
		})
}

// StreamPressureProfiles carries profile list rounds and downloads (see
// streams.Pressure).
func (s *Service) StreamPressureProfiles(stream fodcv1.FODCService_StreamPressureProfilesServer) error {
	return serve(s, protocol.KindPressure, stream, s.opts.Streams.OpenPressure, (*streams.Pressure).Receive)
}

// StreamSchemaRegistry carries registry reads: chunks and a done marker per
// command, assembled by streams.SchemaRegistry.
func (s *Service) StreamSchemaRegistry(stream fodcv1.FODCService_StreamSchemaRegistryServer) error {
	return serve(s, protocol.KindSchemaRegistry, stream, s.opts.Streams.OpenSchemaRegistry, (*streams.SchemaRegistry).Receive)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
