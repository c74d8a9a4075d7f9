package agentsvc

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors that end a session; toStatus maps them to gRPC codes.
var (
	errSlow     = errors.New("agent is not keeping up with commands")
	errStuck    = errors.New("agent left a command unanswered too long")
	errDraining = errors.New("proxy is shutting down")
	errClosed   = errors.New("stream closed")
)

// serverStream is the part of grpc.BidiStreamingServer a session needs.
type serverStream[Req, Resp any] interface {
	Send(*Resp) error
	Recv() (*Req, error)
	Context() context.Context
}

// session is one open agent stream of any kind: a bounded outbound queue
// drained by exactly one sender goroutine, and a close signal. Other
// goroutines only ever enqueue, and never block doing so.
type session[Resp any] struct {
	agentID string
	kind    string
	out     chan *Resp
	closed  chan struct{}

	once sync.Once
	err  error // why the session closed; written once, before closed is closed
}

func newSession[Resp any](agentID, kind string, queueLen int) *session[Resp] {
	return &session[Resp]{
		agentID: agentID,
		kind:    kind,
		out:     make(chan *Resp, queueLen),
		closed:  make(chan struct{}),
	}
}

// enqueue hands m to the sender without blocking. It fails with errSlow
// when the queue is full and with the close cause once the session closed.
func (ss *session[Resp]) enqueue(m *Resp) error {
	select {
	case <-ss.closed:
		return ss.cause()
	default:
	}
	select {
	case ss.out <- m:
		return nil
	case <-ss.closed:
		return ss.cause()
	default:
		return errSlow
	}
}

// closeWith records the first cause and wakes everyone waiting on closed.
func (ss *session[Resp]) closeWith(err error) {
	ss.once.Do(func() {
		if err == nil {
			err = errClosed
		}
		ss.err = err
		close(ss.closed)
	})
}

// cause returns why the session closed; only valid after closed is closed.
func (ss *session[Resp]) cause() error {
	select {
	case <-ss.closed:
		return ss.err
	default:
		return nil
	}
}

// sendUntilDone sends the session's queued commands on st until the
// receiver ends, the stream's context ends, the session is closed, the agent
// leaves the registry, or the proxy drains, and returns why. The goroutine
// that runs it is the only caller of Send on st.
func sendUntilDone[Req, Resp any](st serverStream[Req, Resp], ss *session[Resp],
	recvErr <-chan error, removed, draining <-chan struct{}, removedStatus func() error,
) error {
	ctx := st.Context()
	for {
		select {
		case m := <-ss.out:
			if err := st.Send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-ss.closed:
			return ss.cause()
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
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, errClosed):
		return nil
	case errors.Is(err, errSlow), errors.Is(err, errStuck):
		return status.Error(codes.ResourceExhausted, err.Error())
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
