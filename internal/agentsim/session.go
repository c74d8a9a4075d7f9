package agentsim

import (
	"context"
	"errors"
	"time"

	"github.com/fodc-go/fodc/internal/timeutil"

	"google.golang.org/grpc"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentconn"
	"github.com/fodc-go/fodc/internal/protocol"
)

// runSession makes one connection attempt and serves it until a stream fails
// or ctx is cancelled. established reports whether registration succeeded
// and every stream was opened.
//
// The session is an agentconn session set up like the upstream agent: no
// registration timeout, every Recv error ends the session (Unimplemented
// included), and a receiver reads the next command only once the previous
// one has been answered.
func (a *Agent) runSession(ctx context.Context) (established bool, err error) {
	var dial []grpc.DialOption
	if a.cfg.Release == protocol.ReleaseHEAD {
		dial = append(dial, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)))
	}
	var agentID string
	res, err := agentconn.Run(ctx, agentconn.Config{
		Addr:              a.cfg.ProxyAddr,
		DialOptions:       dial,
		Register:          func() *fodcv1.RegisterAgentRequest { return a.cfg.Register },
		HeartbeatInterval: a.cfg.HeartbeatInterval,
		Streams:           a.streams(),
		CloseGrace:        a.cfg.CloseGrace,
		Registered: func(id string, interval time.Duration) {
			agentID = id
			a.setRegistered(id, interval)
			a.logger.Info("Agent registered", "agent_id", id, "heartbeat_interval", interval)
		},
		Unregistered: a.setUnregistered,
		Heartbeat: func(err error) {
			// Upstream only logs a failed heartbeat; Recv decides.
			if err == nil {
				a.heartbeatSent()
			}
		},
		Command: a.command,
		Logger:  a.logger,
	})
	if res.Established && ctx.Err() != nil {
		a.logger.Info("Agent stopping", "agent_id", agentID)
	}
	return res.Established, err
}

// streams returns the agent's command streams in opening order.
func (a *Agent) streams() []agentconn.Stream {
	kinds := a.Streams()
	out := make([]agentconn.Stream, 0, len(kinds))
	for _, k := range kinds {
		switch k {
		case protocol.KindMetrics:
			out = append(out, agentconn.Metrics(handler(a, k, a.handleMetrics)))
		case protocol.KindTopology:
			out = append(out, agentconn.Topology(handler(a, k, a.handleTopology)))
		case protocol.KindLifecycle:
			out = append(out, agentconn.Lifecycle(handler(a, k, a.handleLifecycle)))
		case protocol.KindSchemaRegistry:
			out = append(out, agentconn.SchemaRegistry(handler(a, k, a.handleSchemaRegistry)))
		case protocol.KindCrash:
			out = append(out, agentconn.Crash(handler(a, k, a.handleCrash)))
		case protocol.KindPressure:
			out = append(out, agentconn.Pressure(handler(a, k, a.handlePressure)))
		}
	}
	return out
}

// handler adapts handle to agentconn: it waits Config.ReplyDelay first,
// and its send reports false once the session closes; other send errors
// are only logged, since they also surface on Recv, which ends the session.
func handler[Cmd, Reply any](a *Agent, kind protocol.Kind, handle func(cmd *Cmd, send func(*Reply) bool)) agentconn.Handler[Cmd, Reply] {
	return func(ctx context.Context, cmd *Cmd, send func(*Reply) error) {
		if !a.delay(ctx, kind) {
			return
		}
		handle(cmd, func(m *Reply) bool {
			err := send(m)
			if errors.Is(err, agentconn.ErrClosing) {
				return false
			}
			if err != nil {
				a.logger.Debug("Sending reply", "stream", kind, "err", err)
			}
			return true
		})
	}
}

// delay waits for Config.ReplyDelay of kind; it returns false when ctx
// (the session) ends first.
func (a *Agent) delay(ctx context.Context, kind protocol.Kind) bool {
	if a.cfg.ReplyDelay == nil {
		return true
	}
	return timeutil.Sleep(ctx, a.cfg.ReplyDelay(kind))
}
