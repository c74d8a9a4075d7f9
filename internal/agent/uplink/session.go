package uplink

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentconn"
	"github.com/fodc-go/fodc/internal/protocol"
)

const (
	// keepaliveTime must stay at or above the 5 min MinTime that grpc-go
	// servers enforce by default (upstream proxies keep that default):
	// pinging more often earns a GOAWAY too_many_pings. A dead proxy is
	// noticed much sooner by the liveness probe after every heartbeat
	// (agentconn.Config.Probe), which sends no pings.
	keepaliveTime    = 6 * time.Minute
	keepaliveTimeout = 20 * time.Second
	// cmdQueueLen bounds the commands read but not yet answered on one
	// stream; beyond it the receiver stops reading until the sender
	// catches up.
	cmdQueueLen = 16
)

// runSession makes one connection attempt, an agentconn session, and serves
// it until a stream fails or ctx is cancelled. healthy reports a registered
// session that sent a heartbeat or lasted Options.HealthyAfter.
func (c *Client) runSession(ctx context.Context) (healthy bool, err error) {
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	}
	streams := []agentconn.Stream{
		agentconn.Metrics(reply(c, protocol.KindMetrics, c.answerMetrics)),
		agentconn.Topology(reply(c, protocol.KindTopology, c.answerTopology)),
	}
	if c.opts.NodeConfig != nil {
		streams = append(streams, agentconn.NodeConfig(reply(c, protocol.KindNodeConfig, c.answerNodeConfig)))
	}
	if c.opts.Profiles != nil {
		streams = append(streams, agentconn.Profiles(multi(c, protocol.KindProfiles, c.opts.Profiles)))
	}
	streams = append(streams, c.upstreamStreams()...)
	var (
		agentID      string
		registeredAt time.Time
		heartbeats   atomic.Int64 // written by the heartbeat sender
	)
	_, err = agentconn.Run(ctx, agentconn.Config{
		Addr:              c.opts.ProxyAddr,
		DialOptions:       append(dial, c.opts.DialOptions...),
		Register:          func() *fodcv1.RegisterAgentRequest { ident := c.opts.Identity(); return ident.RegisterRequest() },
		HeartbeatInterval: c.opts.HeartbeatInterval,
		RegisterTimeout:   c.opts.RegisterTimeout,
		Streams:           streams,
		ReadAhead:         cmdQueueLen,
		CloseGrace:        c.opts.CloseGrace,
		Probe:             true,
		Probed:            c.probed,
		Registered: func(id string, interval time.Duration) {
			agentID, registeredAt = id, c.opts.Now()
			c.setRegistered(id)
			ident := c.opts.Identity()
			c.logger.Info("Registered with proxy", "agent_id", id, "proxy_addr", c.opts.ProxyAddr,
				"heartbeat_interval", interval.String(), "node_role", ident.Role.WireName(), "pod_name", ident.PodName)
		},
		Unregistered: func() {
			healthy = heartbeats.Load() > 0 || c.opts.Now().Sub(registeredAt) >= c.opts.HealthyAfter
			if ctx.Err() != nil {
				c.logger.Info("Disconnecting from proxy", "agent_id", agentID)
			}
			c.setUnregistered()
		},
		Heartbeat: func(err error) {
			if err != nil {
				c.m.replyErrors.WithLabelValues(protocol.KindRegister.String()).Inc()
				return
			}
			heartbeats.Add(1)
			c.heartbeatSent()
		},
		Command: func(kind protocol.Kind) bool {
			if kind != protocol.KindRegister {
				c.m.commands.WithLabelValues(kind.String()).Inc()
			}
			return true
		},
		Unimplemented: func(kind protocol.Kind) {
			c.setUnimplemented(kind.String())
			c.logger.Info("Proxy does not implement stream, switched off for this connection", "stream", kind)
		},
		Logger: c.logger,
	})
	return healthy, err
}

// reply adapts answer, which returns the one reply to a command (false:
// none), to agentconn. A reply too large to send is replaced by an empty
// one: the stream is intact, and the proxy still expects exactly one reply
// to the command.
func reply[Cmd, Reply any](c *Client, kind protocol.Kind, answer func(context.Context, *Cmd) (*Reply, bool)) agentconn.Handler[Cmd, Reply] {
	return func(ctx context.Context, cmd *Cmd, send func(*Reply) error) {
		r, ok := answer(ctx, cmd)
		if !ok {
			return
		}
		err := send(r)
		if err == nil || errors.Is(err, agentconn.ErrClosing) {
			return
		}
		c.m.replyErrors.WithLabelValues(kind.String()).Inc()
		if status.Code(err) != codes.ResourceExhausted {
			// The failure also surfaces on Recv.
			c.logger.Debug("Sending reply", "stream", kind, "err", err)
			return
		}
		c.logger.Warn("Reply too large, sending an empty one", "stream", kind, "err", err)
		var empty Reply
		if err := send(&empty); err != nil {
			c.logger.Debug("Sending empty reply", "stream", kind, "err", err)
		}
	}
}

// answerMetrics builds the one reply to a metrics command: the latest
// values for an empty command, else the samples in [start, end] with a
// missing bound open. Every series carries the identity labels.
func (c *Client) answerMetrics(_ context.Context, cmd *fodcv1.StreamMetricsResponse) (*fodcv1.StreamMetricsRequest, bool) {
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
func (c *Client) answerTopology(_ context.Context, cmd *fodcv1.StreamClusterTopologyResponse) (*fodcv1.StreamClusterTopologyRequest, bool) {
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
