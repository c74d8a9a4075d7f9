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
