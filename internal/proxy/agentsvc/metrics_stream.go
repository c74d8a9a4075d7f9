package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/cmdq"
)

// Window bounds a metrics request. The zero value asks for the latest
// values; a window with either bound asks for every sample inside it.
type Window struct {
	Start, End time.Time // zero: unbounded on that side
}

// IsLatest reports whether w asks for the latest values.
func (w Window) IsLatest() bool { return w.Start.IsZero() && w.End.IsZero() }

// key identifies identical requests so that concurrent callers share one
// command.
func (w Window) key() string {
	if w.IsLatest() {
		return "latest"
	}
	return fmt.Sprintf("window:%d:%d", unixNanoOrZero(w.Start), unixNanoOrZero(w.End))
}

func unixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (w Window) command() *fodcv1.StreamMetricsResponse {
	cmd := &fodcv1.StreamMetricsResponse{}
	if !w.Start.IsZero() {
		cmd.StartTime = timestamppb.New(w.Start)
	}
	if !w.End.IsZero() {
		cmd.EndTime = timestamppb.New(w.End)
	}
	return cmd
}

// MetricsStream sends metrics commands to one agent and matches its
// replies to them. It is safe for concurrent use.
type MetricsStream struct {
	ss     *session[fodcv1.StreamMetricsResponse]
	queue  *cmdq.Queue[*fodcv1.StreamMetricsRequest]
	maxAge time.Duration
}

func newMetricsStream(ss *session[fodcv1.StreamMetricsResponse], maxPending int, maxAge time.Duration) *MetricsStream {
	return &MetricsStream{ss: ss, queue: cmdq.New[*fodcv1.StreamMetricsRequest](maxPending), maxAge: maxAge}
}

// AgentID returns the id of the agent on the other end.
func (m *MetricsStream) AgentID() string { return m.ss.agentID }

// Request asks the agent for the latest values or a window and waits for
// its answer until ctx ends. Identical concurrent requests share one
// command. An agent that has too many unanswered commands is disconnected
// as slow: the request fails and so does every other pending one.
func (m *MetricsStream) Request(ctx context.Context, w Window) (*fodcv1.StreamMetricsRequest, error) {
	// An agent answers every metrics command once and in order. A command
	// left unanswered this long means the agent is stuck or lost a reply;
	// every later reply would then be matched to the wrong command, so the
	// stream is closed and the agent re-registers with a clean slate.
	if sent, ok := m.queue.OldestSent(); ok && m.maxAge > 0 && time.Since(sent) > m.maxAge {
		m.ss.closeWith(fmt.Errorf("%w: a command is unanswered since %s", errStuck, sent.Format(time.RFC3339)))
		return nil, fmt.Errorf("agent %s: %w", m.ss.agentID, errStuck)
	}
	reply, err := m.queue.Do(ctx, w.key(), func() error { return m.ss.enqueue(w.command()) })
	if errors.Is(err, cmdq.ErrFull) || errors.Is(err, errSlow) {
		m.ss.closeWith(errSlow)
		return nil, fmt.Errorf("agent %s: %w", m.ss.agentID, errSlow)
	}
	return reply, err
}
