package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/proxy/configreport"
)

// Config is everything the proxy daemon can be told on its command line.
type Config struct {
	GRPCListenAddr        string
	HTTPListenAddr        string
	GRPCMaxMsgSize        int
	GRPCKeepaliveTime     time.Duration
	GRPCKeepaliveTimeout  time.Duration
	AgentHeartbeatTimeout time.Duration
	AgentCleanupTimeout   time.Duration
	HeartbeatInterval     time.Duration
	MaxAgents             int
	HTTPReadTimeout       time.Duration
	HTTPWriteTimeout      time.Duration
	CollectTimeout        time.Duration
	AgentReplyTimeout     time.Duration
	TopologyTimeout       time.Duration
	LifecycleTimeout      time.Duration
	ConfigCacheTTL        time.Duration
	DiagnosticsWindow     time.Duration
	ConfigIgnoreParams    string
	ShutdownGrace         time.Duration

	// Limits at every input; each violation is counted.
	GRPCHandshakeTimeout   time.Duration
	GRPCMaxConnections     int
	RegistrationsPerSecond float64
	RegistrationBurst      int
	MaxRegistrationLabels  int
	MaxContainers          int
	MaxNameLength          int
	MaxValueLength         int
	MaxSeriesPerReply      int
	MaxLabelsPerSeries     int
	MaxLabelNameLength     int
	MaxLabelValueLength    int
	MaxMetricNameLength    int
	MaxCrashRecordBytes    int
	MaxCrashBytes          int
	MaxProfileRecordBytes  int
	MaxProfileBytes        int
	// OnDemandProfileBytes bounds the on-demand profiles kept (POST
	// /profiling) in all, and so each one.
	OnDemandProfileBytes int
	// Admission control: concurrent requests per endpoint class.
	MaxInflightMetrics   int
	MaxInflightCluster   int
	MaxInflightDownloads int

	// StateFile, when set, keeps the registry's node identities across
	// restarts (see registry.Options.StateFile).
	StateFile string
	// EnablePprof serves net/http/pprof on the HTTP listener.
	EnablePprof bool

	// Security: TLS, agent authentication, the HTTP API's web
	// configuration and roles (security.go).
	Security SecurityConfig
}

// DefaultConfig returns the design's defaults (DESIGN.md §1.5), except the
// 32 MiB message size: one data node's metrics answer exceeds 4 MiB, and an
// oversize message kills the stream and makes the agent reconnect forever.
func DefaultConfig() Config {
	return Config{
		GRPCListenAddr:        ":17900",
		HTTPListenAddr:        ":17901",
		GRPCMaxMsgSize:        32 << 20,
		GRPCKeepaliveTime:     10 * time.Second,
		GRPCKeepaliveTimeout:  5 * time.Second,
		AgentHeartbeatTimeout: 30 * time.Second,
		AgentCleanupTimeout:   5 * time.Minute,
		HeartbeatInterval:     10 * time.Second,
		MaxAgents:             1000,
		HTTPReadTimeout:       10 * time.Second,
		HTTPWriteTimeout:      10 * time.Second,
		CollectTimeout:        8 * time.Second,
		AgentReplyTimeout:     time.Minute,
		TopologyTimeout:       5 * time.Second,
		LifecycleTimeout:      50 * time.Second,
		ConfigCacheTTL:        15 * time.Second,
		DiagnosticsWindow:     time.Second,
		ShutdownGrace:         5 * time.Second,

		GRPCHandshakeTimeout: 5 * time.Second,
		GRPCMaxConnections:   4096,
		// A host may run many agents (or the load tool) behind one IP:
		// the burst lets a thousand register at once, the rate bounds a
		// flood that goes on.
		RegistrationsPerSecond: 10,
		RegistrationBurst:      1000,
		MaxRegistrationLabels:  64,
		MaxContainers:          16,
		MaxNameLength:          253, // a Kubernetes object name
		MaxValueLength:         1024,
		MaxSeriesPerReply:      1_000_000,
		MaxLabelsPerSeries:     64,
		MaxLabelNameLength:     256,
		MaxLabelValueLength:    4096,
		MaxMetricNameLength:    256,
		MaxCrashRecordBytes:    1 << 20,
		MaxCrashBytes:          64 << 20,
		MaxProfileRecordBytes:  64 << 10,
		MaxProfileBytes:        16 << 20,
		OnDemandProfileBytes:   64 << 20,
		MaxInflightMetrics:     16,
		MaxInflightCluster:     8,
		MaxInflightDownloads:   4,
	}
}

// RegisterFlags binds the configuration to fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.GRPCListenAddr, "grpc-listen-addr", c.GRPCListenAddr, "Address the agent-facing gRPC server listens on (upstream deployments use :17912).")
	fs.StringVar(&c.HTTPListenAddr, "http-listen-addr", c.HTTPListenAddr, "Address the HTTP API listens on (upstream deployments use :17913).")
	fs.IntVar(&c.GRPCMaxMsgSize, "grpc-max-msg-size", c.GRPCMaxMsgSize, "Largest message accepted from an agent, in bytes. A data node's metrics answer can exceed 4 MiB.")
	fs.DurationVar(&c.GRPCKeepaliveTime, "grpc-keepalive-time", c.GRPCKeepaliveTime, "Ping an agent connection after this long without traffic.")
	fs.DurationVar(&c.GRPCKeepaliveTimeout, "grpc-keepalive-timeout", c.GRPCKeepaliveTimeout, "Close an agent connection whose ping is not answered within this time.")
	fs.DurationVar(&c.AgentHeartbeatTimeout, "agent-heartbeat-timeout", c.AgentHeartbeatTimeout, "Mark an agent unconnected after this long without a heartbeat.")
	fs.DurationVar(&c.AgentCleanupTimeout, "agent-cleanup-timeout", c.AgentCleanupTimeout, "Unregister an agent after this long without a heartbeat.")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "Heartbeat interval sent to agents at registration (whole seconds).")
	fs.IntVar(&c.MaxAgents, "max-agents", c.MaxAgents, "Most agents registered at once.")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", c.HTTPReadTimeout, "Time allowed to read an HTTP request.")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", c.HTTPWriteTimeout, "Time allowed to write an HTTP answer once it is collected.")
	fs.DurationVar(&c.CollectTimeout, "collect-timeout", c.CollectTimeout, "How long a collection waits for agents when the caller sends no X-Prometheus-Scrape-Timeout-Seconds header.")
	fs.DurationVar(&c.AgentReplyTimeout, "agent-reply-timeout", c.AgentReplyTimeout, "Close an agent stream that leaves a command unanswered this long; the agent then re-registers.")
	fs.DurationVar(&c.TopologyTimeout, "topology-timeout", c.TopologyTimeout, "How long a topology collection waits for agents; keep it below --collect-timeout so that /cluster answers in time.")
	fs.DurationVar(&c.LifecycleTimeout, "lifecycle-timeout", c.LifecycleTimeout, "How long a lifecycle collection waits for each agent, and for each liaison's schema registry read (agents allow their node 40s).")
	fs.DurationVar(&c.DiagnosticsWindow, "diagnostics-window", c.DiagnosticsWindow, "How long /diagnostics waits for crash records after asking the agents (their answer has no end marker).")
	fs.DurationVar(&c.ConfigCacheTTL, "config-cache-ttl", c.ConfigCacheTTL, "Reuse a node configuration collection this young for /cluster/config.")
	fs.StringVar(&c.ConfigIgnoreParams, "config-ignore-params", c.ConfigIgnoreParams, "Per-node parameters left out of /cluster/config/consistency: comma-separated globs; a leading + adds to the defaults, otherwise they are replaced; none ignores nothing.")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "Time allowed for a graceful stop before connections are closed.")

	fs.DurationVar(&c.GRPCHandshakeTimeout, "grpc-handshake-timeout", c.GRPCHandshakeTimeout, "Close an agent connection that has not completed the HTTP/2 handshake within this time.")
	fs.IntVar(&c.GRPCMaxConnections, "grpc-max-connections", c.GRPCMaxConnections, "Most agent connections open at once; more are closed at once and counted.")
	fs.Float64Var(&c.RegistrationsPerSecond, "registrations-per-second", c.RegistrationsPerSecond, "Steady rate of registrations accepted from one peer IP (0: no limit).")
	fs.IntVar(&c.RegistrationBurst, "registration-burst", c.RegistrationBurst, "Registrations one peer IP may make at once before --registrations-per-second applies.")
	fs.IntVar(&c.MaxRegistrationLabels, "max-registration-labels", c.MaxRegistrationLabels, "Most node labels (and secondary addresses) one registration may carry.")
	fs.IntVar(&c.MaxContainers, "max-containers", c.MaxContainers, "Most container names one registration may carry.")
	fs.IntVar(&c.MaxNameLength, "max-name-length", c.MaxNameLength, "Longest pod name, container name, role, node label name or address name, in bytes.")
	fs.IntVar(&c.MaxValueLength, "max-value-length", c.MaxValueLength, "Longest node label value or address an agent may register, in bytes.")
	fs.IntVar(&c.MaxSeriesPerReply, "max-series-per-reply", c.MaxSeriesPerReply, "Most metrics in one agent reply (a window reply has one per sample); a larger reply is refused whole.")
	fs.IntVar(&c.MaxLabelsPerSeries, "max-labels-per-series", c.MaxLabelsPerSeries, "Most labels on one series an agent sends; a reply with more is refused whole.")
	fs.IntVar(&c.MaxLabelNameLength, "max-label-name-length", c.MaxLabelNameLength, "Longest label name in an agent reply, in bytes; a reply with a longer one is refused whole.")
	fs.IntVar(&c.MaxLabelValueLength, "max-label-value-length", c.MaxLabelValueLength, "Longest label value in an agent reply, in bytes; a reply with a longer one is refused whole.")
	fs.IntVar(&c.MaxMetricNameLength, "max-metric-name-length", c.MaxMetricNameLength, "Longest metric name in an agent reply, in bytes; a reply with a longer one is refused whole.")
	fs.IntVar(&c.MaxCrashRecordBytes, "max-crash-record-bytes", c.MaxCrashRecordBytes, "Largest crash record kept, in bytes; a larger one is dropped and counted.")
	fs.IntVar(&c.MaxCrashBytes, "max-crash-bytes", c.MaxCrashBytes, "Bytes of crash records kept in all; the records of the oldest crashes are evicted first.")
	fs.IntVar(&c.MaxProfileRecordBytes, "max-profile-record-bytes", c.MaxProfileRecordBytes, "Largest pressure-profile record kept, in bytes; a larger one is dropped and counted.")
	fs.IntVar(&c.OnDemandProfileBytes, "on-demand-profile-bytes", c.OnDemandProfileBytes, "Bytes of on-demand profiles (POST /profiling) kept in all, and so the largest one; the oldest finished ones are evicted first.")
	fs.IntVar(&c.MaxProfileBytes, "max-profile-bytes", c.MaxProfileBytes, "Bytes of pressure-profile records kept in all; the oldest captures are evicted first.")
	fs.IntVar(&c.MaxInflightMetrics, "max-inflight-metrics", c.MaxInflightMetrics, "Distinct /metrics and /metrics-windows collections run at once; more get 503 with Retry-After.")
	fs.IntVar(&c.MaxInflightCluster, "max-inflight-cluster", c.MaxInflightCluster, "Cluster-view, diagnostics and profile-list requests served at once; more get 503 with Retry-After.")
	fs.IntVar(&c.MaxInflightDownloads, "max-inflight-downloads", c.MaxInflightDownloads, "Profile downloads streamed at once; more get 503 with Retry-After.")

	fs.BoolVar(&c.EnablePprof, "enable-pprof", c.EnablePprof, "Serve the proxy's own net/http/pprof under /debug/pprof/ on the HTTP listener (the operator role's when roles are configured; a CPU profile or trace must be shorter than --http-write-timeout).")
	fs.StringVar(&c.StateFile, "state-file", c.StateFile, "File that keeps the registered nodes' identities (no collected data) across proxy restarts, so that nodes that do not come back are listed offline; empty keeps nothing.")

	c.Security.RegisterFlags(fs)
}

// Validate reports every invalid setting at once, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.GRPCListenAddr == "" {
		errs = append(errs, errors.New("--grpc-listen-addr must not be empty"))
	}
	if c.HTTPListenAddr == "" {
		errs = append(errs, errors.New("--http-listen-addr must not be empty"))
	}
	if c.GRPCMaxMsgSize < 1<<20 {
		errs = append(errs, fmt.Errorf("--grpc-max-msg-size (%d) must be at least 1048576; agents' metrics answers are large", c.GRPCMaxMsgSize))
	}
	if c.HeartbeatInterval < time.Second {
		errs = append(errs, fmt.Errorf("--heartbeat-interval (%s) must be at least 1s: agents are told whole seconds", c.HeartbeatInterval))
	}
	if c.AgentHeartbeatTimeout < 2*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("--agent-heartbeat-timeout (%s) must be at least twice --heartbeat-interval (%s), or a single late heartbeat marks a healthy agent unconnected", c.AgentHeartbeatTimeout, c.HeartbeatInterval))
	}
	if c.AgentCleanupTimeout <= c.AgentHeartbeatTimeout {
		errs = append(errs, fmt.Errorf("agent-cleanup-timeout (%s) must be greater than agent-heartbeat-timeout (%s)", c.AgentCleanupTimeout, c.AgentHeartbeatTimeout))
	}
	if c.MaxAgents < 1 {
		errs = append(errs, fmt.Errorf("--max-agents (%d) must be positive", c.MaxAgents))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--http-read-timeout", c.HTTPReadTimeout},
		{"--http-write-timeout", c.HTTPWriteTimeout},
		{"--collect-timeout", c.CollectTimeout},
		{"--agent-reply-timeout", c.AgentReplyTimeout},
		{"--topology-timeout", c.TopologyTimeout},
		{"--lifecycle-timeout", c.LifecycleTimeout},
		{"--config-cache-ttl", c.ConfigCacheTTL},
		{"--diagnostics-window", c.DiagnosticsWindow},
		{"--grpc-keepalive-time", c.GRPCKeepaliveTime},
		{"--grpc-keepalive-timeout", c.GRPCKeepaliveTimeout},
		{"--shutdown-grace", c.ShutdownGrace},
		{"--grpc-handshake-timeout", c.GRPCHandshakeTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s (%s) must be positive", d.flag, d.v))
		}
	}
	for _, n := range []struct {
		flag string
		v    int
	}{
		{"--grpc-max-connections", c.GRPCMaxConnections},
		{"--max-registration-labels", c.MaxRegistrationLabels},
		{"--max-containers", c.MaxContainers},
		{"--max-name-length", c.MaxNameLength},
		{"--max-value-length", c.MaxValueLength},
		{"--max-series-per-reply", c.MaxSeriesPerReply},
		{"--max-labels-per-series", c.MaxLabelsPerSeries},
		{"--max-label-name-length", c.MaxLabelNameLength},
		{"--max-label-value-length", c.MaxLabelValueLength},
		{"--max-metric-name-length", c.MaxMetricNameLength},
		{"--max-crash-record-bytes", c.MaxCrashRecordBytes},
		{"--max-crash-bytes", c.MaxCrashBytes},
		{"--max-profile-record-bytes", c.MaxProfileRecordBytes},
		{"--max-profile-bytes", c.MaxProfileBytes},
		{"--on-demand-profile-bytes", c.OnDemandProfileBytes},
		{"--max-inflight-metrics", c.MaxInflightMetrics},
		{"--max-inflight-cluster", c.MaxInflightCluster},
		{"--max-inflight-downloads", c.MaxInflightDownloads},
	} {
		if n.v < 1 {
			errs = append(errs, fmt.Errorf("%s (%d) must be positive", n.flag, n.v))
		}
	}
	if c.RegistrationsPerSecond < 0 {
		errs = append(errs, fmt.Errorf("--registrations-per-second (%g) must not be negative", c.RegistrationsPerSecond))
	}
	if c.RegistrationsPerSecond > 0 && c.RegistrationBurst < 1 {
		errs = append(errs, fmt.Errorf("--registration-burst (%d) must be positive", c.RegistrationBurst))
	}
	if c.MaxCrashRecordBytes > c.MaxCrashBytes {
		errs = append(errs, fmt.Errorf("--max-crash-record-bytes (%d) must not exceed --max-crash-bytes (%d)", c.MaxCrashRecordBytes, c.MaxCrashBytes))
	}
	if c.MaxProfileRecordBytes > c.MaxProfileBytes {
		errs = append(errs, fmt.Errorf("--max-profile-record-bytes (%d) must not exceed --max-profile-bytes (%d)", c.MaxProfileRecordBytes, c.MaxProfileBytes))
	}
	if _, err := configreport.ParseIgnore(c.ConfigIgnoreParams); err != nil {
		errs = append(errs, fmt.Errorf("--config-ignore-params: %w", err))
	}
	if err := c.Security.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
