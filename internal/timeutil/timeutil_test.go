package timeutil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	require.True(t, Sleep(ctx, time.Millisecond), "the time passed")
	require.True(t, Sleep(ctx, 0), "nothing to wait for")
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	cancel()
	require.False(t, <-done, "the context ended first")
	require.False(t, Sleep(ctx, 0), "an ended context reports false even for no wait")
	require.False(t, Sleep(ctx, time.Hour))
}
