package agentsvc

import (
	"context"
	"errors"
	"io"

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
	Outbox() <-chan *Cmd
	Done() <-chan struct{}
	Err() error
	Close(cause error)
}

// sendUntilDone sends the session's queued commands on st until the
// receiver ends, the stream's context ends, the session is closed, the agent
// leaves the registry, or the proxy drains, and returns why. The goroutine
// that runs it is the only caller of Send on st.
func sendUntilDone[Req, Resp any](st serverStream[Req, Resp], h handle[Resp],
	recvErr <-chan error, removed, draining <-chan struct{}, removedStatus func() error,
) error {
	ctx := st.Context()
	out := h.Outbox()
	for {
		select {
		case m := <-out:
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-h.Done():
			return h.Err()
		case <-removed:
			return removedStatus()
		case <-draining:
			return errDraining
		}
	}
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
