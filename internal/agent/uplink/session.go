package uplink

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
)

const (
	// metadataAgentID carries the agent id on every stream but the
	// registration stream (PROTOCOL.md §2.4).
	metadataAgentID = "agent_id"
	// keepaliveTime must stay at or above the 5 min MinTime that grpc-go
	// servers enforce by default (upstream proxies keep that default):
	// pinging more often earns a GOAWAY too_many_pings.
	keepaliveTime    = 6 * time.Minute
	keepaliveTimeout = 20 * time.Second
	// cmdQueueLen bounds the commands read but not yet answered on one
	// stream; beyond it the receiver stops reading until the sender
	// catches up.
	cmdQueueLen = 16
	// sendCloseTimeout bounds how long teardown waits for the senders; one
	// can only be stuck in Send when the proxy stopped reading, and
	// closing the connection unblocks it.
	sendCloseTimeout = time.Second
)

// session is one connection: a ClientConn, its registration and the streams
// opened under one agent id. runSession owns it and tears it down before
// returning.
type session struct {
	c    *Client
	conn *grpc.ClientConn

	// streamCtx is the context of every stream. It is not derived from
	// Run's context so that shutdown can half-close the streams before the
	// connection goes; teardown cancels it last.
	streamCtx    context.Context
	cancelStream context.CancelFunc
	// answerCtx is handed to the answer functions that do I/O of their
	// own (Options.NodeConfig); teardown cancels it first.
	answerCtx     context.Context
	cancelAnswers context.CancelFunc

	sendWG sync.WaitGroup // the sender goroutines
	recvWG sync.WaitGroup // the receiver goroutines

	firstResp  chan *fodcv1.RegisterAgentResponse // buffered 1
	hbStart    chan time.Duration                 // buffered 1
	heartbeats atomic.Int64

	closing chan struct{} // closed when teardown starts

	mu     sync.Mutex    // guards the fields below
	err    error         // the first stream error
	failed chan struct{} // closed on the first stream error
	closed bool          // teardown has started
}

// runSession makes one connection attempt and serves it until a stream
// fails or ctx is cancelled. healthy reports a registered session that
// sent a heartbeat or lasted Options.HealthyAfter.
func (c *Client) runSession(ctx context.Context) (healthy bool, err error) {
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	}
	conn, err := grpc.NewClient(c.opts.ProxyAddr, append(dial, c.opts.DialOptions...)...)
	if err != nil {
		return false, fmt.Errorf("create client connection to %s: %w", c.opts.ProxyAddr, err)
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	answerCtx, cancelAnswers := context.WithCancel(ctx)
	s := &session{
		c:             c,
		conn:          conn,
		streamCtx:     streamCtx,
		cancelStream:  cancel,
		answerCtx:     answerCtx,
		cancelAnswers: cancelAnswers,
		firstResp:     make(chan *fodcv1.RegisterAgentResponse, 1),
		hbStart:       make(chan time.Duration, 1),
		closing:       make(chan struct{}),
		failed:        make(chan struct{}),
	}
	defer s.teardown()
	client := fodcv1.NewFODCServiceClient(conn)

	reg, err := client.RegisterAgent(streamCtx)
	if err != nil {
		return false, fmt.Errorf("open registration stream: %w", err)
	}
	ident := c.opts.Identity()
	s.serveRegistration(reg, ident.RegisterRequest())
	timer := time.NewTimer(c.opts.RegisterTimeout)
	defer timer.Stop()
	var resp *fodcv1.RegisterAgentResponse
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-timer.C:
		return false, fmt.Errorf("no registration reply within %s", c.opts.RegisterTimeout)
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
	agentID, interval, err := protocol.AcceptRegistration(resp, c.opts.HeartbeatInterval)
	if err != nil {
		return false, err
	}
	s.hbStart <- interval
	registeredAt := c.opts.Now()
	c.setRegistered(agentID)
	defer c.setUnregistered()
	c.logger.Info("Registered with proxy", "agent_id", agentID, "proxy_addr", c.opts.ProxyAddr,
		"heartbeat_interval", interval.String(), "node_role", ident.Role.WireName(), "pod_name", ident.PodName)
	defer func() {
		healthy = s.heartbeats.Load() > 0 || c.opts.Now().Sub(registeredAt) >= c.opts.HealthyAfter
	}()

	mdCtx := metadata.AppendToOutgoingContext(streamCtx, metadataAgentID, agentID)
	ms, err := client.StreamMetrics(mdCtx)
	if err != nil {
		return false, fmt.Errorf("open metrics stream: %w", err)
	}
	serve(s, StreamMetrics, ms, c.answerMetrics)
	ts, err := client.StreamClusterTopology(mdCtx)
	if err != nil {
		return false, fmt.Errorf("open topology stream: %w", err)
	}
	serve(s, StreamTopology, ts, c.answerTopology)
	if c.opts.NodeConfig != nil {
		cs, err := client.ExtStreamNodeConfig(mdCtx)
		if err != nil {
			return false, fmt.Errorf("open node configuration stream: %w", err)
		}
		serve(s, StreamNodeConfig, cs, func(cmd *fodcv1.ExtNodeConfigResponse) (*fodcv1.ExtNodeConfigRequest, bool) {
			return c.answerNodeConfig(s.answerCtx, cmd)
		})
	}

	select {
	case <-ctx.Done():
		c.logger.Info("Disconnecting from proxy", "agent_id", agentID)
		return false, ctx.Err()
	case <-s.failed:
		return false, s.failure()
	}
}

// answerMetrics builds the one reply to a metrics command: the latest
// values for an empty command, else the samples in [start, end] with a
// missing bound open. Every series carries the identity labels.
func (c *Client) answerMetrics(cmd *fodcv1.StreamMetricsResponse) (*fodcv1.StreamMetricsRequest, bool) {
	start, end := cmd.GetStartTime(), cmd.GetEndTime()
	var ms []*fodcv1.Metric
	if start == nil && end == nil {
		ms = c.opts.Source.Latest()
	} else {
		ms = c.opts.Source.Window(start.AsTime(), end.AsTime(), start != nil, end != nil)
	}
	ident := c.opts.Identity()
	stamp(ms, ident.StampLabels())
	return &fodcv1.StreamMetricsRequest{Metrics: ms, Timestamp: timestamppb.New(c.opts.Now())}, true
}

// answerTopology reports the agent's own node for request_topology=true
// and ignores false.
func (c *Client) answerTopology(cmd *fodcv1.StreamClusterTopologyResponse) (*fodcv1.StreamClusterTopologyRequest, bool) {
	if !cmd.GetRequestTopology() {
		return nil, false
	}
	ident := c.opts.Identity()
	return &fodcv1.StreamClusterTopologyRequest{
		Timestamp: timestamppb.New(c.opts.Now()),
		Topology:  &fodcv1.Topology{Nodes: []*databasev1.Node{ident.Node()}},
	}, true
}

// answerNodeConfig reports the node's configuration for
// request_config=true and ignores false. A nil report from
// Options.NodeConfig becomes an empty one: the proxy expects exactly one
// reply per command.
func (c *Client) answerNodeConfig(ctx context.Context, cmd *fodcv1.ExtNodeConfigResponse) (*fodcv1.ExtNodeConfigRequest, bool) {
	if !cmd.GetRequestConfig() {
		return nil, false
	}
	r := c.opts.NodeConfig(ctx)
	if r == nil {
		r = &fodcv1.ExtNodeConfigRequest{CollectedAt: timestamppb.New(c.opts.Now())}
	}
	return r, true
}

// fail records the first error of a stream and wakes runSession. Errors
// after teardown has started are its result and are ignored.
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

// teardown half-closes every stream, gives the proxy CloseGrace to end
// them, closes the connection and returns once every goroutine of the
// session has stopped.
func (s *session) teardown() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.cancelAnswers()

	sendersDone := make(chan struct{})
	receiversDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.sendWG.Wait(); close(sendersDone) })
	wg.Go(func() { s.recvWG.Wait(); close(receiversDone) })

	waitFor(sendersDone, sendCloseTimeout)
	waitFor(receiversDone, s.c.opts.CloseGrace)
	if err := s.conn.Close(); err != nil {
		s.c.logger.Debug("Closing connection", "err", err)
	}
	s.cancelStream()
	wg.Wait()
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
// sender sends first, waits for the negotiated interval and then sends a
// heartbeat, with the current identity, every interval. The receiver hands
// the first reply to runSession and then discards anything else until the
// stream ends.
func (s *session) serveRegistration(st grpc.BidiStreamingClient[fodcv1.RegisterAgentRequest, fodcv1.RegisterAgentResponse], first *fodcv1.RegisterAgentRequest) {
	c := s.c
	s.sendWG.Go(func() {
		defer func() { _ = st.CloseSend() }()
		if err := st.Send(first); err != nil {
			// The failure also surfaces on Recv, which ends the session.
			c.logger.Debug("Sending registration", "err", err)
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
				ident := c.opts.Identity()
				if err := st.Send(ident.RegisterRequest()); err != nil {
					// Recv decides whether the session is lost.
					c.m.replyErrors.WithLabelValues(StreamRegister).Inc()
					c.logger.Debug("Sending heartbeat", "err", err)
					continue
				}
				s.heartbeats.Add(1)
				c.heartbeatSent()
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
			}
		}
	})
}

// serve starts the goroutines of a command stream. The receiver reads
// commands and queues them; the sender, the only goroutine that calls Send
// and CloseSend on st, answers each in order with answer, which returns
// false for a command that gets no reply. Unimplemented on the first Recv
// switches the stream off for this session instead of failing it.
func serve[Req, Resp any](s *session, name string, st grpc.BidiStreamingClient[Req, Resp], answer func(*Resp) (*Req, bool)) {
	c := s.c
	cmds := make(chan *Resp, cmdQueueLen)
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
				reply, ok := answer(cmd)
				if !ok {
					continue
				}
				if err := st.Send(reply); err != nil {
					c.m.replyErrors.WithLabelValues(name).Inc()
					if status.Code(err) != codes.ResourceExhausted {
						// The failure also surfaces on Recv.
						c.logger.Debug("Sending reply", "stream", name, "err", err)
						continue
					}
					// Too large to send: the stream is intact, and the proxy
					// still expects exactly one reply to this command.
					c.logger.Warn("Reply too large, sending an empty one", "stream", name, "err", err)
					var empty Req
					if err := st.Send(&empty); err != nil {
						c.logger.Debug("Sending empty reply", "stream", name, "err", err)
					}
				}
			}
		}
	})
	s.recvWG.Go(func() {
		defer close(cmds)
		for first := true; ; first = false {
			cmd, err := st.Recv()
			if err != nil {
				if first && status.Code(err) == codes.Unimplemented {
					c.setUnimplemented(name)
					c.logger.Info("Proxy does not implement stream, switched off for this connection", "stream", name)
					return
				}
				s.fail(name, err)
				return
			}
			c.m.commands.WithLabelValues(name).Inc()
			select {
			case cmds <- cmd:
			case <-s.closing:
				return
			}
		}
	})
}
