package streams

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ordered is a stream whose agent answers every command exactly once and
// in order (metrics, topology, configuration, schema registry rounds).
// Replies are matched to commands by position through a Queue.
type ordered[Cmd, Reply any] struct {
	*session[Cmd]
	queue  *Queue[*Reply]
	maxAge time.Duration
}

func newOrdered[Cmd, Reply any](ss *session[Cmd], l Limits) ordered[Cmd, Reply] {
	return ordered[Cmd, Reply]{session: ss, queue: NewQueue[*Reply](l.MaxPending), maxAge: l.MaxCommandAge}
}

// do sends cmd (or joins an identical outstanding one with the same key)
// and waits for the reply until ctx ends.
func (o *ordered[Cmd, Reply]) do(ctx context.Context, key string, cmd *Cmd) (*Reply, error) {
	// A command left unanswered this long means the agent is stuck or lost
	// a reply; every later reply would then be matched to the wrong
	// command, so the stream is closed and the agent re-registers with a
	// clean slate.
	if sent, ok := o.queue.OldestSent(); ok && o.maxAge > 0 && time.Since(sent) > o.maxAge {
		o.Close(fmt.Errorf("%w: a %s command is unanswered since %s", ErrStuck, o.kind, sent.Format(time.RFC3339)))
		return nil, fmt.Errorf("agent %s: %w", o.agentID, ErrStuck)
	}
	reply, err := o.queue.Do(ctx, key, func() error { return o.enqueue(cmd) })
	if errors.Is(err, ErrFull) || errors.Is(err, ErrBusy) {
		// Too many requests in flight is the callers' problem: this one
		// fails, the agent keeps its stream (and answers the others).
		return nil, fmt.Errorf("agent %s: %w", o.agentID, ErrBusy)
	}
	return reply, err
}

// Deliver hands a complete reply to the oldest command.
func (o *ordered[Cmd, Reply]) Deliver(r *Reply) Outcome {
	delivered, solicited := o.queue.Deliver(r)
	switch {
	case !solicited:
		return Unsolicited
	case !delivered:
		return Abandoned
	}
	return Delivered
}

// Close ends the stream with cause and fails every outstanding command.
func (o *ordered[Cmd, Reply]) Close(cause error) {
	if o.closeWith(cause) {
		o.queue.Close(fmt.Errorf("%s stream of agent %s closed: %w", o.kind, o.agentID, o.err))
	}
}

// Pending returns how many commands are outstanding, abandoned ones
// included.
func (o *ordered[Cmd, Reply]) Pending() int { return o.queue.Len() }
