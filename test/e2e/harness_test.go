// Package e2e tests the proxy end to end: real loopback sockets, simulated
// upstream agents speaking the real protocol, the real binary, and a real
// Prometheus server.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/binaries"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { binaries.Cleanup(); os.Exit(code) }))
}

// wait is the generous upper bound of every event-based wait.
const wait = 30 * time.Second

// startProxy runs an in-process proxy on loopback ports until the test ends.
func startProxy(t testing.TB, mutate func(*proxy.Config)) (*proxy.Proxy, *prometheus.Registry) {
	t.Helper()
	return testproxy.Start(t, mutate)
}

// connect starts a simulated upstream agent against an in-process proxy
// and waits until the proxy has every stream the agent opens.
func connect(t testing.TB, p *proxy.Proxy, cfg agentsim.Config) *agentsim.Agent {
	t.Helper()
	cfg.ProxyAddr = p.GRPCAddr()
	a := startAgent(t, cfg)
	require.Eventually(t, func() bool {
		id := a.AgentID()
		if id == "" {
			return false
		}
		for _, kind := range a.Streams() {
			if !p.Streams.Has(id, kind) {
				return false
			}
		}
		return true
	}, wait, time.Millisecond)
	return a
}

// startAgent runs a simulated upstream agent until the test ends and waits
// for its first registration.
func startAgent(t testing.TB, cfg agentsim.Config) *agentsim.Agent {
	t.Helper()
	a, _ := proxytest.RunAgent(t, cfg)
	wctx, wcancel := context.WithTimeout(context.Background(), wait)
	defer wcancel()
	_, err := a.WaitRegistered(wctx, 1)
	require.NoError(t, err)
	return a
}

func dataNode(pod, tier string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod, Labels: map[string]string{"type": tier}}
}

type response struct {
	code   int
	header http.Header
	body   string
}

func get(t testing.TB, url string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	client := &http.Client{Timeout: wait}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, string(body)}
}

type health struct {
	Status       string   `json:"status"`
	Reasons      []string `json:"reasons"`
	AgentsOnline int      `json:"agents_online"`
	AgentsTotal  int      `json:"agents_total"`
}

func getHealth(t testing.TB, base string) health {
	t.Helper()
	r := get(t, base+"/health")
	require.Equal(t, http.StatusOK, r.code)
	var h health
	require.NoError(t, json.Unmarshal([]byte(r.body), &h))
	return h
}

// slow skips a test under -short (make test-short): it waits for
// heartbeats or keepalives on the real clock, builds binaries or runs
// external programs.
func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow end-to-end test; run without -short")
	}
}

// requireTool returns the path of an external tool, skipping the test when
// it is missing unless FODC_REQUIRE_TOOLS=1 (CI) makes that a failure.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("FODC_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not found on PATH (install Debian's prometheus package)", name)
		}
		t.Skipf("%s not found on PATH", name)
	}
	return path
}

// binary builds a command of this module once per test run.
func binary(t *testing.T, name string) string {
	slow(t)
	t.Helper()
	return binaries.Path(t, name)
}

// proxyProcess is the fodc-proxy binary running as a child process.
type proxyProcess struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	exited   chan struct{}
	exitErr  error
	stderr   *syncBuffer
}

type syncBuffer = binaries.SyncBuffer

// startProxyProcess starts the binary on loopback ports chosen by the
// kernel and reads the addresses from its JSON start-up log line.
func startProxyProcess(t *testing.T, args ...string) *proxyProcess {
	t.Helper()
	bin := binary(t, "fodc-proxy")
	all := append([]string{"--grpc-listen-addr", "127.0.0.1:0", "--http-listen-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(bin, all...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pp := &proxyProcess{cmd: cmd, exited: make(chan struct{}), stderr: &syncBuffer{}}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			_, _ = pp.stderr.Write([]byte(line + "\n"))
			var rec struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "FODC proxy started" {
				addrs <- [2]string{rec.GRPCAddr, rec.HTTPAddr}
			}
		}
		pp.exitErr = cmd.Wait()
		close(pp.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-pp.exited
	})
	select {
	case a := <-addrs:
		pp.grpcAddr, pp.httpAddr = a[0], a[1]
	case <-pp.exited:
		t.Fatalf("fodc-proxy exited early: %v\n%s", pp.exitErr, pp.stderr.String())
	case <-time.After(wait):
		t.Fatalf("fodc-proxy did not start\n%s", pp.stderr.String())
	}
	return pp
}
