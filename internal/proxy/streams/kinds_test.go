package streams

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

func testTable() *Table { return NewTable(Limits{SendQueueLen: 8, MaxPending: 4}) }

func TestTableRefusesSecondStreamOfAKind(t *testing.T) {
	tb := testTable()
	m, err := tb.OpenMetrics("a")
	require.NoError(t, err)
	_, err = tb.OpenMetrics("a")
	require.ErrorIs(t, err, ErrDuplicate)
	_, err = tb.OpenTopology("a") // another kind is fine
	require.NoError(t, err)
	got, ok := tb.Metrics("a")
	require.True(t, ok)
	require.Same(t, m, got)
	require.True(t, tb.Has("a", protocol.KindMetrics))
	require.False(t, tb.Has("a", protocol.KindCrash))
	require.False(t, tb.Has("b", protocol.KindMetrics))
}

// A closed handle leaves the table, and never removes the handle that
// replaced it (W17).
func TestClosedHandleLeavesOnlyItself(t *testing.T) {
	tb := testTable()
	old, err := tb.OpenMetrics("a")
	require.NoError(t, err)
	old.Close(nil)
	_, ok := tb.Metrics("a")
	require.False(t, ok)
	require.ErrorIs(t, old.Err(), ErrClosed)
	repl, err := tb.OpenMetrics("a")
	require.NoError(t, err)
	old.Close(errors.New("late second close"))
	got, ok := tb.Metrics("a")
	require.True(t, ok)
	require.Same(t, repl, got)
	repl.Close(nil)
	require.Empty(t, tb.agents, "no empty entries are left behind")
}

func TestMetricsRequestsShareIdenticalCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := testTable().OpenMetrics("a")
		require.NoError(t, err)
		defer m.Close(nil)
		w := series.Window{Start: time.Unix(10, 0)}
		results := make(chan *series.RawMetrics, 2)
		for range 2 {
			go func() {
				r, err := m.Request(t.Context(), w)
				require.NoError(t, err)
				results <- r
			}()
		}
		synctest.Wait()
		require.Len(t, m.Outbox(), 1, "two identical requests, one command")
		cmd := <-m.Outbox()
		require.Equal(t, int64(10), cmd.GetStartTime().GetSeconds())
		require.Nil(t, cmd.GetEndTime())
		reply := &series.RawMetrics{Bytes: []byte{1}}
		require.Equal(t, Delivered, m.Deliver(reply))
		require.Same(t, reply, <-results)
		require.Same(t, reply, <-results)
		require.Equal(t, Unsolicited, m.Deliver(reply))
	})
}

// A reply in a pooled buffer goes back to its pool when its last reader
// releases it: the receiver and every caller the reply was handed to,
// whatever the order; a reply whose command was abandoned, or that no
// command asked for, goes back with the receiver's release.
func TestMetricsReplyBufferReturnedByLastRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := testTable().OpenMetrics("a")
		require.NoError(t, err)
		defer m.Close(nil)
		var freed atomic.Int32
		pooled := func() *series.RawMetrics { return series.NewPooledRaw([]byte{1}, func() { freed.Add(1) }) }

		results := make(chan *series.RawMetrics, 2)
		for range 2 {
			go func() {
				r, err := m.Request(t.Context(), series.Window{})
				require.NoError(t, err)
				results <- r
			}()
		}
		synctest.Wait()
		<-m.Outbox()
		reply := pooled()
		require.Equal(t, Delivered, m.Deliver(reply))
		reply.Release() // the receiver's
		first := <-results
		first.Release()
		require.Zero(t, freed.Load(), "one reader still reads it")
		require.Equal(t, []byte{1}, first.Bytes)
		(<-results).Release()
		require.EqualValues(t, 1, freed.Load())

		ctx, cancel := context.WithCancel(t.Context())
		go func() { _, _ = m.Request(ctx, series.Window{}) }()
		synctest.Wait()
		<-m.Outbox()
		cancel()
		synctest.Wait()
		abandoned := pooled()
		require.Equal(t, Abandoned, m.Deliver(abandoned))
		abandoned.Release()
		require.EqualValues(t, 2, freed.Load())

		unsolicited := pooled()
		require.Equal(t, Unsolicited, m.Deliver(unsolicited))
		unsolicited.Release()
		require.EqualValues(t, 3, freed.Load())
		require.Panics(t, unsolicited.Release, "one release too many is a bug")
	})
}

// A full queue fails the request, not the agent: the stream stays open and
// the queued commands are still answered.
func TestFullQueueFailsTheCallerNotTheAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := NewTable(Limits{SendQueueLen: 2, MaxPending: 2}).OpenMetrics("a")
		require.NoError(t, err)
		for i := range 2 {
			go func() { _, _ = m.Request(t.Context(), series.Window{Start: time.Unix(int64(i+1), 0)}) }()
		}
		synctest.Wait()
		_, err = m.Request(t.Context(), series.Window{})
		require.ErrorIs(t, err, ErrBusy)
		require.NoError(t, m.Err(), "the stream stays open")
		for range 2 {
			<-m.Outbox()
			require.Equal(t, Delivered, m.Deliver(&series.RawMetrics{}))
		}
		go func() { <-m.Outbox(); m.Deliver(&series.RawMetrics{}) }()
		_, err = m.Request(t.Context(), series.Window{})
		require.NoError(t, err, "room again once the agent answered")
	})
}

func TestStuckCommandClosesStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := NewTable(Limits{SendQueueLen: 8, MaxPending: 8, MaxCommandAge: time.Minute}).OpenMetrics("a")
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err = m.Request(ctx, series.Window{})
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		time.Sleep(2 * time.Minute) // fake clock: the command is now too old
		_, err = m.Request(t.Context(), series.Window{Start: time.Unix(1, 0)})
		require.ErrorIs(t, err, ErrStuck)
		require.ErrorIs(t, m.Err(), ErrStuck)
	})
}

// The chunks of an abandoned registry read are drained through its done
// marker and never reach the next read (W11).
func TestSchemaRegistryRoundsAreIsolated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := testTable().OpenSchemaRegistry("liaison")
		require.NoError(t, err)
		defer r.Close(nil)
		ctx, cancel := context.WithCancel(t.Context())
		first := make(chan error, 1)
		go func() { _, err := r.Read(ctx); first <- err }()
		<-r.Outbox()
		cancel()
		require.ErrorIs(t, <-first, context.Canceled)

		second := make(chan *RegistryRound, 1)
		go func() { round, _ := r.Read(t.Context()); second <- round }()
		<-r.Outbox()
		chunk := func(group string, done bool) *fodcv1.StreamSchemaRegistryRequest {
			m := &fodcv1.StreamSchemaRegistryRequest{Done: done}
			if group != "" {
				m.Group = &fodcv1.SchemaRegistryGroup{Group: group}
			}
			return m
		}
		require.Equal(t, Partial, r.Receive(chunk("stale", false)))
		require.Equal(t, Abandoned, r.Receive(chunk("", true)))
		require.Equal(t, Partial, r.Receive(chunk("g1", false)))
		require.Equal(t, Delivered, r.Receive(chunk("g2", true)))
		round := <-second
		require.Len(t, round.Chunks, 2)
		require.Equal(t, "g1", round.Chunks[0].GetGroup().GetGroup())
	})
}

// An agent whose lifecycle collection fails never answers; the proxy does
// not pile up commands, and a report that arrives later goes to whoever
// waits then.
func TestLifecycleZeroOrOneReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ls, err := testTable().OpenLifecycle("data-0")
		require.NoError(t, err)
		defer ls.Close(nil)

		rctx, rcancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		_, err = ls.Request(rctx, time.Hour)
		rcancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		<-ls.Outbox()
		since, pending := ls.Pending()
		require.True(t, pending)
		require.False(t, since.IsZero())

		// A second caller does not send another command while one is pending.
		got := make(chan *fodcv1.StreamLifecycleRequest, 1)
		go func() { r, _ := ls.Request(t.Context(), time.Hour); got <- r }()
		synctest.Wait()
		require.Empty(t, ls.Outbox(), "no second command was sent")
		require.Equal(t, Delivered, ls.Receive(&fodcv1.StreamLifecycleRequest{PodName: "data-0"}))
		require.Equal(t, "data-0", (<-got).GetPodName())
		_, pending = ls.Pending()
		require.False(t, pending)
		last, at, ok := ls.Last()
		require.True(t, ok)
		require.False(t, at.IsZero())
		require.Equal(t, "data-0", last.GetPodName())

		// With a short resend interval a new command goes out.
		go func() { r, _ := ls.Request(t.Context(), 0); got <- r }()
		synctest.Wait()
		require.Len(t, ls.Outbox(), 1)
		<-ls.Outbox()
		require.Equal(t, Delivered, ls.Receive(&fodcv1.StreamLifecycleRequest{PodName: "again"}))
		require.Equal(t, "again", (<-got).GetPodName())
		// A report nobody asked for is kept as the latest one.
		require.Equal(t, Unsolicited, ls.Receive(&fodcv1.StreamLifecycleRequest{PodName: "unasked"}))
		last, _, _ = ls.Last()
		require.Equal(t, "unasked", last.GetPodName())
	})
}
