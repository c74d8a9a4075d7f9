package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/agent/uplink"
	"github.com/fodc-go/fodc/internal/roles"
)

func parse(t *testing.T, args ...string) Config {
	t.Helper()
	cfg := DefaultConfig()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return cfg
}

func TestFlagsBuildTheIdentity(t *testing.T) {
	cfg := parse(t,
		"--node-role", "datanode-hot", "--pod-name", "data-0", "--node-ip", "10.0.0.5", "--node-port", "17912",
		"--node-labels", "zone=a,rack=r1", "--secondary-address", "gossip=10.0.0.5:17932", "--secondary-address", "http=10.0.0.5:17913",
		"--scrape-target", "http://127.0.0.1:2121/metrics", "--poll-metrics-ports", "2122", "--container-names", "data,sidecar",
	)
	require.NoError(t, cfg.Validate())
	id := cfg.baseIdentity()
	require.Equal(t, roles.Role{Kind: roles.KindData, Tier: "hot"}, id.Role)
	require.Equal(t, "data-0", id.PodName)
	require.Equal(t, uplink.Address{IP: "10.0.0.5", Port: 17912}, id.Primary)
	require.Equal(t, map[string]uplink.Address{"gossip": {IP: "10.0.0.5", Port: 17932}, "http": {IP: "10.0.0.5", Port: 17913}}, id.Secondary)
	require.Equal(t, map[string]string{"zone": "a", "rack": "r1"}, id.Labels)
	req := id.RegisterRequest()
	require.Equal(t, "ROLE_DATA", req.GetNodeRole())
	require.Equal(t, "hot", req.GetLabels()["type"])
	targets, err := cfg.targets()
	require.NoError(t, err)
	require.Equal(t, []scrape.Target{
		{URL: "http://127.0.0.1:2121/metrics", Name: "data"},
		{URL: "http://127.0.0.1:2122/metrics", Name: "sidecar"},
	}, targets)
}

func TestDefaultTargetIsUpstreamsPort(t *testing.T) {
	cfg := parse(t, "--node-role", "liaison")
	require.NoError(t, cfg.Validate())
	targets, err := cfg.targets()
	require.NoError(t, err)
	require.Equal(t, []scrape.Target{{URL: "http://127.0.0.1:2121/metrics"}}, targets)
	require.Equal(t, "localhost:17900", cfg.ProxyAddr)
	require.Equal(t, 10*time.Second, cfg.HeartbeatInterval)
	require.Equal(t, 5*time.Second, cfg.ReconnectInterval)
}

func TestValidateReportsEveryBadFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // each must appear in the error
	}{
		{"role required without discovery", []string{"--pod-name", "p"}, []string{"--node-role is required"}},
		{"discovery makes the role optional", []string{"--pod-name", "p", "--node-grpc-addr", "127.0.0.1:17912"}, nil},
		{"everything at once", []string{
			"--proxy-addr", "nohost", "--node-role", "datanode-", "--pod-name", " ", "--node-ip", "10.0.0.1", "--node-port", "0",
			"--secondary-address", "gossip", "--secondary-address", "http=x:99999", "--scrape-target", "ftp://x/metrics",
			"--poll-metrics-ports", "0", "--heartbeat-interval", "0s", "--reconnect-interval", "10s", "--reconnect-max-interval", "1s",
			"--scrape-interval", "1s", "--scrape-timeout", "2s", "--scrape-max-body-bytes", "0", "--scrape-sample-limit", "0",
			"--recorder-memory-bytes", "10", "--node-grpc-addr", "bad",
		}, []string{
			"--proxy-addr", "--node-role", "--pod-name", "--node-port", `--secondary-address "gossip"`, `--secondary-address "http=x:99999"`,
			"--scrape-target", "--poll-metrics-ports", "--heartbeat-interval", "--reconnect-max-interval", "--scrape-timeout",
			"--scrape-max-body-bytes", "--scrape-sample-limit", "--recorder-memory-bytes", "--node-grpc-addr",
		}},
		{"container names must match targets", []string{"--node-role", "meta", "--container-names", "a,b"}, []string{"--container-names has 2 names for 1 scrape targets"}},
		{"node configuration flags", []string{
			"--node-role", "meta", "--node-pprof-addr", "localhost", "--node-pid", "-1", "--node-cmdline", "--grpc-port=1 'x",
			"--node-cgroup-root", "sys/fs/cgroup", "--node-config-timeout", "0s",
		}, []string{"--node-pprof-addr", "--node-pid (-1)", "--node-cmdline: command line syntax: unterminated single quote", "--node-cgroup-root", "--node-config-timeout"}},
		{"pprof port out of range", []string{"--node-role", "meta", "--node-pprof-addr", "127.0.0.1:70000"}, []string{"--node-pprof-addr \"127.0.0.1:70000\": port must be in 1..65535"}},
		{"cmdline must start with the program", []string{"--node-role", "meta", "--node-cmdline", "--grpc-port=1"}, []string{"--node-cmdline must start with the program name"}},
		{"cmdline without words", []string{"--node-role", "meta", "--node-cmdline", "  "}, []string{"--node-cmdline has no words"}},
		{"node configuration sources are fine", []string{"--node-role", "meta", "--node-pprof-addr", ":6060", "--node-pid", "1", "--node-cmdline", "banyand data --k=v"}, nil},
		{"duplicate secondary", []string{"--node-role", "meta", "--secondary-address", "a=h:1", "--secondary-address", "a=h:2"}, []string{`names "a" twice`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, tc.args...)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Len(t, strings.Split(err.Error(), "\n"), len(tc.want), err.Error())
		})
	}
}

// The syntax error of --node-cmdline never quotes the line, which may hold
// secrets.
func TestValidateDoesNotQuoteTheCommandLine(t *testing.T) {
	cfg := parse(t, "--node-role", "meta", "--node-cmdline", `banyand --etcd-password="hunter2`)
	err := cfg.Validate()
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2")
}

func TestPprofURL(t *testing.T) {
	for addr, want := range map[string]string{
		":6060":          "http://127.0.0.1:6060/debug/pprof/cmdline",
		"10.0.0.5:6060":  "http://10.0.0.5:6060/debug/pprof/cmdline",
		"[::1]:6060":     "http://[::1]:6060/debug/pprof/cmdline",
		"localhost:2122": "http://localhost:2122/debug/pprof/cmdline",
	} {
		cfg := Config{NodePprofAddr: addr}
		got, err := cfg.pprofURL()
		require.NoError(t, err, addr)
		require.Equal(t, want, got)
	}
}

// The agent's own flags are reported with their current values, slice
// flags one value per element, and --node-cmdline with its secrets
// redacted word by word.
func TestAgentParams(t *testing.T) {
	cfg := parse(t, "--node-role", "datanode-hot", "--scrape-target", "http://a/metrics", "--scrape-target", "http://b/metrics",
		"--node-cmdline", `banyand data --etcd-password hunter2 --auth-token=abc --etcd-endpoints=http://u:pw@etcd:2379 --path='/a b'`)
	params := cfg.Params()
	require.Equal(t, []string{"datanode-hot"}, params["node-role"])
	require.Equal(t, []string{"http://a/metrics", "http://b/metrics"}, params["scrape-target"])
	require.Equal(t, []string{"3s"}, params["node-config-timeout"])
	require.Equal(t, []string{"/sys/fs/cgroup"}, params["node-cgroup-root"])
	require.NotContains(t, params, "help")

	red := redactAgentParams(params)
	require.Equal(t, []string{`banyand data --etcd-password '<redacted>' '--auth-token=<redacted>' '--etcd-endpoints=http://<redacted>@etcd:2379' '--path=/a b'`}, red["node-cmdline"])
	require.Contains(t, params["node-cmdline"][0], "hunter2", "the input is not changed")
	red = redactAgentParams(map[string][]string{"node-cmdline": {`banyand --password "unterminated`}})
	require.Equal(t, []string{"<redacted>"}, red["node-cmdline"])
}
