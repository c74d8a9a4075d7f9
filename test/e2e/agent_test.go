package e2e

import (
	"bufio"
	"encoding/json"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/roles"
)

// agentProcess is the fodc-agent binary running as a child process.
type agentProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	stderr *syncBuffer
}

func startAgentProcess(t *testing.T, args ...string) *agentProcess {
	t.Helper()
	cmd := exec.Command(binary(t, "fodc-agent"), append([]string{"--http-listen-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	ap := &agentProcess{cmd: cmd, exited: make(chan struct{}), stderr: &syncBuffer{}}
	cmd.Stderr = ap.stderr
	require.NoError(t, cmd.Start())
	go func() { ap.err = cmd.Wait(); close(ap.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ap.exited:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-ap.exited
		}
	})
	return ap
}

func stopProxyProcess(t *testing.T, pp *proxyProcess) {
	t.Helper()
	require.NoError(t, pp.cmd.Process.Kill())
	select {
	case <-pp.exited:
	case <-time.After(wait):
		t.Fatal("fodc-proxy did not exit")
	}
}

// The real agent binary against the real proxy binary: after the proxy is
// killed and a new one starts on the same port, the agent registers again
// within its backoff and its metrics flow again.
func TestAgentSurvivesProxyRestart(t *testing.T) {
	slow(t)
	node := httptest.NewServer(synth.Handler([]synth.Node{{Pod: "e2e-data-0", Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 7}}, nil))
	defer node.Close()
	proxyArgs := []string{"--heartbeat-interval", "1s", "--agent-heartbeat-timeout", "5s"}
	p1 := startProxyProcess(t, proxyArgs...)
	ap := startAgentProcess(t,
		"--proxy-addr", p1.grpcAddr, "--node-role", "datanode-hot", "--pod-name", "e2e-data-0",
		"--scrape-target", node.URL+synth.Path("e2e-data-0"), "--container-names", "data", "--scrape-interval", "500ms",
		"--scrape-timeout", "500ms", "--reconnect-interval", "200ms", "--reconnect-max-interval", "1s",
		"--node-ip", "127.0.0.1", "--secondary-address", "gossip=127.0.0.1:17932")
	series := `banyandb_measure_total_written{container_name="data",group="sw_metric"`
	hasSeries := func(base string) func() bool {
		return func() bool {
			r := get(t, base+"/metrics")
			return r.code == 200 && strings.Contains(r.body, series) && strings.Contains(r.body, `pod_name="e2e-data-0"`)
		}
	}
	require.Eventually(t, hasSeries("http://"+p1.httpAddr), wait, 50*time.Millisecond, "agent log:\n%s", ap.stderr.String())

	stopProxyProcess(t, p1)
	p2 := startProxyProcess(t, append(proxyArgs, "--grpc-listen-addr", p1.grpcAddr)...)
	require.Equal(t, p1.grpcAddr, p2.grpcAddr)
	require.Eventually(t, hasSeries("http://"+p2.httpAddr), wait, 50*time.Millisecond, "agent log:\n%s", ap.stderr.String())
	h := getHealth(t, "http://"+p2.httpAddr)
	require.Equal(t, 1, h.AgentsOnline)
	require.Equal(t, 1, h.AgentsTotal)
	cluster := get(t, "http://"+p2.httpAddr+"/cluster")
	require.Contains(t, cluster.body, `"gossip"`)

	select {
	case <-ap.exited:
		t.Fatalf("agent exited: %v\n%s", ap.err, ap.stderr.String())
	default:
	}
	require.NoError(t, ap.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-ap.exited:
	case <-time.After(wait):
		t.Fatal("agent did not stop on SIGTERM")
	}
	require.NoError(t, ap.err, ap.stderr.String())
	require.GreaterOrEqual(t, strings.Count(ap.stderr.String(), `"msg":"Registered with proxy"`), 2)
}

// The demo binary starts, serves every endpoint with data and exits 0 on
// SIGINT.
func TestDemoBinary(t *testing.T) {
	cmd := exec.Command(binary(t, "fodc-demo"), "--grpc-listen-addr", "127.0.0.1:0", "--http-listen-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	lines := make(chan string, 64)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})

	urlRE := regexp.MustCompile(`(https?://[^\s']+)`)
	var urls []string
	for len(urls) < 5 {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "demo exited early:\n%s", stderr.String())
			if strings.Contains(l, "curl") {
				urls = append(urls, urlRE.FindString(l))
			}
		case <-time.After(wait):
			t.Fatalf("demo printed no URLs\n%s", stderr.String())
		}
	}
	for _, u := range urls {
		r := get(t, u)
		require.Equal(t, 200, r.code, u)
		switch {
		case strings.Contains(u, "/metrics-windows"):
			var series []json.RawMessage
			require.NoError(t, json.Unmarshal([]byte(r.body), &series))
			require.NotEmpty(t, series, u)
		case strings.Contains(u, "/metrics"):
			require.Contains(t, r.body, "banyandb_", u)
		case strings.HasSuffix(u, "/cluster"):
			require.Contains(t, r.body, "demo-data-warm-0")
		case strings.HasSuffix(u, "/health"):
			require.Contains(t, r.body, `"agents_online": 4`)
		}
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status; stderr:\n%s", stderr.String())
	case <-time.After(wait):
		t.Fatal("demo did not exit on SIGINT")
	}
	require.Contains(t, rest, "FODC demo stopped.")
}
