// Package fault injects faults into a running FODC proxy and its agents and
// checks that the proxy stays useful: the other agents' data is complete,
// the proxy's memory and goroutines come back, the counter that names the
// fault moves, and the client gets a clear status. The proxy runs as its
// real binary so that its resident memory can be read from /proc; agents are
// the real fodc-agent binary, simulated upstream agents (agentsim) or
// hand-made gRPC clients. docs/reliability.md lists the cases and the
// figures they measured.
package fault

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/testutil/binaries"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
)

// wait bounds every event-based wait.
const wait = 30 * time.Second

// poll is the interval of every polling wait.
const poll = 50 * time.Millisecond

func TestMain(m *testing.M) {
	code := m.Run()
	binaries.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// long skips a case that needs more than about ten seconds under -short.
func long(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("long fault case; run without -short")
	}
}

// binary builds the module's commands once per run and returns one.
func binary(t *testing.T, name string) string {
	t.Helper()
	return binaries.Path(t, name)
}

// figure logs one measured figure in a form docs/reliability.md is filled
// from (go test -v ... | grep FIGURE).
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

type syncBuffer = binaries.SyncBuffer

// process is a child process that logs JSON lines on stderr.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	log    *syncBuffer

	mu     sync.Mutex
	fields []map[string]any // every JSON log line, in order
	seen   chan struct{}    // closed and replaced on every line
}

func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, exited: make(chan struct{}), log: &syncBuffer{}, seen: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = p.log.Write([]byte(line + "\n"))
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				p.mu.Lock()
				p.fields = append(p.fields, rec)
				close(p.seen)
				p.seen = make(chan struct{})
				p.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a stopped child cannot die of SIGTERM
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitLog waits for the n-th (from 1) log line whose msg is msg and returns
// its fields.
func (p *process) waitLog(t *testing.T, msg string, n int) map[string]any {
	t.Helper()
	deadline := time.After(wait)
	for {
		p.mu.Lock()
		count := 0
		for _, f := range p.fields {
			if f["msg"] == msg {
				count++
				if count == n {
					p.mu.Unlock()
					return f
				}
			}
		}
		seen := p.seen
		p.mu.Unlock()
		select {
		case <-seen:
		case <-p.exited:
			t.Fatalf("%s exited before logging %q: %v\n%s", p.cmd.Path, msg, p.err, p.log.String())
		case <-deadline:
			t.Fatalf("%s did not log %q %d times\n%s", p.cmd.Path, msg, n, p.log.String())
		}
	}
}

// countLog returns how many log lines have msg.
func (p *process) countLog(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.fields {
		if f["msg"] == msg {
			n++
		}
	}
	return n
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	select {
	case <-p.exited:
	case <-time.After(wait):
		t.Fatal("process did not exit on SIGKILL")
	}
}

// proxyProc is the fodc-proxy binary.
type proxyProc struct {
	*process
	grpcAddr, httpAddr string
}

// startProxy runs the proxy on loopback ports chosen by the kernel (unless
// args name them), heartbeats every second, and reads its addresses from
// the start-up log line. /cluster collects the topology, so its timeout is
// short: a stopped agent costs one second there.
func startProxy(t *testing.T, args ...string) *proxyProc {
	t.Helper()
	all := append([]string{"--grpc-listen-addr", "127.0.0.1:0", "--http-listen-addr", "127.0.0.1:0", "--log-format", "json",
		"--heartbeat-interval", "1s", "--agent-heartbeat-timeout", "10s", "--topology-timeout", "1s"}, args...)
	p := startProcess(t, binary(t, "fodc-proxy"), all...)
	rec := p.waitLog(t, "FODC proxy started", 1)
	return &proxyProc{process: p, grpcAddr: rec["grpc_addr"].(string), httpAddr: rec["http_addr"].(string)}
}

func (p *proxyProc) base() string { return "http://" + p.httpAddr }

// agentProc is the fodc-agent binary.
type agentProc struct {
	*process
	httpAddr string
}

// startRealAgent runs our agent against proxyAddr, scraping target, with
// quick reconnects.
func startRealAgent(t *testing.T, proxyAddr, pod, target string, extra ...string) *agentProc {
	t.Helper()
	args := append([]string{"--http-listen-addr", "127.0.0.1:0", "--log-format", "json", "--proxy-addr", proxyAddr,
		"--node-role", "datanode-hot", "--pod-name", pod, "--scrape-target", target, "--scrape-interval", "500ms",
		"--scrape-timeout", "500ms", "--reconnect-interval", "200ms", "--reconnect-max-interval", "1s",
		"--node-ip", "127.0.0.1"}, extra...)
	p := startProcess(t, binary(t, "fodc-agent"), args...)
	rec := p.waitLog(t, "Serving agent metrics", 1)
	return &agentProc{process: p, httpAddr: rec["addr"].(string)}
}

// response is an HTTP answer read whole.
type response struct {
	code   int
	header http.Header
	body   string
}

func httpGet(url string, timeout time.Duration, hdr ...string) (response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, string(body)}, nil
}

func get(t *testing.T, url string, hdr ...string) response {
	t.Helper()
	r, err := httpGet(url, wait, hdr...)
	require.NoError(t, err)
	return r
}

// families parses a Prometheus text answer.
func families(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return mfs
}

// value returns the sum of the samples of family name whose labels include
// labels (k, v pairs); counters, gauges and untyped alike.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// self returns the proxy's /metrics parsed (with a short collection budget,
// so that a hung agent costs little).
func (p *proxyProc) self(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	r := get(t, p.base()+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "2")
	require.Equal(t, http.StatusOK, r.code, r.body)
	return families(t, r.body)
}

// counter reads one of the proxy's own series.
func (p *proxyProc) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return value(p.self(t), name, labels...)
}

// waitCounter waits until the series reaches at least min and returns it.
func (p *proxyProc) waitCounter(t *testing.T, min float64, name string, labels ...string) float64 {
	t.Helper()
	var v float64
	require.Eventually(t, func() bool {
		v = p.counter(t, name, labels...)
		return v >= min
	}, wait, 100*time.Millisecond, "%s%v stayed below %g", name, labels, min)
	return v
}

// rss reads the proxy's resident set size from /proc.
func (p *proxyProc) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	require.NoError(t, err)
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// usage is the proxy's footprint at one moment.
type usage struct {
	rss        int64
	goroutines int
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %d goroutines", float64(u.rss)/(1<<20), u.goroutines)
}

func (p *proxyProc) usage(t *testing.T) usage {
	t.Helper()
	// Agents export go_goroutines too (with their node labels): the
	// proxy's own sample is the one without labels.
	g := -1.0
	for _, m := range p.self(t)["go_goroutines"].GetMetric() {
		if len(m.GetLabel()) == 0 {
			g = m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	require.GreaterOrEqual(t, g, 0.0, "the proxy exports no go_goroutines")
	return usage{rss: p.rss(t), goroutines: int(g)}
}

// peak samples the proxy's RSS every 20 ms until stop is called and
// returns the highest value seen.
func (p *proxyProc) peak(t *testing.T) (stop func() int64) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var top int64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if b, err := os.ReadFile(path); err == nil {
				for l := range strings.SplitSeq(string(b), "\n") {
					if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
						top = max(top, kb<<10)
					}
				}
			}
			select {
			case <-done:
				result <- top
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var top int64
	stop = func() int64 {
		once.Do(func() { close(done); top = <-result })
		return top
	}
	t.Cleanup(func() { stop() })
	return stop
}

// Tolerances of "back to baseline". A Go process returns freed memory to
// the kernel lazily, so RSS gets a generous margin; goroutines a small one
// (HTTP keep-alive connections of the proxy's own clients come and go).
const (
	rssSlack       = 48 << 20
	goroutineSlack = 10
)

// settle waits until the proxy's goroutines are back within goroutineSlack
// of base and its RSS within rssSlack (or the slack given), and returns how
// long that took and the usage then.
func (p *proxyProc) settle(t *testing.T, base usage, slack ...int64) (time.Duration, usage) {
	t.Helper()
	rssSlack := int64(rssSlack)
	if len(slack) > 0 {
		rssSlack = slack[0]
	}
	start := time.Now()
	var u usage
	require.Eventually(t, func() bool {
		u = p.usage(t)
		return u.goroutines <= base.goroutines+goroutineSlack && u.rss <= base.rss+rssSlack
	}, wait, 200*time.Millisecond, "not back to baseline (%s): last %s", base, &u)
	return time.Since(start), u
}

// runSim runs a simulated upstream agent until the test ends (or stop is
// called) and waits for its first registration.
func runSim(t *testing.T, cfg agentsim.Config) (a *agentsim.Agent, stop func()) {
	t.Helper()
	s := startSim(t, cfg)
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	_, err := s.WaitRegistered(wctx, 1)
	require.NoError(t, err, "agent %s did not register", cfg.Register.GetPodName())
	return s.Agent, s.stop
}

type sim struct {
	*agentsim.Agent
	stop func()
}

// startSim starts a simulated agent without waiting for it.
func startSim(t *testing.T, cfg agentsim.Config) sim {
	t.Helper()
	a, stop := proxytest.RunAgent(t, cfg)
	return sim{a, stop}
}

func dataNode(pod string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod, Labels: map[string]string{"type": "hot"}}
}

// upMap returns fodc_agent_up by pod name from a /metrics answer.
func upMap(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	mf := families(t, body)["fodc_agent_up"]
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "pod_name" {
				out[lp.GetValue()] = m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// seriesOf counts the samples of a /metrics answer that carry pod_name=pod
// (the agent's own data, fodc_agent_* excluded).
func seriesOf(body, pod string) int {
	n := 0
	for l := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, "fodc_agent_") {
			continue
		}
		if strings.Contains(l, `pod_name="`+pod+`"`) {
			n++
		}
	}
	return n
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// clusterStatus returns the status of each pod in /cluster.
func clusterStatus(t *testing.T, base string) map[string]string {
	t.Helper()
	r := get(t, base+"/cluster")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var c struct {
		Nodes []struct {
			PodName string `json:"pod_name"`
			Status  string `json:"status"`
			Reason  string `json:"disconnect_reason"`
		} `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &c))
	out := map[string]string{}
	for _, n := range c.Nodes {
		out[n.PodName] = n.Status
	}
	return out
}
