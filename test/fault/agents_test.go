package fault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/netrelay"
)

// node serves a synthetic BanyanDB endpoint for a real agent until the
// test ends and returns its metrics URL.
func node(t *testing.T, pod string) string {
	t.Helper()
	srv := httptest.NewServer(synth.Handler([]synth.Node{{Pod: pod, Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 3}}, nil))
	t.Cleanup(srv.Close)
	return srv.URL + synth.Path(pod)
}

// healthy starts two simulated agents, "ok-0" and "ok-1", that keep
// answering, and returns how many series each contributes to /metrics.
func healthy(t *testing.T, p *proxyProc) int {
	t.Helper()
	for _, pod := range []string{"ok-0", "ok-1"} {
		runSim(t, agentsim.Config{ProxyAddr: p.grpcAddr, Register: dataNode(pod), CloseGrace: -1})
	}
	var n int
	require.Eventually(t, func() bool {
		r := get(t, p.base()+"/metrics?role=data")
		n = seriesOf(r.body, "ok-0")
		return r.code == http.StatusOK && n > 0 && seriesOf(r.body, "ok-1") == n
	}, wait, poll)
	return n
}

// complete checks that a /metrics answer has every series of the healthy
// agents and fodc_agent_up 1 for them.
func complete(t *testing.T, r response, perAgent int) {
	t.Helper()
	require.Equal(t, http.StatusOK, r.code, r.body)
	up := upMap(t, r.body)
	for _, pod := range []string{"ok-0", "ok-1"} {
		require.Equal(t, 1.0, up[pod], "fodc_agent_up of %s", pod)
		require.Equal(t, perAgent, seriesOf(r.body, pod), "series of %s", pod)
	}
}

// A real agent stopped with SIGSTOP keeps its TCP connection (the kernel
// still acknowledges) but answers nothing. Scrapes cost one deadline and
// return the other agents whole; keepalive ends the connection; SIGCONT
// brings the agent back.
func TestHungAgentStopped(t *testing.T) {
	p := startProxy(t, "--grpc-keepalive-time", "1s", "--grpc-keepalive-timeout", "1s", "--agent-reply-timeout", "3s",
		"--collect-timeout", "2s")
	perAgent := healthy(t, p)
	a := startRealAgent(t, p.grpcAddr, "hung-0", node(t, "hung-0"))
	require.Eventually(t, func() bool {
		return seriesOf(get(t, p.base()+"/metrics?role=data").body, "hung-0") > 0
	}, wait, poll, "agent log:\n%s", a.log.String())
	base := p.usage(t)
	timeouts := p.counter(t, "fodc_proxy_agent_requests_total", "result", "timeout")

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	start := time.Now()
	r := get(t, p.base()+"/metrics?role=data", "X-Prometheus-Scrape-Timeout-Seconds", "2")
	took := time.Since(start)
	complete(t, r, perAgent)
	require.Equal(t, 0.0, upMap(t, r.body)["hung-0"])
	require.Equal(t, "2", r.header.Get("X-Fodc-Agents-Answered"))
	require.Less(t, took, 5*time.Second)
	require.Greater(t, p.counter(t, "fodc_proxy_agent_requests_total", "result", "timeout"), timeouts)

	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["hung-0"] == "offline" }, wait, 100*time.Millisecond)
	detect := time.Since(stopped)
	r = get(t, p.base()+"/metrics?role=data")
	complete(t, r, perAgent)

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGCONT))
	resumed := time.Now()
	require.Eventually(t, func() bool {
		r := get(t, p.base()+"/metrics?role=data")
		return upMap(t, r.body)["hung-0"] == 1 && seriesOf(r.body, "hung-0") > 0
	}, wait, 100*time.Millisecond, "agent log:\n%s", a.log.String())
	recovery := time.Since(resumed)
	settle, u := p.settle(t, base)
	figure(t, "scrape with the stopped agent answered in %s (budget 2s); offline after %s (keepalive 1s+1s); back %s after SIGCONT; baseline %s, after %s (settled in %s)",
		took.Round(time.Millisecond), detect.Round(time.Millisecond), recovery.Round(time.Millisecond), base, u, settle.Round(time.Millisecond))
}

// An agent whose connection dies while it is writing its answer (the relay
// is closed under it, as when the process is killed): the scrape returns
// at once with the agent down and the others whole, and the entry goes
// offline with the stream's end as reason.
func TestAgentKilledMidReply(t *testing.T) {
	p := startProxy(t, "--collect-timeout", "8s")
	perAgent := healthy(t, p)
	relay := netrelay.Start(t, p.grpcAddr)
	delay := func(kind protocol.Kind) time.Duration {
		if kind == protocol.KindMetrics {
			return 2 * time.Second
		}
		return 0
	}
	k, stopK := runSim(t, agentsim.Config{ProxyAddr: relay.Addr(), Register: dataNode("killed-0"), ReplyDelay: delay, CloseGrace: -1, ReconnectInterval: time.Hour})
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["killed-0"] == "online" }, wait, poll)
	base := p.usage(t)
	failed := func(mfs map[string]*dto.MetricFamily) float64 {
		return value(mfs, "fodc_proxy_agent_requests_total", "result", "error")
	}
	errs := failed(p.self(t))

	before := k.Commands(protocol.KindMetrics)
	got := make(chan response, 1)
	var took time.Duration
	go func() {
		start := time.Now()
		r, _ := httpGet(p.base()+"/metrics?role=data", wait)
		took = time.Since(start)
		got <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, k.WaitCommands(ctx, protocol.KindMetrics, before+1))
	relay.Close()
	var r response
	select {
	case r = <-got:
	case <-time.After(wait):
		t.Fatal("scrape did not return")
	}
	complete(t, r, perAgent)
	require.Equal(t, 0.0, upMap(t, r.body)["killed-0"])
	require.Less(t, took, 8*time.Second, "the scrape waited for the whole budget")
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["killed-0"] == "offline" }, wait, poll)
	// The request that the stream's end failed is counted as an error
	// (the caller's budget had not run out).
	require.Greater(t, failed(p.self(t)), errs)
	stopK()
	settle, u := p.settle(t, base)
	figure(t, "scrape returned %s after the request (agent delays 2s, budget 8s); baseline %s, after %s (settled in %s)",
		took.Round(time.Millisecond), base, u, settle.Round(time.Millisecond))
}

// A half-open connection: the relay freezes and forwards nothing, both
// ends keep their sockets. The proxy's keepalive drops it, the others are
// unaffected, and after the thaw the agent registers again.
func TestHalfOpenConnection(t *testing.T) {
	p := startProxy(t, "--grpc-keepalive-time", "1s", "--grpc-keepalive-timeout", "1s")
	perAgent := healthy(t, p)
	relay := netrelay.Start(t, p.grpcAddr)
	h, _ := runSim(t, agentsim.Config{ProxyAddr: relay.Addr(), Register: dataNode("halfopen-0"), CloseGrace: -1})
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["halfopen-0"] == "online" }, wait, poll)
	base := p.usage(t)

	relay.Freeze()
	frozen := time.Now()
	r := get(t, p.base()+"/metrics?role=data", "X-Prometheus-Scrape-Timeout-Seconds", "2")
	complete(t, r, perAgent)
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["halfopen-0"] == "offline" }, wait, 100*time.Millisecond)
	detect := time.Since(frozen)
	require.Equal(t, 1.0, p.counter(t, "fodc_proxy_agents", "status", "offline"))
	complete(t, get(t, p.base()+"/metrics?role=data"), perAgent)

	relay.Thaw()
	thawed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := h.WaitRegistered(ctx, 2)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return upMap(t, get(t, p.base()+"/metrics?role=data").body)["halfopen-0"] == 1 }, wait, poll)
	recovery := time.Since(thawed)
	settle, u := p.settle(t, base)
	figure(t, "proxy detected the frozen path in %s (keepalive 1s+1s); agent back %s after the thaw; baseline %s, after %s (settled in %s)",
		detect.Round(time.Millisecond), recovery.Round(time.Millisecond), base, u, settle.Round(time.Millisecond))
}

// Our agent behind a frozen path detects the dead proxy by its liveness
// probes within about two heartbeat intervals, and comes back after the
// thaw.
func TestAgentDetectsDeadProxy(t *testing.T) {
	p := startProxy(t)
	relay := netrelay.Start(t, p.grpcAddr)
	a := startRealAgent(t, relay.Addr(), "uplink-0", node(t, "uplink-0"))
	a.waitLog(t, "Registered with proxy", 1)
	agentMetrics := func() string {
		r, err := httpGet("http://"+a.httpAddr+"/metrics", 5*time.Second)
		require.NoError(t, err)
		return r.body
	}
	relay.Freeze()
	frozen := time.Now()
	a.waitLog(t, "Connection to proxy lost, reconnecting", 1)
	detect := time.Since(frozen)
	require.GreaterOrEqual(t, value(families(t, agentMetrics()), "fodc_agent_uplink_liveness_probe_failures_total"), 2.0)
	require.Less(t, detect, 5*time.Second, "heartbeat interval 1s: two intervals and a little")

	relay.Thaw()
	thawed := time.Now()
	a.waitLog(t, "Registered with proxy", 2)
	recovery := time.Since(thawed)
	require.Eventually(t, func() bool { return clusterStatus(t, p.base())["uplink-0"] == "online" }, wait, poll)
	figure(t, "agent left the frozen proxy %s after the freeze (heartbeat 1s); registered again %s after the thaw", detect.Round(time.Millisecond), recovery.Round(time.Millisecond))
}

// The proxy stops (SIGTERM) and then dies (SIGKILL), each time replaced by a
// new one on the same ports with the same state file: our agents register
// again and their data is complete.
func TestProxyRestartAndKill(t *testing.T) {
	grpcAddr, httpAddr := freePort(t), freePort(t)
	state := t.TempDir() + "/state.json"
	args := []string{"--grpc-listen-addr", grpcAddr, "--http-listen-addr", httpAddr, "--state-file", state}
	p := startProxy(t, args...)
	pods := []string{"rs-0", "rs-1", "rs-2"}
	var agents []*agentProc
	for _, pod := range pods {
		agents = append(agents, startRealAgent(t, grpcAddr, pod, node(t, pod)))
	}
	allUp := func(p *proxyProc) func() bool {
		return func() bool {
			r, err := httpGet(p.base()+"/metrics?role=data", 10*time.Second)
			if err != nil || r.code != http.StatusOK {
				return false
			}
			up := upMap(t, r.body)
			for _, pod := range pods {
				if up[pod] != 1 || seriesOf(r.body, pod) == 0 {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, allUp(p), wait, poll)
	var figures []string
	for i, how := range []string{"SIGTERM", "SIGKILL"} {
		if how == "SIGTERM" {
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case <-p.exited:
			case <-time.After(wait):
				t.Fatal("proxy did not stop on SIGTERM")
			}
		} else {
			p.kill(t)
		}
		down := time.Now()
		p = startProxy(t, args...)
		require.Eventually(t, allUp(p), wait, poll, "agents did not come back after %s", how)
		figures = append(figures, how+": all agents complete again "+time.Since(down).Round(time.Millisecond).String()+" after the old proxy ended")
		for _, a := range agents {
			require.GreaterOrEqual(t, a.countLog("Registered with proxy"), i+2)
		}
	}
	for _, a := range agents {
		r, err := httpGet("http://"+a.httpAddr+"/metrics", 5*time.Second)
		require.NoError(t, err)
		require.GreaterOrEqual(t, value(families(t, r.body), "fodc_agent_uplink_reconnects_total"), 2.0)
	}
	figure(t, "%s", strings.Join(figures, "; "))
}
