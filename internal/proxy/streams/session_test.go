package streams

import (
	"errors"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// An idle stream has no sender goroutine: one runs while commands wait and
// returns once they are sent, without the stream closing. Commands
// enqueued before Attach wait for it.
func TestSenderRunsOnlyWhileCommandsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := testTable().OpenCrash("a")
		require.NoError(t, err)
		require.NoError(t, c.Request()) // before Attach: queued
		sent := make(chan *fodcv1.StreamCrashDiagnosticsResponse, 8)
		release := make(chan struct{})
		stopped := 0
		c.Attach(func(m *fodcv1.StreamCrashDiagnosticsResponse) error { <-release; sent <- m; return nil },
			func(error) { stopped++ })
		require.NoError(t, c.Request()) // the sender runs: queued behind the first
		close(release)
		c.Wait() // the sender returned: nothing left to send
		require.Len(t, sent, 2)
		require.NoError(t, c.Err(), "the stream stays open")

		require.NoError(t, c.Request()) // a new sender for a new command
		c.Wait()
		require.Len(t, sent, 3)
		require.Zero(t, stopped)
		c.Close(nil)
		require.Equal(t, 1, stopped)
	})
}

// Closing a session stops its gRPC stream with the cause, once; a failed
// Send closes the session with the Send's error; a session closed before
// it was attached stops its stream at Attach.
func TestCloseStopsTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := testTable()
		c, err := tb.OpenCrash("a")
		require.NoError(t, err)
		var stops []error
		broken := errors.New("connection reset")
		c.Attach(func(*fodcv1.StreamCrashDiagnosticsResponse) error { return broken }, func(err error) { stops = append(stops, err) })
		require.NoError(t, c.Request())
		c.Wait()
		require.ErrorIs(t, c.Err(), broken)
		c.Close(errors.New("later"))
		require.Equal(t, []error{broken}, stops)
		_, ok := tb.Crash("a")
		require.False(t, ok)
		require.ErrorIs(t, c.Request(), broken, "no command is taken once closed")

		early, err := tb.OpenCrash("b")
		require.NoError(t, err)
		early.Close(nil)
		stops = nil
		early.Attach(func(*fodcv1.StreamCrashDiagnosticsResponse) error { return nil }, func(err error) { stops = append(stops, err) })
		require.Len(t, stops, 1)
		require.ErrorIs(t, stops[0], ErrClosed)
	})
}
