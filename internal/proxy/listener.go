package proxy

import (
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// capListener caps the connections open at once. Unlike
// golang.org/x/net/netutil.LimitListener, which stops accepting (leaving
// new connections in the kernel's backlog, where a flood of silent ones
// locks real agents out for as long as it lasts), it accepts and closes
// at once every connection over the cap, and counts it, so that a refused
// client sees its refusal and an operator sees the flood.
type capListener struct {
	net.Listener
	max      int
	open     prometheus.Gauge
	rejected prometheus.Counter

	mu sync.Mutex // guards n
	n  int
}

func newCapListener(l net.Listener, maxConns int, open prometheus.Gauge, rejected prometheus.Counter) *capListener {
	return &capListener{Listener: l, max: maxConns, open: open, rejected: rejected}
}

// Accept returns the next connection within the cap.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.n >= l.max {
			l.mu.Unlock()
			l.rejected.Inc()
			_ = c.Close()
			continue
		}
		l.n++
		l.mu.Unlock()
		l.open.Inc()
		return &cappedConn{Conn: c, l: l}, nil
	}
}

func (l *capListener) release() {
	l.mu.Lock()
	l.n--
	l.mu.Unlock()
	l.open.Dec()
}

// cappedConn gives its slot back when closed (once).
type cappedConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.release)
	return err
}
