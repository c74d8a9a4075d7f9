package e2e

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/proxy"
)

// relay forwards TCP connections to a target until frozen; a frozen relay
// keeps every connection open but forwards nothing, which is what a peer
// that vanished without FIN or RST looks like.
type relay struct {
	lis    net.Listener
	target string
	frozen chan struct{}
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &relay{lis: lis, target: target, frozen: make(chan struct{}), stop: make(chan struct{})}
	r.wg.Go(r.accept)
	t.Cleanup(r.close)
	return r
}

func (r *relay) accept() {
	for {
		c, err := r.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(c, up) })
		r.wg.Go(func() { r.pipe(up, c) })
	}
}

func (r *relay) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-r.frozen:
			<-r.stop // hold the connection open, forward nothing
			return
		default:
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

func (r *relay) freeze() { close(r.frozen) }

func (r *relay) close() {
	r.once.Do(func() {
		close(r.stop)
		r.lis.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
}

// A half-open agent connection is noticed by server keepalive within
// seconds and the agent goes offline, long before the heartbeat sweep
// would even mark it unconnected (upstream weakness W4).
func TestHalfOpenConnectionIsDroppedByKeepalive(t *testing.T) {
	slow(t)
	p, _ := startProxy(t, func(c *proxy.Config) {
		c.GRPCKeepaliveTime = time.Second
		c.GRPCKeepaliveTimeout = time.Second
		c.AgentHeartbeatTimeout = 20 * time.Second
		c.AgentCleanupTimeout = 10 * time.Minute
	})
	r := newRelay(t, p.GRPCAddr())
	a := startAgent(t, agentsim.Config{ProxyAddr: r.lis.Addr().String(), Register: dataNode("data-0", "hot"), ReconnectInterval: time.Hour})
	base := "http://" + p.HTTPAddr()
	require.Equal(t, 1, getHealth(t, base).AgentsTotal)

	r.freeze()
	// Without keepalive nothing would notice for AgentCleanupTimeout (10m).
	require.Eventually(t, func() bool {
		ns := clusterNodes(t, base, "")
		return len(ns) == 1 && ns[0].Status == "offline"
	}, wait, 50*time.Millisecond)
	require.Equal(t, 1, a.Registrations())
}
