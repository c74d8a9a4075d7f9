package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/protocol"
)

// slowMetrics delays every metrics answer by d.
func slowMetrics(d time.Duration) func(protocol.Kind) time.Duration {
	return func(k protocol.Kind) time.Duration {
		if k == protocol.KindMetrics {
			return d
		}
		return 0
	}
}

// windows fires n concurrent /metrics-windows requests, each with its own
// range (so that none share a collection), and counts the answers by
// status. Every 503 must carry Retry-After.
func windows(t *testing.T, p *proxyProc, n int) (codesSeen map[int]int, nonEmpty int, took time.Duration) {
	t.Helper()
	var withData atomic.Int64
	now := time.Now().UTC()
	var mu sync.Mutex
	codesSeen = map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			q := url.Values{}
			from := now.Add(-5*time.Minute + time.Duration(i)*time.Second)
			q.Set("start_time", from.Format(time.RFC3339))
			q.Set("end_time", from.Add(30*time.Second).Format(time.RFC3339))
			r, err := httpGet(p.base()+"/metrics-windows?"+q.Encode(), wait)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if r.code == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After: %s", r.body)
			}
			if r.code == http.StatusOK {
				var series []json.RawMessage
				if err := json.Unmarshal([]byte(r.body), &series); err != nil {
					t.Errorf("request %d: %v", i, err)
				}
				if len(series) > 0 {
					withData.Add(1)
				}
			}
			mu.Lock()
			codesSeen[r.code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codesSeen, int(withData.Load()), time.Since(start)
}

// 40 concurrent /metrics-windows requests with different ranges, admitted
// all at once, overflow the agent stream's queue of outstanding commands:
// the overflowing requests fail ("busy") and the agent keeps its stream;
// it is never disconnected as slow.
func TestConcurrentWindowsKeepAgent(t *testing.T) {
	p := startProxy(t, "--max-inflight-metrics", "64")
	a, _ := runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode("busy-0"), CloseGrace: -1, ReplyDelay: slowMetrics(100 * time.Millisecond)})
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["busy-0"] == "online" }, wait, poll)
	base := p.usage(t)
	seen, nonEmpty, took := windows(t, p, 40)
	require.Equal(t, map[int]int{http.StatusOK: 40}, seen)
	mfs := p.self(t)
	busy := value(mfs, "fodc_proxy_agent_requests_total", "kind", "window", "result", "busy")
	require.Greater(t, busy, 0.0, "40 commands fit the stream's queue; the case no longer overflows it")
	require.Equal(t, 40-int(busy), nonEmpty, "every request the agent was asked answered with data")
	require.Equal(t, 0.0, value(mfs, "fodc_proxy_agent_slow_disconnects_total"))
	require.Equal(t, 1, a.Registrations(), "the agent was disconnected")
	require.Equal(t, "online", clusterStatus(t, p.base())["busy-0"])
	settle, u := p.settle(t, base)
	figure(t, "40 windows answered in %s, %g failed busy, 0 slow disconnects, 1 registration; baseline %s, after %s (settled in %s)",
		took.Round(time.Millisecond), busy, base, u, settle.Round(time.Millisecond))
}

// 200 concurrent distinct queries against the default admission limit
// (16): every one gets an answer or a 503 with Retry-After, the refusals
// are counted, the agents stay connected and memory stays bounded.
func TestQueriesBeyondAdmission(t *testing.T) {
	p := startProxy(t)
	perAgent := healthy(t, p)
	var agents []*agentsim.Agent
	for i := range 3 {
		a, _ := runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode(fmt.Sprintf("adm-%d", i)), CloseGrace: -1, ReplyDelay: slowMetrics(300 * time.Millisecond)})
		agents = append(agents, a)
	}
	require.Eventually(t, func() bool { return get(t, p.base()+"/metrics?role=data").header.Get("X-Fodc-Agents-Answered") == "5" }, wait, poll)
	base := p.usage(t)
	peak := p.peak(t)
	seen, nonEmpty, took := windows(t, p, 200)
	top := peak()
	require.Equal(t, 200, seen[http.StatusOK]+seen[http.StatusServiceUnavailable], "%v", seen)
	require.Positive(t, seen[http.StatusServiceUnavailable], "%v", seen)
	require.Positive(t, seen[http.StatusOK], "%v", seen)
	require.Equal(t, seen[http.StatusOK], nonEmpty, "an admitted request came back empty")
	mfs := p.self(t)
	require.Equal(t, float64(seen[http.StatusServiceUnavailable]), value(mfs, "fodc_proxy_http_requests_rejected_total", "class", "metrics"))
	require.Equal(t, 0.0, value(mfs, "fodc_proxy_agent_slow_disconnects_total"))
	for _, a := range agents {
		require.Equal(t, 1, a.Registrations())
	}
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)
	require.Less(t, top-base.rss, int64(256<<20), "RSS grew by more than 256 MiB")
	settle, u := p.settle(t, base)
	figure(t, "200 distinct windows in %s: %d answered, %d got 503+Retry-After (counted); peak RSS %.1f MiB (baseline %s), after %s (settled in %s)",
		took.Round(time.Millisecond), seen[http.StatusOK], seen[http.StatusServiceUnavailable], float64(top)/(1<<20), base, u, settle.Round(time.Millisecond))
}

// A registration flood from one peer is rate-limited (ResourceExhausted,
// reason "rate"); agents on other peers register and answer meanwhile.
func TestRegistrationFlood(t *testing.T) {
	p := startProxy(t, "--registrations-per-second", "2", "--registration-burst", "10")
	perAgent := healthy(t, p)
	base := p.usage(t)
	peak := p.peak(t)
	c := dial(t, p.grpcAddr, "127.0.0.2")
	limited := 0
	start := time.Now()
	var firstLimited time.Duration
	for i := range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		resp, code := register(t, ctx, c, dataNode(fmt.Sprintf("flood-%d", i)))
		cancel()
		if code == codes.ResourceExhausted {
			if limited == 0 {
				firstLimited = time.Since(start)
			}
			limited++
			require.NotNil(t, resp)
			require.False(t, resp.GetSuccess())
			require.NotEmpty(t, resp.GetMessage())
		}
	}
	took := time.Since(start)
	require.GreaterOrEqual(t, limited, 250)
	require.Equal(t, float64(limited), p.counter(t, "fodc_proxy_registrations_rejected_total", "reason", "rate"))
	// Another peer is not affected.
	_, stopOther := runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode("other-peer"), CloseGrace: -1})
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)
	stopOther()
	top := peak()
	settle, u := p.settle(t, base)
	figure(t, "300 registrations from one peer in %s: %d refused ResourceExhausted (first after %s), counted reason=rate; peak RSS %.1f MiB (baseline %s), after %s (settled in %s)",
		took.Round(time.Millisecond), limited, firstLimited.Round(time.Millisecond), float64(top)/(1<<20), base, u, settle.Round(time.Millisecond))
}

// 300 connections that never speak: the connection cap refuses the excess
// at once (counted), the handshake timeout closes the rest, and a real
// agent that starts during the flood registers.
func TestSilentConnectionFlood(t *testing.T) {
	p := startProxy(t, "--grpc-handshake-timeout", "1s", "--grpc-max-connections", "100")
	perAgent := healthy(t, p)
	base := p.usage(t)
	peak := p.peak(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	start := time.Now()
	for range 300 {
		c, err := net.Dial("tcp", p.grpcAddr)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	a := startRealAgent(t, p.grpcAddr, "silent-victim", node(t, "silent-victim"))
	// Every silent connection is closed by the proxy: refused at once or
	// timed out.
	var closed atomic.Int64
	var wg sync.WaitGroup
	var last atomic.Int64
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(wait))
			buf := make([]byte, 256)
			for {
				if _, err := c.Read(buf); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						return
					}
					closed.Add(1)
					last.Store(int64(time.Since(start)))
					return
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(300), closed.Load(), "silent connections left open")
	a.waitLog(t, "Registered with proxy", 1)
	registered := time.Since(start)
	rejected := p.counter(t, "fodc_proxy_grpc_connections_rejected_total")
	require.GreaterOrEqual(t, rejected, 190.0)
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["silent-victim"] == "online" }, wait, poll)
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
	<-a.exited
	top := peak()
	settle, u := p.settle(t, base)
	figure(t, "300 silent connections: %g refused by the cap (counted), all closed within %s; the real agent registered %s after the flood began; peak RSS %.1f MiB (baseline %s), after %s (settled in %s)",
		rejected, time.Duration(last.Load()).Round(time.Millisecond), registered.Round(time.Millisecond), float64(top)/(1<<20), base, u, settle.Round(time.Millisecond))
}

// A thousand simulated agents (the load tool, a process of its own and
// without the race detector, so that the agents do not starve the machine);
// the proxy is killed and a new one starts on the same port: all of them
// reconnect at once. Every one is online again, a scrape returns every
// one, and after they leave the proxy's goroutines and memory come back.
func TestReconnectStorm(t *testing.T) {
	long(t)
	const n = 1000
	grpcAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--grpc-listen-addr", grpcAddr, "--http-listen-addr", httpAddr, "--heartbeat-interval", "5s", "--agent-heartbeat-timeout", "20s"}
	p := startProxy(t, args...)
	base := p.usage(t)
	fleet := startProcess(t, binary(t, "fodc-bench"), "--proxy-addr", grpcAddr, "--http-addr", httpAddr, "--agents", fmt.Sprint(n),
		"--agent-version", "v0.10.0", "--series", "4", "--families", "2", "--scrapers", "0", "--duration", "10m", "--log-format", "json")
	online := func(p *proxyProc) func() bool {
		return func() bool {
			r, err := httpGet(p.base()+"/health", 5*time.Second)
			if err != nil {
				return false
			}
			var h struct {
				Online int `json:"agents_online"`
			}
			return json.Unmarshal([]byte(r.body), &h) == nil && h.Online == n
		}
	}
	require.Eventually(t, online(p), 2*wait, 200*time.Millisecond, "fleet log:\n%s", fleet.log.String())
	p.kill(t)
	killed := time.Now()
	p = startProxy(t, args...)
	peak := p.peak(t)
	require.Eventually(t, online(p), 2*wait, 200*time.Millisecond, "fleet log:\n%s", fleet.log.String())
	recovery := time.Since(killed)
	var r response
	require.Eventually(t, func() bool {
		r = get(t, p.base()+"/metrics?role=data")
		return r.header.Get("X-Fodc-Agents-Answered") == fmt.Sprint(n)
	}, wait, time.Second, "answered %s", r.header.Get("X-Fodc-Agents-Answered"))
	top := peak()
	loaded := p.usage(t)
	fleet.kill(t)
	// A thousand sessions' buffers go back to the kernel slowly: goroutines
	// must be back, RSS gets a wider margin.
	settle, u := p.settle(t, base, 64<<20)
	figure(t, "%d agents online again %s after the kill; peak RSS %.1f MiB with %s; baseline (fresh proxy) %s, after the agents left %s (settled in %s)",
		n, recovery.Round(time.Millisecond), float64(top)/(1<<20), loaded, base, u, settle.Round(time.Millisecond))
}
