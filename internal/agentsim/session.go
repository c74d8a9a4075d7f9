package agentsim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
)

// session is one connection of the agent: a ClientConn, its registration and
// the streams opened under one agent id. runSession owns it and tears it
// down before returning.
type session struct {
	a    *Agent
	conn *grpc.ClientConn

	// streamCtx is the context of every stream. Like the upstream agent's it
	// is not derived from Run's ctx, so that shutdown can half-close the
	// streams before the connection goes; teardown cancels it last.
	streamCtx    context.Context
	cancelStream context.CancelFunc

	sendWG sync.WaitGroup // the sender goroutines
	recvWG sync.WaitGroup // the receiver goroutines

	firstResp chan *fodcv1.RegisterAgentResponse // the registration reply; buffered 1
	hbStart   chan time.Duration                 // the negotiated heartbeat interval; buffered 1

	mu      sync.Mutex    // guards the fields below
	err     error         // the first stream error
	failed  chan struct{} // closed on the first stream error
	closing chan struct{} // closed when teardown starts
	closed  bool          // closing has been closed
}

// runSession makes one connection attempt and serves it until a stream fails
// or ctx is cancelled. established reports whether registration succeeded
// and every stream was opened.
func (a *Agent) runSession(ctx context.Context) (established bool, err error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if a.cfg.Version == VersionHEAD {
		opts = append(opts, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)))
	}
	conn, err := grpc.NewClient(a.cfg.ProxyAddr, opts...)
	if err != nil {
		return false, fmt.Errorf("create client connection to %s: %w", a.cfg.ProxyAddr, err)
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	s := &session{
		a:            a,
		conn:         conn,
		streamCtx:    streamCtx,
		cancelStream: cancel,
		firstResp:    make(chan *fodcv1.RegisterAgentResponse, 1),
		hbStart:      make(chan time.Duration, 1),
		failed:       make(chan struct{}),
		closing:      make(chan struct{}),
	}
	defer s.teardown()
	client := fodcv1.NewFODCServiceClient(conn)

	reg, err := client.RegisterAgent(streamCtx)
	if err != nil {
		return false, fmt.Errorf("open registration stream: %w", err)
	}
	s.serveRegistration(reg)
	// The upstream agent waits for the reply without a timeout.
	var resp *fodcv1.RegisterAgentResponse
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.failed:
		// A rejecting proxy replies and then ends the stream; the receiver
		// hands over the reply before it reports the end, so prefer it.
		select {
		case resp = <-s.firstResp:
		default:
			return false, s.failure()
		}
	case resp = <-s.firstResp:
	}
	id, interval, err := protocol.AcceptRegistration(resp, a.cfg.HeartbeatInterval)
	if err != nil {
		return false, err
	}
	s.hbStart <- interval
	a.setRegistered(id, interval)
	defer a.setUnregistered()
	a.logger.Info("Agent registered", "agent_id", id, "heartbeat_interval", interval)

	mdCtx := metadata.AppendToOutgoingContext(streamCtx, "agent_id", id)
	for _, name := range a.Streams() {
		if err := s.open(mdCtx, client, name); err != nil {
			return false, fmt.Errorf("open %s stream: %w", name, err)
		}
	}
	select {
	case <-ctx.Done():
		a.logger.Info("Agent stopping", "agent_id", id)
		return true, ctx.Err()
	case <-s.failed:
		return true, s.failure()
	}
}

// open opens the named stream and starts its goroutines.
func (s *session) open(ctx context.Context, client fodcv1.FODCServiceClient, name string) error {
	switch name {
	case StreamMetrics:
		st, err := client.StreamMetrics(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handleMetrics)
	case StreamTopology:
		st, err := client.StreamClusterTopology(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handleTopology)
	case StreamLifecycle:
		st, err := client.StreamLifecycle(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handleLifecycle)
	case StreamSchemaRegistry:
		st, err := client.StreamSchemaRegistry(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handleSchemaRegistry)
	case StreamCrash:
		st, err := client.StreamCrashDiagnostics(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handleCrash)
	case StreamPressure:
		st, err := client.StreamPressureProfiles(ctx)
		if err != nil {
			return err
		}
		serve(s, name, st, s.handlePressure)
	default:
		return fmt.Errorf("unknown stream %q", name)
	}
	return nil
}

// fail records the first error of a stream and wakes runSession. Errors after
// teardown has started are the result of the teardown and are ignored.
func (s *session) fail(stream string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.err != nil {
		return
	}
	s.err = fmt.Errorf("%s stream: %w", stream, err)
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

// teardown stops the session the way the upstream agent does on SIGTERM and
// before a reconnect: half-close every stream, then close the connection. It
// returns once every goroutine of the session has stopped.
func (s *session) teardown() {
	s.mu.Lock()
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	sendersDone := make(chan struct{})
	receiversDone := make(chan struct{})
	go func() { s.sendWG.Wait(); close(sendersDone) }()
	go func() { s.recvWG.Wait(); close(receiversDone) }()

	waitFor(sendersDone, sendCloseTimeout)
	if g := s.a.cfg.CloseGrace; g > 0 {
		// Give the proxy the chance to see io.EOF and end the streams.
		waitFor(receiversDone, g)
	}
	if err := s.conn.Close(); err != nil {
		s.a.logger.Debug("Closing connection", "err", err)
	}
	s.cancelStream()
	<-sendersDone
	<-receiversDone
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

// delay waits for Config.ReplyDelay of stream; it returns false when the
// session closes first.
func (s *session) delay(stream string) bool {
	if s.a.cfg.ReplyDelay == nil {
		return true
	}
	d := s.a.cfg.ReplyDelay(stream)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

// serveRegistration starts the two goroutines of the registration stream.
// The sender sends the registration, waits for the negotiated interval and
// then sends a heartbeat every interval, the first one interval after
// registration. The receiver hands the first reply to runSession and then
// reads and discards anything else until the stream ends.
func (s *session) serveRegistration(st grpc.BidiStreamingClient[fodcv1.RegisterAgentRequest, fodcv1.RegisterAgentResponse]) {
	req := s.a.cfg.Register
	s.sendWG.Go(func() {
		defer func() { _ = st.CloseSend() }()
		if err := st.Send(req); err != nil {
			// The failure also surfaces on Recv, which ends the session.
			s.a.logger.Debug("Sending registration", "err", err)
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
				// Upstream only logs a failed heartbeat; Recv decides.
				if err := st.Send(req); err != nil {
					s.a.logger.Debug("Sending heartbeat", "err", err)
					continue
				}
				s.a.heartbeats.Add(1)
			}
		}
	})
	s.recvWG.Go(func() {
		first := true
		for {
			resp, err := st.Recv()
			if err != nil {
				s.fail(StreamRegister, err)
				return
			}
			if first {
				first = false
				s.firstResp <- resp
				continue
			}
			if !s.isClosing() {
				s.a.command(StreamRegister)
			}
		}
	})
}

// serve starts the two goroutines of a command stream. The receiver reads
// commands and hands each to handle, one after another; handle answers
// through send, which queues for the sender, the only goroutine that calls
// Send and CloseSend on st. send returns false once the session is closing.
func serve[Req, Resp any](s *session, name string, st grpc.BidiStreamingClient[Req, Resp], handle func(cmd *Resp, send func(*Req) bool)) {
	out := make(chan *Req)
	s.sendWG.Go(func() {
		defer func() { _ = st.CloseSend() }()
		for {
			select {
			case <-s.closing:
				return
			case m := <-out:
				if err := st.Send(m); err != nil {
					// The failure also surfaces on Recv, which ends the session.
					s.a.logger.Debug("Sending reply", "stream", name, "err", err)
				}
			}
		}
	})
	send := func(m *Req) bool {
		select {
		case out <- m:
			return true
		case <-s.closing:
			return false
		}
	}
	s.recvWG.Go(func() {
		for {
			cmd, err := st.Recv()
			if err != nil {
				s.fail(name, err)
				return
			}
			if s.isClosing() || !s.a.command(name) || !s.delay(name) {
				continue
			}
			handle(cmd, send)
		}
	})
}
