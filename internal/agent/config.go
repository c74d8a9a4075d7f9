package agent

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/agent/uplink"
	"github.com/fodc-go/fodc/internal/roles"
)

// Config is everything the agent can be told on its command line.
type Config struct {
	ProxyAddr            string
	NodeIP               string
	NodePort             int
	NodeRole             string
	NodeLabels           map[string]string
	HeartbeatInterval    time.Duration
	ReconnectInterval    time.Duration
	ReconnectMaxInterval time.Duration
	// SecondaryAddresses are name=host:port pairs.
	SecondaryAddresses []string
	PodName            string
	ContainerNames     []string
	// ScrapeTargets are metrics URLs; PollMetricsPorts adds
	// http://127.0.0.1:<port>/metrics for each port, like upstream agents.
	ScrapeTargets       []string
	PollMetricsPorts    []int
	ScrapeInterval      time.Duration
	ScrapeTimeout       time.Duration
	ScrapeMaxBodyBytes  int64
	ScrapeSampleLimit   int
	RecorderMemoryBytes int64
	// HTTPListenAddr serves the agent's own /metrics and /healthz; empty
	// disables it.
	HTTPListenAddr string
	// EnablePprof serves the agent's own net/http/pprof on HTTPListenAddr.
	EnablePprof bool
	// NodeGRPCAddr, when set, is the local BanyanDB node's gRPC address,
	// asked for the node's role, labels and addresses.
	NodeGRPCAddr      string
	DiscoveryInterval time.Duration
	ShutdownGrace     time.Duration
	// NodePprofAddr is the node's pprof listener, host:port; the node's
	// command line is read from its /debug/pprof/cmdline.
	NodePprofAddr string
	// NodePID is the node's process id; when /proc/<pid> is visible its
	// command line, BYDB_* environment and runtime facts are read there.
	NodePID int
	// NodeCmdline overrides the node's command line: shell-like, program
	// name first.
	NodeCmdline string
	// NodeCgroupRoot is the cgroup v2 mount the node's limits are read from.
	NodeCgroupRoot string
	// NodeConfigTimeout bounds one collection of the node's configuration.
	NodeConfigTimeout time.Duration

	// Security is TLS and authentication towards the proxy (security.go).
	Security ProxySecurity
	// Parity holds the flags of the lifecycle, schema-registry, crash and
	// pressure streams (parity.go).
	Parity ParityConfig
}

// defaultPollPort is the upstream agent's default --poll-metrics-ports,
// BanyanDB's own metrics port; used when no target is configured.
const defaultPollPort = 2121

// DefaultConfig returns the design's defaults (DESIGN.md §2). The pod name
// defaults to the host name.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		ProxyAddr:            "localhost:17900",
		NodePort:             17912,
		HeartbeatInterval:    uplink.DefaultHeartbeatInterval,
		ReconnectInterval:    uplink.DefaultReconnectInterval,
		ReconnectMaxInterval: uplink.DefaultReconnectMaxInterval,
		PodName:              host,
		ScrapeInterval:       10 * time.Second,
		ScrapeTimeout:        5 * time.Second,
		ScrapeMaxBodyBytes:   scrape.DefaultMaxBodyBytes,
		ScrapeSampleLimit:    scrape.DefaultMaxSamples,
		RecorderMemoryBytes:  64 << 20,
		HTTPListenAddr:       ":17902",
		DiscoveryInterval:    30 * time.Second,
		ShutdownGrace:        5 * time.Second,
		NodeCgroupRoot:       nodeconfig.DefaultCgroupRoot,
		NodeConfigTimeout:    3 * time.Second,
		Parity:               defaultParity(),
	}
}

// RegisterFlags binds the configuration to fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ProxyAddr, "proxy-addr", c.ProxyAddr, "gRPC address of the FODC proxy (host:port).")
	fs.StringVar(&c.NodeIP, "node-ip", c.NodeIP, "IP of the BanyanDB node; sent as its primary address together with --node-port.")
	fs.IntVar(&c.NodePort, "node-port", c.NodePort, "gRPC port of the BanyanDB node (used with --node-ip).")
	fs.StringVar(&c.NodeRole, "node-role", c.NodeRole, "Role of the node: liaison, datanode-hot, datanode-warm, datanode-cold, datanode, meta, or an enum name such as ROLE_DATA. Sent as the enum name; the tier travels as the node label type=<tier>. Required unless --node-grpc-addr discovers it.")
	fs.StringToStringVar(&c.NodeLabels, "node-labels", c.NodeLabels, "Labels of the node, k1=v1,k2=v2.")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "Heartbeat interval until the proxy announces its own at registration.")
	fs.DurationVar(&c.ReconnectInterval, "reconnect-interval", c.ReconnectInterval, "First wait after a failed connection attempt; waits double up to --reconnect-max-interval.")
	fs.DurationVar(&c.ReconnectMaxInterval, "reconnect-max-interval", c.ReconnectMaxInterval, "Longest wait between connection attempts.")
	fs.StringArrayVar(&c.SecondaryAddresses, "secondary-address", c.SecondaryAddresses, "A named secondary address of the node, name=ip:port (repeatable), e.g. gossip=10.0.0.5:17932 or http=10.0.0.5:17913.")
	fs.StringVar(&c.PodName, "pod-name", c.PodName, "Name of the agent's pod; the upstream proxy requires one. Defaults to the host name.")
	fs.StringSliceVar(&c.ContainerNames, "container-names", c.ContainerNames, "Names of the scraped containers, one per scrape target in order (--scrape-target first, then --poll-metrics-ports).")
	fs.StringArrayVar(&c.ScrapeTargets, "scrape-target", c.ScrapeTargets, "URL of a Prometheus endpoint of the node (repeatable).")
	fs.IntSliceVar(&c.PollMetricsPorts, "poll-metrics-ports", c.PollMetricsPorts, "Ports scraped as http://127.0.0.1:<port>/metrics, like upstream agents. Without any target, 2121 is scraped.")
	fs.DurationVar(&c.ScrapeInterval, "scrape-interval", c.ScrapeInterval, "Interval between scrapes.")
	fs.DurationVar(&c.ScrapeTimeout, "scrape-timeout", c.ScrapeTimeout, "Time allowed for one scrape; at most --scrape-interval.")
	fs.Int64Var(&c.ScrapeMaxBodyBytes, strings.TrimPrefix(scrape.FlagMaxBodyBytes, "--"), c.ScrapeMaxBodyBytes, "Largest scrape body accepted, in bytes.")
	fs.IntVar(&c.ScrapeSampleLimit, strings.TrimPrefix(scrape.FlagMaxSamples, "--"), c.ScrapeSampleLimit, "Most samples accepted from one scrape.")
	fs.Int64Var(&c.RecorderMemoryBytes, "recorder-memory-bytes", c.RecorderMemoryBytes, "Memory budget of the flight recorder, in bytes; the oldest samples are evicted first.")
	fs.StringVar(&c.HTTPListenAddr, "http-listen-addr", c.HTTPListenAddr, "Address of the agent's own /metrics and /healthz; empty disables them.")
	fs.BoolVar(&c.EnablePprof, "enable-pprof", c.EnablePprof, "Serve the agent's own net/http/pprof under /debug/pprof/ on --http-listen-addr.")
	fs.StringVar(&c.NodeGRPCAddr, "node-grpc-addr", c.NodeGRPCAddr, "gRPC address of the local BanyanDB node; when set, its role, labels and addresses are discovered with NodeQueryService.GetCurrentNode. Explicit flags win.")
	fs.DurationVar(&c.DiscoveryInterval, "node-discovery-interval", c.DiscoveryInterval, "Interval between discoveries with --node-grpc-addr.")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "Time allowed for a graceful stop.")
	fs.StringVar(&c.NodePprofAddr, "node-pprof-addr", c.NodePprofAddr, "Address of the node's pprof listener (host:port); the node's startup parameters are read from http://<addr>/debug/pprof/cmdline.")
	fs.IntVar(&c.NodePID, "node-pid", c.NodePID, "Process id of the node; when /proc/<pid> is visible (a shared process namespace), its command line, BYDB_* environment and runtime facts are read there. 0 disables.")
	fs.StringVar(&c.NodeCmdline, "node-cmdline", c.NodeCmdline, "The node's command line, shell-like with the program name first (e.g. \"banyand data --grpc-port=17912\"); overrides --node-pprof-addr and --node-pid as the source of the startup parameters.")
	fs.StringVar(&c.NodeCgroupRoot, "node-cgroup-root", c.NodeCgroupRoot, "Mount point of cgroup v2, where the node's CPU and memory limits are read (with --node-pid).")
	fs.DurationVar(&c.NodeConfigTimeout, "node-config-timeout", c.NodeConfigTimeout, "Time allowed for one collection of the node's configuration; what is read by then is reported. Keep it below the proxy's collection timeout.")
	c.Security.RegisterFlags(fs)
	c.Parity.registerFlags(fs)
}

// Validate reports every invalid setting at once, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.ProxyAddr); err != nil {
		add("--proxy-addr %q must be host:port: %w", c.ProxyAddr, err)
	}
	if err := c.Security.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NodeRole != "" {
		if _, err := roles.Parse(c.NodeRole); err != nil {
			add("--node-role: %w", err)
		}
	} else if c.NodeGRPCAddr == "" {
		add("--node-role is required unless --node-grpc-addr names the node to discover it from")
	}
	if c.NodeIP != "" && (c.NodePort < 1 || c.NodePort > 65535) {
		add("--node-port (%d) must be in 1..65535", c.NodePort)
	}
	for k := range c.NodeLabels {
		if k == "" {
			add("--node-labels has an empty key")
		}
	}
	if _, err := c.secondaries(); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.PodName) == "" {
		add("--pod-name must not be empty (the upstream proxy rejects agents without one)")
	}
	targets, err := c.targets()
	if err != nil {
		errs = append(errs, err)
	} else if len(c.ContainerNames) > 0 && len(c.ContainerNames) != len(targets) {
		add("--container-names has %d names for %d scrape targets; give one per target", len(c.ContainerNames), len(targets))
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--heartbeat-interval", c.HeartbeatInterval},
		{"--reconnect-interval", c.ReconnectInterval},
		{"--reconnect-max-interval", c.ReconnectMaxInterval},
		{"--scrape-interval", c.ScrapeInterval},
		{"--scrape-timeout", c.ScrapeTimeout},
		{"--node-discovery-interval", c.DiscoveryInterval},
		{"--shutdown-grace", c.ShutdownGrace},
		{"--node-config-timeout", c.NodeConfigTimeout},
	} {
		if d.v <= 0 {
			add("%s (%s) must be positive", d.flag, d.v)
		}
	}
	if c.ReconnectMaxInterval > 0 && c.ReconnectMaxInterval < c.ReconnectInterval {
		add("--reconnect-max-interval (%s) must be at least --reconnect-interval (%s)", c.ReconnectMaxInterval, c.ReconnectInterval)
	}
	if c.ScrapeTimeout > c.ScrapeInterval && c.ScrapeInterval > 0 {
		add("--scrape-timeout (%s) must not exceed --scrape-interval (%s)", c.ScrapeTimeout, c.ScrapeInterval)
	}
	if c.ScrapeMaxBodyBytes < 1 {
		add("%s (%d) must be positive", scrape.FlagMaxBodyBytes, c.ScrapeMaxBodyBytes)
	}
	if c.ScrapeSampleLimit < 1 {
		add("%s (%d) must be positive", scrape.FlagMaxSamples, c.ScrapeSampleLimit)
	}
	if c.RecorderMemoryBytes < 1<<20 {
		add("--recorder-memory-bytes (%d) must be at least 1048576", c.RecorderMemoryBytes)
	}
	if c.NodeGRPCAddr != "" {
		if _, _, err := net.SplitHostPort(c.NodeGRPCAddr); err != nil {
			add("--node-grpc-addr %q must be host:port: %w", c.NodeGRPCAddr, err)
		}
	}
	if c.NodePprofAddr != "" {
		if _, err := c.pprofURL(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NodePID < 0 {
		add("--node-pid (%d) must not be negative", c.NodePID)
	}
	if c.NodeCmdline != "" {
		// The line may hold secrets: name the problem, never the line.
		argv, err := nodeconfig.SplitShell(c.NodeCmdline)
		switch {
		case err != nil:
			add("--node-cmdline: %w", err)
		case len(argv) == 0:
			add("--node-cmdline has no words")
		case strings.HasPrefix(argv[0], "-"):
			add("--node-cmdline must start with the program name, not a flag")
		}
	}
	if c.NodeCgroupRoot == "" || !filepath.IsAbs(c.NodeCgroupRoot) {
		add("--node-cgroup-root %q must be an absolute path", c.NodeCgroupRoot)
	}
	errs = append(errs, c.Parity.validate()...)
	return errors.Join(errs...)
}

// pprofURL returns the node's /debug/pprof/cmdline URL from
// --node-pprof-addr; an empty host is the loopback address.
func (c *Config) pprofURL() (string, error) {
	host, port, err := net.SplitHostPort(c.NodePprofAddr)
	if err != nil {
		return "", fmt.Errorf("--node-pprof-addr %q must be host:port: %w", c.NodePprofAddr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("--node-pprof-addr %q: port must be in 1..65535", c.NodePprofAddr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/debug/pprof/cmdline"}
	return u.String(), nil
}

// targets returns the scrape targets in flag order, named by
// --container-names when given.
func (c *Config) targets() ([]scrape.Target, error) {
	var (
		out  []scrape.Target
		errs []error
	)
	for _, raw := range c.ScrapeTargets {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--scrape-target %q must be an http or https URL", raw))
			continue
		}
		out = append(out, scrape.Target{URL: raw})
	}
	ports := c.PollMetricsPorts
	if len(c.ScrapeTargets) == 0 && len(ports) == 0 {
		ports = []int{defaultPollPort}
	}
	for _, p := range ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("--poll-metrics-ports: port %d must be in 1..65535", p))
			continue
		}
		out = append(out, scrape.Target{URL: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) + "/metrics"})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(c.ContainerNames) == len(out) {
		for i := range out {
			out[i].Name = c.ContainerNames[i]
		}
	}
	return out, nil
}

// secondaries parses --secondary-address.
func (c *Config) secondaries() (map[string]uplink.Address, error) {
	var errs []error
	out := make(map[string]uplink.Address, len(c.SecondaryAddresses))
	for _, s := range c.SecondaryAddresses {
		name, addr, ok := strings.Cut(s, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			errs = append(errs, fmt.Errorf("--secondary-address %q must be name=ip:port", s))
			continue
		}
		a, err := uplink.ParseAddress(strings.TrimSpace(addr))
		if err != nil {
			errs = append(errs, fmt.Errorf("--secondary-address %q: %w", s, err))
			continue
		}
		if _, dup := out[name]; dup {
			errs = append(errs, fmt.Errorf("--secondary-address names %q twice", name))
			continue
		}
		out[name] = a
	}
	return out, errors.Join(errs...)
}

// baseIdentity is the identity the flags give, before any discovery.
// Validate must have passed.
func (c *Config) baseIdentity() uplink.Identity {
	id := uplink.Identity{
		Labels:         maps.Clone(c.NodeLabels),
		PodName:        strings.TrimSpace(c.PodName),
		ContainerNames: slices.Clone(c.ContainerNames),
	}
	if c.NodeRole != "" {
		id.Role, _ = roles.FromRegistration(c.NodeRole, c.NodeLabels)
	}
	if c.NodeIP != "" {
		id.Primary = uplink.Address{IP: c.NodeIP, Port: c.NodePort}
	}
	if sec, _ := c.secondaries(); len(sec) > 0 {
		id.Secondary = sec
	}
	return id
}
