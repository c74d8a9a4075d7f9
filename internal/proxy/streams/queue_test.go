package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// agent is a fake stream peer: commands go into sent, and the test answers
// them in order through Deliver.
type agent struct {
	mu   sync.Mutex
	sent []string
}

func (a *agent) send(cmd string) func() error {
	return func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.sent = append(a.sent, cmd)
		return nil
	}
}

func (a *agent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sent)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond)
}

type result struct {
	v   string
	err error
}

func do(q *Queue[string], ctx context.Context, key string, send func() error) <-chan result {
	ch := make(chan result, 1)
	go func() {
		v, err := q.Do(ctx, key, send)
		ch <- result{v, err}
	}()
	return ch
}

func TestRepliesMatchCommandsInOrder(t *testing.T) {
	q := NewQueue[string](8)
	a := &agent{}
	var outs []<-chan result
	for i := range 3 {
		outs = append(outs, do(q, context.Background(), "", a.send(fmt.Sprint(i))))
		waitFor(t, func() bool { return a.count() == i+1 })
	}
	for i := range 3 {
		delivered, solicited := q.Deliver(fmt.Sprintf("reply-%d", i))
		require.True(t, delivered)
		require.True(t, solicited)
	}
	for i, ch := range outs {
		require.Equal(t, result{v: fmt.Sprintf("reply-%d", i)}, <-ch)
	}
	require.Zero(t, q.Len())
}

// A caller that gives up leaves a placeholder: the late reply is discarded,
// and the next caller gets the reply to its own command (upstream W1).
func TestAbandonedReplyIsNotHandedToNextCaller(t *testing.T) {
	q := NewQueue[string](8)
	a := &agent{}
	ctx, cancel := context.WithCancel(context.Background())
	first := do(q, ctx, "", a.send("window"))
	waitFor(t, func() bool { return a.count() == 1 })
	cancel()
	require.ErrorIs(t, (<-first).err, context.Canceled)

	second := do(q, context.Background(), "", a.send("latest"))
	waitFor(t, func() bool { return a.count() == 2 })

	delivered, solicited := q.Deliver("window-reply")
	require.False(t, delivered, "nobody waits for the abandoned command")
	require.True(t, solicited)
	delivered, _ = q.Deliver("latest-reply")
	require.True(t, delivered)
	require.Equal(t, result{v: "latest-reply"}, <-second)
}

func TestSameKeySharesOneCommand(t *testing.T) {
	q := NewQueue[string](8)
	a := &agent{}
	var outs []<-chan result
	for range 5 {
		outs = append(outs, do(q, context.Background(), "latest", a.send("latest")))
	}
	waitFor(t, func() bool { return a.count() >= 1 })
	// Wait until all five callers are attached to the one command.
	waitFor(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.pending) == 1 && q.pending[0].waiters == 5
	})
	require.Equal(t, 1, a.count())
	q.Deliver("snapshot")
	for _, ch := range outs {
		require.Equal(t, result{v: "snapshot"}, <-ch)
	}
}

func TestAbandonedCommandIsNotJoined(t *testing.T) {
	q := NewQueue[string](8)
	a := &agent{}
	ctx, cancel := context.WithCancel(context.Background())
	first := do(q, ctx, "latest", a.send("latest"))
	waitFor(t, func() bool { return a.count() == 1 })
	cancel()
	<-first
	second := do(q, context.Background(), "latest", a.send("latest"))
	waitFor(t, func() bool { return a.count() == 2 })
	q.Deliver("stale")
	q.Deliver("fresh")
	require.Equal(t, result{v: "fresh"}, <-second)
}

func TestFullAndSendError(t *testing.T) {
	q := NewQueue[string](2)
	a := &agent{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1 := do(q, ctx, "", a.send("a"))
	r2 := do(q, ctx, "", a.send("b"))
	waitFor(t, func() bool { return q.Len() == 2 })
	_, err := q.Do(context.Background(), "", a.send("c"))
	require.ErrorIs(t, err, ErrFull)

	boom := errors.New("boom")
	q2 := NewQueue[string](2)
	_, err = q2.Do(context.Background(), "", func() error { return boom })
	require.ErrorIs(t, err, boom)
	require.Zero(t, q2.Len(), "a command that was not sent is not queued")
	cancel()
	<-r1
	<-r2
}

func TestCloseFailsPendingAndLater(t *testing.T) {
	q := NewQueue[string](4)
	a := &agent{}
	r := do(q, context.Background(), "", a.send("x"))
	waitFor(t, func() bool { return q.Len() == 1 })
	gone := errors.New("agent gone")
	q.Close(gone)
	q.Close(errors.New("second close is ignored"))
	require.ErrorIs(t, (<-r).err, gone)
	_, err := q.Do(context.Background(), "", a.send("y"))
	require.ErrorIs(t, err, gone)
	delivered, solicited := q.Deliver("late")
	require.False(t, delivered)
	require.False(t, solicited)
}

func TestUnsolicitedReply(t *testing.T) {
	q := NewQueue[string](4)
	delivered, solicited := q.Deliver("nobody asked")
	require.False(t, delivered)
	require.False(t, solicited)
}

// Many callers with and without keys, some giving up, under -race: every
// caller that got a reply got the one for its own command.
func TestConcurrentCallersGetOwnReplies(t *testing.T) {
	q := NewQueue[string](1024)
	var mu sync.Mutex
	var order []string // commands in send order
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Responder: answers each sent command with its own name.
	wg.Go(func() {
		next := 0
		for {
			mu.Lock()
			var cmd string
			if next < len(order) {
				cmd = order[next]
				next++
			}
			mu.Unlock()
			if cmd != "" {
				q.Deliver("reply:" + cmd)
				continue
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	})
	var callers sync.WaitGroup
	for i := range 200 {
		callers.Go(func() {
			cmd := fmt.Sprintf("cmd-%d", i)
			ctx := context.Background()
			if i%7 == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Microsecond)
				defer cancel()
			}
			v, err := q.Do(ctx, "", func() error {
				mu.Lock()
				defer mu.Unlock()
				order = append(order, cmd)
				return nil
			})
			if err != nil {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				return
			}
			require.Equal(t, "reply:"+cmd, v)
		})
	}
	callers.Wait()
	waitFor(t, func() bool { return q.Len() == 0 })
	close(stop)
	wg.Wait()
}
