package streams

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrFull is returned by Do when the stream already has the maximum number
// of outstanding commands: the agent is not keeping up.
var ErrFull = errors.New("too many outstanding commands")

// call is one command sent to the agent.
type call[R any] struct {
	key     string
	sentAt  time.Time
	waiters int // callers still waiting; 0 means abandoned
	done    chan struct{}
	reply   R
	err     error
}

// Queue matches the replies an agent sends on one stream to the commands
// the proxy sent on it.
//
// FODC streams carry no correlation id (PROTOCOL.md §3), but an agent
// answers the commands of one stream strictly in order. A Queue therefore
// keeps the outstanding commands of a stream in send order and hands each
// reply to the command at the head. A caller that gives up leaves its
// command in place as a placeholder, so the late reply is discarded instead
// of being handed to the next caller (upstream weakness W1). Callers that ask
// for the same thing while an identical command is outstanding share it
// instead of sending another one.
//
// Queue is the FIFO of outstanding commands of one stream. It is safe for
// concurrent use. The zero value is not usable; call NewQueue.
type Queue[R any] struct {
	max int
	// Share, when set, is told how many callers a reply is about to be
	// handed to (0 when its command was abandoned), before any of them
	// can see it. Each of those callers returns the reply from Do.
	Share func(reply R, callers int)

	mu      sync.Mutex // guards the fields below
	pending []*call[R] // in send order; pending[0] gets the next reply
	closed  error      // non-nil once closed
}

// NewQueue returns a queue that holds at most maxPending outstanding commands
// (answered or abandoned placeholders included).
func NewQueue[R any](maxPending int) *Queue[R] {
	if maxPending < 1 {
		maxPending = 1
	}
	return &Queue[R]{max: maxPending}
}

// Do sends a command and waits for its reply.
//
// If key is non-empty and a command with the same key is outstanding with a
// caller still waiting for it, Do joins that command instead of sending a
// new one. Otherwise Do appends a placeholder and calls send while holding
// the queue's lock, so the order of sends is the order of the queue; send
// must therefore only enqueue the command for the stream's sender and never
// block. If send fails, the command is removed and its error returned.
//
// Do returns the reply, the queue's close error, or ctx.Err() when ctx ends
// first (the command then stays queued and its reply is discarded).
func (q *Queue[R]) Do(ctx context.Context, key string, send func() error) (R, error) {
	var zero R
	q.mu.Lock()
	if q.closed != nil {
		err := q.closed
		q.mu.Unlock()
		return zero, err
	}
	var c *call[R]
	if key != "" {
		for _, p := range q.pending {
			if p.key == key && p.waiters > 0 {
				c = p
				break
			}
		}
	}
	if c != nil {
		c.waiters++
	} else {
		if len(q.pending) >= q.max {
			q.mu.Unlock()
			return zero, ErrFull
		}
		c = &call[R]{key: key, sentAt: time.Now(), waiters: 1, done: make(chan struct{})}
		if err := send(); err != nil {
			q.mu.Unlock()
			return zero, err
		}
		q.pending = append(q.pending, c)
	}
	q.mu.Unlock()

	select {
	case <-c.done:
		return c.reply, c.err
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		// The reply may have arrived at the same moment; prefer it. It
		// was delivered (under the lock) counting this caller (see
		// Share), so it must be taken.
		select {
		case <-c.done:
			return c.reply, c.err
		default:
		}
		c.waiters--
		return zero, ctx.Err()
	}
}

// Deliver hands a reply to the oldest outstanding command. It reports
// whether a caller was still waiting for it: false means the reply was
// discarded, because its command was abandoned or because no command was
// outstanding (an unsolicited reply).
func (q *Queue[R]) Deliver(reply R) (delivered, solicited bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return false, false
	}
	c := q.pending[0]
	q.pending[0] = nil
	q.pending = q.pending[1:]
	if len(q.pending) == 0 {
		q.pending = q.pending[:0:0] // let the backing array go
	}
	c.reply = reply
	if q.Share != nil {
		q.Share(reply, c.waiters)
	}
	close(c.done)
	return c.waiters > 0, true
}

// OldestSent returns when the oldest outstanding command was sent, and
// false when none is outstanding. An agent answers in order, so a command
// that stays at the head for long means the agent is stuck or lost a reply.
func (q *Queue[R]) OldestSent() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return time.Time{}, false
	}
	return q.pending[0].sentAt, true
}

// Len returns the number of outstanding commands.
func (q *Queue[R]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Close fails every outstanding command with err (ErrClosed when nil) and
// makes later calls of Do fail the same way. Closing twice keeps the first
// error.
func (q *Queue[R]) Close(err error) {
	if err == nil {
		err = ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed != nil {
		return
	}
	q.closed = err
	for _, c := range q.pending {
		c.err = err
		close(c.done)
	}
	q.pending = nil
}
