package profiling

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Finished profiles are kept within MaxBytes: the oldest finished ones go
// first, a running one and the one just finished stay; a failed one keeps
// its error and no bytes.
func TestBudgetEvictsOldestFinished(t *testing.T) {
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10},
		slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	m, err := New(Options{Registry: reg, Streams: streams.NewTable(streams.Limits{}), MaxBytes: 10, MaxEntries: 100, AcceptTimeout: time.Second},
		slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	defer m.Close()
	add := func(id, status string) *entry {
		e := &entry{Entry: Entry{ID: id, PodName: "p", Status: status}}
		m.entries = append(m.entries, e)
		return e
	}
	a, run, b := add("a", StatusRunning), add("run", StatusRunning), add("b", StatusRunning)
	m.finish(a, make([]byte, 6), nil)
	m.finish(b, make([]byte, 6), nil)
	ids := func() []string {
		var out []string
		for _, e := range m.List(registry.Filter{}) {
			out = append(out, e.ID)
		}
		return out
	}
	require.Equal(t, []string{"b", "run"}, ids(), "a went to keep within 10 bytes")
	require.Equal(t, 6, m.total)
	m.finish(run, nil, errors.New("node went away"))
	e, data, ok := m.Get("run")
	require.True(t, ok)
	require.Equal(t, StatusFailed, e.Status)
	require.Equal(t, 1.0, testutil.ToFloat64(m.evicted), "a was evicted")
	require.Equal(t, 2.0, testutil.ToFloat64(m.results.WithLabelValues(StatusDone)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.results.WithLabelValues(StatusFailed)))
	require.Equal(t, "node went away", e.Error)
	require.Nil(t, data)
	_, data, ok = m.Get("b")
	require.True(t, ok)
	require.Len(t, data, 6)
}
