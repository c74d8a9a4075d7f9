// Package timeutil holds the one timing helper several loops share: a
// sleep that a context cuts short.
package timeutil

import (
	"context"
	"time"
)

// Sleep waits d, or returns at once when d is not positive. It reports
// false when ctx ends before d has passed, true otherwise.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
