package agentsvc

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// errDraining ends every session when the proxy shuts down.
var errDraining = errors.New("proxy is shutting down")

// serverStream is the part of grpc.BidiStreamingServer a session needs.
type serverStream[Req, Resp any] interface {
	Send(*Resp) error
	Recv() (*Req, error)
	Context() context.Context
}

// handle is the part of a streams handle (streams.Metrics, ...) that the
// gRPC side of a stream drives.
type handle[Cmd any] interface {
	Attach(send func(*Cmd) error, stop func(error))
	Err() error
	Close(cause error)
	Wait()
}

// stopper ends one gRPC stream from any goroutine.
//
// grpc-go ends a server stream when its handler returns, and Recv returns
// only on a message, the client's end or the stream's context ending. An
// idle stream's only goroutine is its handler, blocked in Recv; to end it
// (eviction, a stuck command, shutdown) the proxy writes the stream's final
// status on the transport stream. That ends the stream at once with the
// status the agent is meant to see, and cancels the stream's context, which
// makes Recv return; the handler's own return value is then ignored by
// gRPC. Cancelling the context alone would not do: Recv failing on a
// cancelled context makes gRPC end the stream as Canceled.
type stopper struct {
	ts statusWriter

	mu    sync.Mutex
	cause error // the first cause given to stop
}

// statusWriter is the method of grpc-go's server transport stream, the one
// grpc.ServerTransportStreamFromContext returns, that writes the final
// status of the stream. gRPC itself calls it when a handler returns and,
// concurrently with the handler, when Recv fails.
type statusWriter interface {
	WriteStatus(*status.Status) error
}

// errNotStoppable ends a stream the service cannot end on its own terms:
// the gRPC server's transport stream lacks WriteStatus (a grpc-go this
// code was not built for).
var errNotStoppable = status.Error(codes.Internal, "agentsvc: cannot end streams on this gRPC server: its transport stream has no WriteStatus")

// stopperOf returns the stopper of the stream whose context is ctx.
func stopperOf(ctx context.Context) (*stopper, error) {
	ts, ok := grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
	if !ok {
		return nil, errNotStoppable
	}
	return &stopper{ts: ts}, nil
}

// stop ends the stream with the status toStatus gives cause (OK for nil
// and ErrClosed), unless it has ended already. Later calls do nothing.
func (s *stopper) stop(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause != nil {
		return
	}
	if cause == nil {
		cause = streams.ErrClosed
	}
	s.cause = cause
	_ = s.ts.WriteStatus(status.Convert(toStatus(cause)))
}

// stopped returns the cause given to stop, nil if it was not called.
func (s *stopper) stopped() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cause
}

// recvLoop feeds every inbound message to handle until the stream ends. An
// agent half-closing its side (io.EOF) ends the loop without error.
func recvLoop[Req, Resp any](st serverStream[Req, Resp], handle func(*Req) error) error {
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := handle(m); err != nil {
			return err
		}
	}
}

// toStatus translates the cause that ended a stream into what the agent
// sees. It is the only place that chooses codes for ended sessions.
func toStatus(err error) error {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, streams.ErrClosed):
		return nil
	case errors.Is(err, streams.ErrStuck):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, streams.ErrDuplicate):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, errDraining):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unknown, err.Error())
}
