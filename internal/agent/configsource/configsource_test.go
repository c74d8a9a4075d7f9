package configsource

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every event-based wait; it is never expected to elapse.
const wait = 20 * time.Second

func values(m map[string]*fodcv1.ExtParamValues, k string) []string { return m[k].GetValues() }

// A collection blocked in a read (a FIFO that nobody writes stands in for a
// /proc file of a process stuck in the kernel) is not waited for beyond the
// timeout: callers get the agent's parameters and an error, share the one
// blocked collection instead of starting more, and once the read returns
// the next caller gets a full report.
func TestBlockedReadIsBoundedByTheTimeout(t *testing.T) {
	root := t.TempDir()
	const pid = 4242
	dir := filepath.Join(root, strconv.Itoa(pid))
	require.NoError(t, os.Mkdir(dir, 0o755))
	fifo := filepath.Join(dir, "cmdline")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	s := New(nodeconfig.Options{
		PID:         pid,
		ProcRoot:    root,
		AgentParams: map[string][]string{"pod-name": {"p"}, "auth-token": {"tok-abc123"}},
	}, 50*time.Millisecond, nil)

	for range 2 {
		r := s.Get(context.Background())
		require.Equal(t, []string{"collection of the node's configuration did not finish within 50ms"}, r.GetErrors())
		require.Equal(t, []string{"p"}, values(r.GetAgentParams(), "pod-name"))
		require.Equal(t, []string{nodeconfig.Redacted}, values(r.GetAgentParams(), "auth-token"))
		require.Empty(t, r.GetStartupParams())
		require.NotContains(t, r.String(), "tok-abc123")
	}
	s.mu.Lock()
	blocked := s.running
	s.mu.Unlock()
	require.NotNil(t, blocked, "the blocked collection is still running and shared")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := s.Get(ctx)
	require.Len(t, r.GetErrors(), 1)
	require.Contains(t, r.GetErrors()[0], "abandoned: context canceled")

	// Unblock the read: the reader is waiting, so this open does not block.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = w.WriteString("banyand\x00data\x00--k=v\x00")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	<-blocked.done

	require.NoError(t, os.Remove(fifo))
	require.NoError(t, os.WriteFile(fifo, []byte("banyand\x00data\x00--k=v2\x00"), 0o600))
	s.timeout = wait
	r = s.Get(context.Background())
	require.Equal(t, []string{"v2"}, values(r.GetStartupParams(), "k"), "a fresh collection, not the blocked one's result")
	s.Close(wait)
}
