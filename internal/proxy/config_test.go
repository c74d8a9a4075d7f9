package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	require.NoError(t, cfg.Validate())
	require.Equal(t, ":17900", cfg.GRPCListenAddr)
	require.Equal(t, ":17901", cfg.HTTPListenAddr)
	require.Equal(t, 32<<20, cfg.GRPCMaxMsgSize)
}

// Validate reports every bad setting at once, naming the flag that fixes it.
func TestValidateNamesEveryBadFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"cleanup not above heartbeat timeout", []string{"--agent-heartbeat-timeout=30s", "--agent-cleanup-timeout=10s"},
			[]string{"agent-cleanup-timeout (10s) must be greater than agent-heartbeat-timeout (30s)"}},
		{"sub-second heartbeat interval", []string{"--heartbeat-interval=500ms"},
			[]string{"--heartbeat-interval (500ms) must be at least 1s"}},
		{"heartbeat timeout too close to the interval", []string{"--heartbeat-interval=20s"},
			[]string{"--agent-heartbeat-timeout (30s) must be at least twice --heartbeat-interval (20s)"}},
		{"several at once", []string{"--max-agents=0", "--grpc-max-msg-size=1000", "--collect-timeout=0s", "--config-ignore-params=[bad"},
			[]string{"--max-agents (0) must be positive", "--grpc-max-msg-size (1000)", "--collect-timeout (0s) must be positive", "--config-ignore-params"}},
		{"empty listen address", []string{"--grpc-listen-addr="}, []string{"--grpc-listen-addr must not be empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			cfg.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tc.args))
			err := cfg.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.Equal(t, len(tc.want), strings.Count(err.Error(), "\n")+1, "one line per problem: %v", err)
		})
	}
}

func TestFlagsBindEveryField(t *testing.T) {
	cfg := DefaultConfig()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--grpc-listen-addr=:17912", "--http-listen-addr=:17913", "--max-agents=7",
		"--heartbeat-interval=2s", "--agent-heartbeat-timeout=6s", "--agent-cleanup-timeout=1m",
		"--lifecycle-timeout=20s", "--topology-timeout=3s", "--diagnostics-window=2s",
	}))
	require.NoError(t, cfg.Validate())
	require.Equal(t, ":17912", cfg.GRPCListenAddr)
	require.Equal(t, ":17913", cfg.HTTPListenAddr)
	require.Equal(t, 7, cfg.MaxAgents)
	require.Equal(t, 2*time.Second, cfg.HeartbeatInterval)
	require.Equal(t, 20*time.Second, cfg.LifecycleTimeout)
	require.Equal(t, 3*time.Second, cfg.TopologyTimeout)
	require.Equal(t, 2*time.Second, cfg.DiagnosticsWindow)
}
