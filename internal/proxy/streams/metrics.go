package streams

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// windowKey identifies identical requests so that concurrent callers share
// one command.
func windowKey(w series.Window) string {
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

func windowCommand(w series.Window) *fodcv1.StreamMetricsResponse {
	cmd := &fodcv1.StreamMetricsResponse{}
	if !w.Start.IsZero() {
		cmd.StartTime = timestamppb.New(w.Start)
	}
	if !w.End.IsZero() {
		cmd.EndTime = timestamppb.New(w.End)
	}
	return cmd
}

// Metrics sends metrics commands to one agent and matches its replies to
// them. It is safe for concurrent use.
type Metrics struct {
	ordered[fodcv1.StreamMetricsResponse, series.RawMetrics]
}

// Request asks the agent for the latest values or a window and waits for
// its answer until ctx ends. Identical concurrent requests share one
// command. When the stream has too many commands in flight the request
// fails with ErrBusy and the agent keeps its stream. The
// reply is a StreamMetricsRequest still encoded; callers that shared a
// command get the same *series.RawMetrics and must only read it; each
// caller that gets a reply must Release it once done with it (a reply of
// a pooled buffer goes back to the pool with the last release).
func (m *Metrics) Request(ctx context.Context, w series.Window) (*series.RawMetrics, error) {
	return m.do(ctx, windowKey(w), windowCommand(w))
}
