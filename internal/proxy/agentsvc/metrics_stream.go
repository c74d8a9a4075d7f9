package agentsvc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
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
	ordered[fodcv1.StreamMetricsResponse, RawMetrics]
}

// Request asks the agent for the latest values or a window and waits for
// its answer until ctx ends. Identical concurrent requests share one
// command. An agent that has too many unanswered commands is disconnected
// as slow: the request fails and so does every other pending one. The
// reply is a StreamMetricsRequest still encoded; coalesced callers get the
// same *RawMetrics and must only read it.
func (m *MetricsStream) Request(ctx context.Context, w Window) (*RawMetrics, error) {
	return m.do(ctx, w.key(), w.command())
}
