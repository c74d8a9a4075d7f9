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
// bounded queue of commands, the stream's sender, and a close signal.
// Requesters only ever enqueue, and never block doing so.
//
// An idle stream must cost as little as possible (a proxy holds tens of
// thousands), so no goroutine waits for commands: enqueue starts a sender
// goroutine when a command arrives and none runs, and the sender returns
// as soon as the queue is empty. The gRPC handler meanwhile sits in Recv;
// since gRPC ends a stream only when its handler returns, closing the
// session calls the stop function given to Attach, which makes Recv return.
type session[Cmd any] struct {
	agentID string
	kind    protocol.Kind
	limit   int           // most commands waiting to be sent
	closed  chan struct{} // closed by closeWith
	detach  func()        // removes the stream from its table

	mu      sync.Mutex       // guards the fields below
	queue   []*Cmd           // commands waiting to be sent, oldest first; nil when none
	send    func(*Cmd) error // the stream's Send, set by Attach
	stop    func(error)      // ends the stream, set by Attach
	sending bool             // a sender goroutine runs
	outbox  chan *Cmd        // set by Outbox, instead of send
	ended   bool             // closeWith ran: no sender starts any more
	err     error            // why the session closed, set with ended

	senders sync.WaitGroup // the sender goroutine, if one runs
	once    sync.Once
}

func newSession[Cmd any](agentID string, kind protocol.Kind, queueLen int) *session[Cmd] {
	return &session[Cmd]{
		agentID: agentID,
		kind:    kind,
		limit:   queueLen,
		closed:  make(chan struct{}),
		detach:  func() {},
	}
}

// AgentID returns the id of the agent on the other end.
func (ss *session[Cmd]) AgentID() string { return ss.agentID }

// Attach connects the session to its gRPC stream. send is the stream's
// Send: it is called by one goroutine at a time, in queue order, and only
// while commands wait. stop must make the stream's handler return (it
// unblocks its Recv and any Send); the session calls it once, when it
// closes, with the cause. Attach is called once, by the handler, right
// after the stream was opened; commands enqueued before it wait for it.
// Attach and Outbox are alternatives.
func (ss *session[Cmd]) Attach(send func(*Cmd) error, stop func(error)) {
	ss.mu.Lock()
	ss.send, ss.stop = send, stop
	if ss.ended { // closed before it was attached: end the stream now
		err := ss.err
		ss.mu.Unlock()
		stop(err)
		return
	}
	ss.startSenderLocked()
	ss.mu.Unlock()
}

// Outbox returns a channel that receives the commands to send, in order,
// for a reader that is not a gRPC stream (tests, in-process agents). It
// holds the commands already queued; later ones go straight to it, and
// fail with ErrBusy when it is full. Exactly one goroutine reads it.
func (ss *session[Cmd]) Outbox() <-chan *Cmd {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.outbox == nil {
		ss.outbox = make(chan *Cmd, max(ss.limit, len(ss.queue)))
		for _, m := range ss.queue {
			ss.outbox <- m
		}
		ss.queue = nil
	}
	return ss.outbox
}

// Done is closed once the stream is closed.
func (ss *session[Cmd]) Done() <-chan struct{} { return ss.closed }

// Err returns why the stream closed, or nil while it is open.
func (ss *session[Cmd]) Err() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.err
}

// Wait returns once the session's sender, if one runs, has returned.
// After closeWith no sender starts, so a handler that closed its session
// and waited may return: gRPC forbids Send once the handler returned.
func (ss *session[Cmd]) Wait() { ss.senders.Wait() }

// enqueue hands m to the sender without blocking. It fails with ErrBusy
// when the queue is full and with the close cause once the session closed.
func (ss *session[Cmd]) enqueue(m *Cmd) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return ss.err
	}
	if ss.outbox != nil {
		select {
		case ss.outbox <- m:
			return nil
		default:
			return ErrBusy
		}
	}
	if len(ss.queue) >= ss.limit {
		return ErrBusy
	}
	ss.queue = append(ss.queue, m)
	ss.startSenderLocked()
	return nil
}

// startSenderLocked starts a sender goroutine if commands wait, the stream
// is attached and none runs. ss.mu is held.
func (ss *session[Cmd]) startSenderLocked() {
	if ss.sending || ss.ended || ss.send == nil || len(ss.queue) == 0 {
		return
	}
	ss.sending = true
	ss.senders.Add(1)
	go ss.sendQueued()
}

// sendQueued sends the queued commands in order and returns once the queue
// is empty or the session closed. A failed Send means the stream is
// broken: it closes the session with the error.
func (ss *session[Cmd]) sendQueued() {
	defer ss.senders.Done()
	for {
		ss.mu.Lock()
		if ss.ended || len(ss.queue) == 0 {
			ss.sending = false
			ss.queue = nil // an idle stream keeps no backing array
			ss.mu.Unlock()
			return
		}
		m := ss.queue[0]
		ss.queue[0] = nil
		ss.queue = ss.queue[1:]
		ss.mu.Unlock()
		if err := ss.send(m); err != nil {
			ss.closeWith(err)
		}
	}
}

// closeWith records the first cause, wakes everyone waiting on Done,
// removes the stream from its table and ends the gRPC stream. It reports
// whether this call closed the session.
func (ss *session[Cmd]) closeWith(err error) bool {
	first := false
	ss.once.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		ss.mu.Lock()
		ss.err, ss.ended = err, true
		ss.queue = nil
		stop := ss.stop
		ss.mu.Unlock()
		close(ss.closed)
		ss.detach()
		if stop != nil {
			stop(err)
		}
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
