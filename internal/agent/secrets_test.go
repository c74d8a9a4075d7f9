package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
)

// secrets appear in the node's command lines and environments below; none
// may reach the proxy.
var secrets = []string{"hunter2", "tok-abc123", "url-pw", "env-s3cret", "query-key"}

// secretArgv is a node command line that carries every kind of secret:
// both flag forms, a URL's userinfo and a secret-named pair in a value.
var secretArgv = []string{
	"banyand", "data", "--etcd-password", "hunter2", "--auth-token=tok-abc123",
	"--etcd-endpoints=http://root:url-pw@etcd:2379", "--opts=a=1,api_key=query-key",
	"--measure-flush-timeout=1s", "--grpc-port", "17912",
}

// requestConfig starts an agent with cfg against p and returns what the
// proxy receives for one configuration command.
func requestConfig(t *testing.T, p *proxy.Proxy, cfg Config) *fodcv1.ExtNodeConfigRequest {
	t.Helper()
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "up 1\n")
	}))
	t.Cleanup(metrics.Close)
	cfg.ScrapeTargets = []string{metrics.URL}
	cfg.NodeRole = "datanode-hot"
	a := startAgent(t, cfg)
	id := a.Uplink.Status().AgentID
	require.Eventually(t, func() bool { return p.Streams.Has(id, protocol.KindNodeConfig) }, wait, 5*time.Millisecond)
	cs, ok := p.Streams.NodeConfig(id)
	require.True(t, ok)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	r, err := cs.Request(ctx)
	require.NoError(t, err)
	return r
}

// requireNoSecret fails when any secret appears anywhere in r.
func requireNoSecret(t *testing.T, r *fodcv1.ExtNodeConfigRequest) {
	t.Helper()
	b, err := protojson.Marshal(r)
	require.NoError(t, err)
	for _, s := range secrets {
		require.NotContains(t, string(b), s)
	}
}

func values(m map[string]*fodcv1.ExtParamValues, k string) []string { return m[k].GetValues() }

// Secrets on a node's command line, in its environment and in the agent's
// own --node-cmdline never leave the agent, whichever source is read;
// what is not secret arrives intact.
func TestSecretsNeverLeaveTheAgent(t *testing.T) {
	red := []string{nodeconfig.Redacted}
	requireRedactedArgv := func(t *testing.T, r *fodcv1.ExtNodeConfigRequest) {
		t.Helper()
		sp := r.GetStartupParams()
		require.Equal(t, red, values(sp, "etcd-password"))
		require.Equal(t, red, values(sp, "auth-token"))
		require.Equal(t, []string{"http://<redacted>@etcd:2379"}, values(sp, "etcd-endpoints"))
		require.Equal(t, []string{"a=1,api_key=<redacted>"}, values(sp, "opts"))
		require.Equal(t, []string{"1s"}, values(sp, "measure-flush-timeout"))
		require.Equal(t, []string{"17912"}, values(sp, "grpc-port"))
		require.Equal(t, []string{"data"}, r.GetArgs())
		require.Equal(t, "banyand", r.GetRuntimeConfig()[nodeconfig.KeyProgram])
	}

	t.Run("pprof", func(t *testing.T) {
		p := startProxy(t)
		node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/debug/pprof/cmdline" {
				http.NotFound(w, r)
				return
			}
			_, _ = io.WriteString(w, strings.Join(secretArgv, "\x00"))
		}))
		defer node.Close()
		cfg := testConfig(p.GRPCAddr())
		cfg.NodePprofAddr = strings.TrimPrefix(node.URL, "http://")
		r := requestConfig(t, p, cfg)
		requireNoSecret(t, r)
		requireRedactedArgv(t, r)
		require.Equal(t, nodeconfig.SourcePprofPrefix+node.URL+"/debug/pprof/cmdline", r.GetSource())
		require.Empty(t, r.GetErrors())
		require.Equal(t, []string{cfg.NodePprofAddr}, values(r.GetAgentParams(), "node-pprof-addr"))
	})

	t.Run("proc", func(t *testing.T) {
		if _, err := os.Stat("/bin/sh"); err != nil {
			t.Skip("no /bin/sh to run a stand-in node")
		}
		// A real process whose /proc/<pid>/cmdline and environ hold the
		// secrets: sh waiting on stdin, with the node's argv as its $0 and
		// positional parameters.
		cmd := exec.Command("/bin/sh", append([]string{"-c", "read line"}, secretArgv...)...)
		cmd.Env = []string{"BYDB_ETCD_PASSWORD=env-s3cret", "BYDB_MEASURE_FLUSH_TIMEOUT=1s", "BYDB_DSN=postgres://u:url-pw@db/x", "OTHER=x"}
		stdin, err := cmd.StdinPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() {
			_ = stdin.Close()
			_ = cmd.Wait()
		})
		p := startProxy(t)
		cfg := testConfig(p.GRPCAddr())
		cfg.NodePID = cmd.Process.Pid
		r := requestConfig(t, p, cfg)
		requireNoSecret(t, r)
		require.Equal(t, nodeconfig.SourceProcPrefix+strconv.Itoa(cmd.Process.Pid), r.GetSource())
		require.Equal(t, []string{"read line"}, values(r.GetStartupParams(), "c"))
		require.Equal(t, red, values(r.GetStartupParams(), "etcd-password"))
		require.Equal(t, []string{"1s"}, values(r.GetStartupParams(), "measure-flush-timeout"))
		require.Equal(t, map[string]string{
			"BYDB_ETCD_PASSWORD": nodeconfig.Redacted, "BYDB_MEASURE_FLUSH_TIMEOUT": "1s", "BYDB_DSN": "postgres://<redacted>@db/x",
		}, r.GetEnvironment())
		require.NotEmpty(t, r.GetRuntimeConfig()[nodeconfig.KeyStartedAt])
	})

	t.Run("override", func(t *testing.T) {
		p := startProxy(t)
		cfg := testConfig(p.GRPCAddr())
		cfg.NodeCmdline = nodeconfig.QuoteShell(secretArgv)
		r := requestConfig(t, p, cfg)
		requireNoSecret(t, r)
		requireRedactedArgv(t, r)
		require.Equal(t, nodeconfig.SourceOverride, r.GetSource())
		got := values(r.GetAgentParams(), "node-cmdline")
		require.Len(t, got, 1)
		require.Contains(t, got[0], "--etcd-password '<redacted>'", "the agent's own flag is redacted too")
		require.Contains(t, got[0], "--measure-flush-timeout=1s")
	})
}
