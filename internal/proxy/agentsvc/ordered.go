package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/cmdq"
)

// ordered is a stream whose agent answers every command exactly once and
// in order (metrics, topology, schema registry rounds). Replies are matched
// to commands by position through a cmdq.Queue.
type ordered[Cmd, Reply any] struct {
	ss     *session[Cmd]
	queue  *cmdq.Queue[*Reply]
	maxAge time.Duration
}

func newOrdered[Cmd, Reply any](ss *session[Cmd], maxPending int, maxAge time.Duration) ordered[Cmd, Reply] {
	return ordered[Cmd, Reply]{ss: ss, queue: cmdq.New[*Reply](maxPending), maxAge: maxAge}
}

// AgentID returns the id of the agent on the other end.
func (o *ordered[Cmd, Reply]) AgentID() string { return o.ss.agentID }

// do sends cmd (or joins an identical outstanding one with the same key)
// and waits for the reply until ctx ends.
func (o *ordered[Cmd, Reply]) do(ctx context.Context, key string, cmd *Cmd) (*Reply, error) {
	// A command left unanswered this long means the agent is stuck or lost
	// a reply; every later reply would then be matched to the wrong
	// command, so the stream is closed and the agent re-registers with a
	// clean slate.
	if sent, ok := o.queue.OldestSent(); ok && o.maxAge > 0 && time.Since(sent) > o.maxAge {
		o.ss.closeWith(fmt.Errorf("%w: a %s command is unanswered since %s", errStuck, o.ss.kind, sent.Format(time.RFC3339)))
		return nil, fmt.Errorf("agent %s: %w", o.ss.agentID, errStuck)
	}
	reply, err := o.queue.Do(ctx, key, func() error { return o.ss.enqueue(cmd) })
	if errors.Is(err, cmdq.ErrFull) || errors.Is(err, errSlow) {
		o.ss.closeWith(errSlow)
		return nil, fmt.Errorf("agent %s: %w", o.ss.agentID, errSlow)
	}
	return reply, err
}

// deliver hands a reply to the oldest command and reports what became of it.
func (o *ordered[Cmd, Reply]) deliver(r *Reply) (delivered, solicited bool) {
	return o.queue.Deliver(r)
}

// close fails every outstanding command.
func (o *ordered[Cmd, Reply]) close(cause error) {
	o.queue.Close(fmt.Errorf("%s stream of agent %s closed: %w", o.ss.kind, o.ss.agentID, closeCause(cause)))
}
