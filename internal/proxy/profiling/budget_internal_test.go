package profiling

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// Finished profiles are kept within MaxBytes: the oldest finished ones go
// first, a running one and the one just finished stay; a failed one keeps
// its error and no bytes.
func TestBudgetEvictsOldestFinished(t *testing.T) {
	m := New(Options{MaxBytes: 10}, nil)
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
	require.Equal(t, "node went away", e.Error)
	require.Nil(t, data)
	_, data, ok = m.Get("b")
	require.True(t, ok)
	require.Len(t, data, 6)
}
