package proxy

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// Connections over the cap are accepted and closed at once (the client
// sees the connection end, not a hang) and counted; closing an accepted
// connection frees its slot, once however often it is closed.
func TestCapListenerRefusesOverTheCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: "open"})
	rejected := prometheus.NewCounter(prometheus.CounterOpts{Name: "rejected"})
	l := newCapListener(raw, 2, open, rejected)
	accepted := make(chan net.Conn, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() { _ = l.Close(); <-done }()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	dial()
	first := <-accepted
	dial()
	second := <-accepted
	require.Equal(t, 2.0, testutil.ToFloat64(open))

	over := dial()
	_, err = over.Read(make([]byte, 1))
	require.Error(t, err, "closed by the proxy at once")
	require.Equal(t, 1.0, testutil.ToFloat64(rejected))

	require.NoError(t, first.Close())
	_ = first.Close()
	require.Equal(t, 1.0, testutil.ToFloat64(open))
	dial()
	third := <-accepted
	require.Equal(t, 2.0, testutil.ToFloat64(open))
	_ = second.Close()
	_ = third.Close()
	require.Zero(t, testutil.ToFloat64(open))
}
