package streams

import (
	"errors"
	"sync"

	"github.com/fodc-go/fodc/internal/protocol"
)

// Errors that close a stream. The gRPC service maps them to status codes.
var (
	// ErrBusy means the stream's queue of unsent or unanswered commands
	// is full. It is the caller's failure, not the agent's: the request
	// fails and the stream stays open (only ErrStuck closes it).
	ErrBusy = errors.New("agent stream busy: too many commands in flight")
	// ErrStuck means the agent left a command unanswered for longer than
	// Limits.MaxCommandAge.
	ErrStuck = errors.New("agent left a command unanswered too long")
	// ErrClosed is the cause of a stream closed without one.
	ErrClosed = errors.New("stream closed")
	// ErrDuplicate means the agent already has a live stream of the kind.
	ErrDuplicate = errors.New("agent already has a live stream of this kind")
)

// session is the outbound side of one open agent stream of any kind: a
// bounded queue of commands drained by exactly one sender (the gRPC
// handler, through Outbox), and a close signal. Other goroutines only ever
// enqueue, and never block doing so.
type session[Cmd any] struct {
	agentID string
	kind    protocol.Kind
	out     chan *Cmd
	closed  chan struct{}
	detach  func() // removes the stream from its table

	once sync.Once
	err  error // why the session closed; written once, before closed is closed
}

func newSession[Cmd any](agentID string, kind protocol.Kind, queueLen int) *session[Cmd] {
	return &session[Cmd]{
		agentID: agentID,
		kind:    kind,
		out:     make(chan *Cmd, queueLen),
		closed:  make(chan struct{}),
		detach:  func() {},
	}
}

// AgentID returns the id of the agent on the other end.
func (ss *session[Cmd]) AgentID() string { return ss.agentID }

// Outbox returns the commands to send, in order. Exactly one goroutine,
// the stream's sender, reads it.
func (ss *session[Cmd]) Outbox() <-chan *Cmd { return ss.out }

// Done is closed once the stream is closed.
func (ss *session[Cmd]) Done() <-chan struct{} { return ss.closed }

// Err returns why the stream closed, or nil while it is open.
func (ss *session[Cmd]) Err() error {
	select {
	case <-ss.closed:
		return ss.err
	default:
		return nil
	}
}

// enqueue hands m to the sender without blocking. It fails with ErrBusy
// when the queue is full and with the close cause once the session closed.
func (ss *session[Cmd]) enqueue(m *Cmd) error {
	select {
	case <-ss.closed:
		return ss.err
	default:
	}
	select {
	case ss.out <- m:
		return nil
	case <-ss.closed:
		return ss.err
	default:
		return ErrBusy
	}
}

// closeWith records the first cause, wakes everyone waiting on Done and
// removes the stream from its table. It reports whether this call closed
// the session.
func (ss *session[Cmd]) closeWith(err error) bool {
	first := false
	ss.once.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		ss.err = err
		close(ss.closed)
		ss.detach()
		first = true
	})
	return first
}

// Outcome says what became of a message an agent sent.
type Outcome int

// The outcomes of Receive and Deliver.
const (
	// Delivered: a caller got it.
	Delivered Outcome = iota
	// Partial: part of a multi-message reply, kept until it is complete.
	Partial
	// Unsolicited: nobody had asked for it.
	Unsolicited
	// Abandoned: its caller had given up.
	Abandoned
)

// String returns the outcome's name as metrics label it.
func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Partial:
		return "partial"
	case Unsolicited:
		return "unsolicited"
	case Abandoned:
		return "abandoned"
	}
	return "unknown"
}
