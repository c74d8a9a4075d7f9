// Package netrelay is a TCP relay for tests that need a network path that
// can fail silently: frozen, it keeps every connection open but forwards
// nothing, which is what a peer that vanished without FIN or RST (a
// half-open connection, a partition) looks like to both ends.
package netrelay

import (
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Relay forwards the connections it accepts to a target address.
type Relay struct {
	lis    net.Listener
	target string
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	frozen bool
	thawed chan struct{} // closed while not frozen; replaced by Freeze
	conns  []net.Conn
}

// Start listens on a loopback port and relays every connection to target
// until the test ends.
func Start(t testing.TB, target string) *Relay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &Relay{lis: lis, target: target, stop: make(chan struct{}), thawed: make(chan struct{})}
	close(r.thawed)
	r.wg.Go(r.accept)
	t.Cleanup(r.Close)
	return r
}

// Addr returns the address agents dial instead of the target.
func (r *Relay) Addr() string { return r.lis.Addr().String() }

// Freeze stops forwarding on every connection, open or accepted later.
// Bytes already read are held, and the connections stay open.
func (r *Relay) Freeze() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.frozen {
		r.frozen = true
		r.thawed = make(chan struct{})
	}
}

// Thaw resumes forwarding: held bytes are delivered, as after a partition
// heals, and connections that ended meanwhile are closed on the other side
// too.
func (r *Relay) Thaw() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen {
		r.frozen = false
		close(r.thawed)
	}
}

// Conns returns how many connections the relay has accepted.
func (r *Relay) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns) / 2
}

// gate blocks while the relay is frozen and reports false when the relay
// is closed.
func (r *Relay) gate() bool {
	r.mu.Lock()
	thawed := r.thawed
	r.mu.Unlock()
	select {
	case <-thawed:
		return true
	case <-r.stop:
		return false
	}
}

func (r *Relay) accept() {
	for {
		c, err := r.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(c, up) })
		r.wg.Go(func() { r.pipe(up, c) })
	}
}

// pipe copies src to dst, chunk by chunk through the gate, and closes both
// once src ends (no half-close: the peers here never need it).
func (r *Relay) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !r.gate() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Close stops the relay and closes every connection.
func (r *Relay) Close() {
	r.once.Do(func() {
		close(r.stop)
		_ = r.lis.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
}
