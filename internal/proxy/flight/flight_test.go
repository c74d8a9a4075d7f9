package flight

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConcurrentCallersShareOneCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New[string, int](Options[string, int]{})
		var calls atomic.Int32
		release := make(chan struct{})
		fn := func(context.Context) (int, error) {
			calls.Add(1)
			<-release
			return 42, nil
		}
		got := make(chan int, 3)
		for range 3 {
			go func() {
				v, err := g.Do(t.Context(), "k", fn)
				require.NoError(t, err)
				got <- v
			}()
		}
		synctest.Wait() // all three joined
		require.Equal(t, 1, g.InFlight())
		close(release)
		for range 3 {
			require.Equal(t, 42, <-got)
		}
		require.EqualValues(t, 1, calls.Load())
		// Nothing kept without Fresh: the next caller runs a new call.
		v, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 7, nil })
		require.NoError(t, err)
		require.Equal(t, 7, v)
	})
}

func TestDistinctKeysDoNotShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New[string, string](Options[string, string]{})
		a, err := g.Do(t.Context(), "a", func(context.Context) (string, error) { return "A", nil })
		require.NoError(t, err)
		b, err := g.Do(t.Context(), "b", func(context.Context) (string, error) { return "B", nil })
		require.NoError(t, err)
		require.Equal(t, []string{"A", "B"}, []string{a, b})
	})
}

func TestCallerGivingUpDoesNotCancelOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New[string, int](Options[string, int]{CancelAbandoned: true})
		var sawCancel atomic.Bool
		fn := func(ctx context.Context) (int, error) {
			select {
			case <-time.After(time.Second):
				return 1, nil
			case <-ctx.Done():
				sawCancel.Store(true)
				return 0, ctx.Err()
			}
		}
		short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		patient := g.Join("k", fn)
		_, err := g.Do(short, "k", fn)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		v, err := patient.Wait(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, v)
		require.False(t, sawCancel.Load())
	})
}

func TestLastCallerLeavingCancelsWhenAsked(t *testing.T) {
	for _, cancelAbandoned := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			g := New[string, int](Options[string, int]{CancelAbandoned: cancelAbandoned})
			ended := make(chan error, 1)
			fn := func(ctx context.Context) (int, error) {
				select {
				case <-time.After(time.Hour):
					ended <- nil
					return 1, nil
				case <-ctx.Done():
					ended <- ctx.Err()
					return 0, ctx.Err()
				}
			}
			g.Join("k", fn).Leave()
			err := <-ended
			if cancelAbandoned {
				require.ErrorIs(t, err, context.Canceled)
			} else {
				require.NoError(t, err, "a call nobody waits for runs to its end")
			}
		})
	}
}

func TestFreshResultReusedUntilStaleOrInvalid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		valid := true
		g := New[string, int](Options[string, int]{
			Fresh: 10 * time.Second,
			Valid: func(string, int) bool { return valid },
		})
		n := 0
		fn := func(context.Context) (int, error) { n++; return n, nil }
		do := func() int {
			v, err := g.Do(t.Context(), "k", fn)
			require.NoError(t, err)
			return v
		}
		require.Equal(t, 1, do())
		time.Sleep(9 * time.Second) // fake clock inside the bubble
		require.Equal(t, 1, do(), "young result reused")
		time.Sleep(2 * time.Second)
		require.Equal(t, 2, do(), "stale result replaced")
		valid = false
		require.Equal(t, 3, do(), "invalid result replaced")
		valid = true
		g.Forget("k")
		require.Equal(t, 4, do(), "forgotten result replaced")
	})
}

func TestErrorsAreSharedButNotKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New[string, int](Options[string, int]{Fresh: time.Minute})
		boom := errors.New("boom")
		_, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 0, boom })
		require.ErrorIs(t, err, boom)
		v, err := g.Do(t.Context(), "k", func(context.Context) (int, error) { return 5, nil })
		require.NoError(t, err)
		require.Equal(t, 5, v)
	})
}

// A result is sole when exactly one caller was waiting for it as its call
// ended: not when others shared it, not before the call ended, not when
// a caller that gave up early was the other one, and never when results
// are kept.
func TestSoleResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := New[string, int](Options[string, int]{})
		release := make(chan struct{})
		fn := func(context.Context) (int, error) { <-release; return 1, nil }

		one := g.Join("k", fn)
		require.False(t, one.Sole(), "not before the call ended")
		short, cancel := context.WithCancel(t.Context())
		quitter := g.Join("k", fn)
		go func() { _, _ = quitter.Wait(short) }()
		synctest.Wait()
		cancel()
		synctest.Wait()
		close(release)
		_, err := one.Wait(t.Context())
		require.NoError(t, err)
		require.True(t, one.Sole(), "the caller that gave up does not count")

		release = make(chan struct{})
		a, b := g.Join("k", fn), g.Join("k", fn)
		close(release)
		_, err = a.Wait(t.Context())
		require.NoError(t, err)
		_, err = b.Wait(t.Context())
		require.NoError(t, err)
		require.False(t, a.Sole())
		require.False(t, b.Sole())

		kept := New[string, int](Options[string, int]{Fresh: time.Minute})
		k := kept.Join("k", func(context.Context) (int, error) { return 1, nil })
		_, err = k.Wait(t.Context())
		require.NoError(t, err)
		require.False(t, k.Sole(), "a kept result goes to later callers too")
	})
}
