// Package demo runs a self-contained FODC cluster in one process: a proxy
// and real agents (internal/agent) of a liaison and hot and warm data nodes,
// each scraping its own synthetic BanyanDB-like endpoint (internal/demo/synth)
// every two seconds, so that every endpoint of the proxy shows real data at
// once and /metrics-windows fills with history.
//
// Each synthetic node also serves a realistic BanyanDB command line at
// /debug/pprof/cmdline, which its agent reports as the node's
// configuration. One hot data node runs with a deliberately different
// --measure-flush-timeout, so that /cluster/config/consistency has a real
// difference to show; every other difference between the nodes is per-pod
// (hosts, ports, paths) and left out by the proxy's default ignore list.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fodc-go/fodc/internal/agent"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/roles"
)

// Options configures the demo.
type Options struct {
	GRPCListenAddr string
	HTTPListenAddr string
	// ScrapeInterval is the agents' scrape interval (default 2s).
	ScrapeInterval time.Duration
	Logger         *slog.Logger
	// Out receives the human-readable instructions.
	Out io.Writer
	// Ready, if set, is called with the proxy's HTTP address once every
	// agent has scraped once and the proxy holds its metrics stream.
	Ready func(httpAddr string)
	// CrashAfter is when CrashPod writes its crash artifact, counted from
	// the start (default 5s).
	CrashAfter time.Duration
	// PressureAfter is when PressurePod's resident memory crosses its
	// agent's threshold (default 8s).
	PressureAfter time.Duration

	// tempDir, when set, is told the temporary root (tests check that it
	// is removed on exit).
	tempDir func(root string)
}

// CrashPod writes a crash artifact CrashAfter the start; PressurePod's
// memory crosses its threshold PressureAfter the start and its agent
// captures a pressure profile of the demo process.
const (
	CrashPod    = "demo-data-warm-0"
	PressurePod = "demo-data-hot-0"
	// memoryLimit is every synthetic node's container memory limit: the
	// nodes use about 45% of it, PressurePod 85% under pressure, above the
	// agents' default trigger of 75%.
	memoryLimit = 2 << 30
)

// member is one node of the demo cluster.
type member struct {
	pod, role, container string
	// port is the node's declared gRPC port; http, gossip and schema
	// follow it. Nothing listens there: the addresses only show up in
	// /cluster.
	port int
	// flags override the node's command line (synth.ArgsOptions).
	flags []string
}

// MisconfiguredPod runs with MisconfiguredFlag set differently from the
// other hot data node: the difference the consistency report shows.
const (
	MisconfiguredPod  = "demo-data-hot-1"
	MisconfiguredFlag = "measure-flush-timeout"
)

var members = []member{
	{pod: "demo-liaison-0", role: "liaison", container: "liaison", port: 17912},
	{pod: "demo-data-hot-0", role: "datanode-hot", container: "data", port: 18912},
	{pod: MisconfiguredPod, role: "datanode-hot", container: "data", port: 19912, flags: []string{"--" + MisconfiguredFlag + "=5s"}},
	{pod: "demo-data-warm-0", role: "datanode-warm", container: "data", port: 20912},
}

// FailingPod is the data node whose queue traffic fails more often: the
// request pipeline of /cluster/graph shows its edges in error.
const (
	FailingPod        = MisconfiguredPod
	failingErrorRatio = 0.2
	normalErrorRatio  = 0.002
)

// wireQueues gives the synthetic nodes the queue traffic of the demo's
// topology: the liaison publishes writes and queries to every data node,
// the hot data nodes synchronise files to the warm one, and every receiver
// counts what it receives.
func wireQueues(nodes []synth.Node) {
	peer := func(n synth.Node, ratio float64, ops ...string) synth.Peer {
		return synth.Peer{Pod: n.Pod, Role: n.Role, Operations: ops, ErrorRatio: ratio}
	}
	ratioOf := func(pod string) float64 {
		if pod == FailingPod {
			return failingErrorRatio
		}
		return normalErrorRatio
	}
	for i := range nodes {
		for j := range nodes {
			from, to := &nodes[i], &nodes[j]
			switch {
			case from.Role.Kind == roles.KindLiaison && to.Role.Kind == roles.KindData:
				from.Publishes = append(from.Publishes, peer(*to, ratioOf(to.Pod), "write", "query"))
				to.Subscribes = append(to.Subscribes, peer(*from, ratioOf(to.Pod), "write", "query"))
			case from.Role.Kind == roles.KindData && from.Role.Tier == "hot" && to.Role.Kind == roles.KindData && to.Role.Tier == "warm":
				from.Publishes = append(from.Publishes, peer(*to, normalErrorRatio, "file_sync"))
				to.Subscribes = append(to.Subscribes, peer(*from, normalErrorRatio, "file_sync"))
			}
		}
	}
}

// readyPoll is how often readiness is re-checked while the demo starts.
const readyPoll = 20 * time.Millisecond

// Run starts the proxy, the synthetic endpoints and the agents, and serves
// until ctx is cancelled; it then stops everything and returns nil, or the
// error that stopped a component.
func Run(ctx context.Context, opts Options) error {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	interval := opts.ScrapeInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	crashAfter, pressureAfter := opts.CrashAfter, opts.PressureAfter
	if crashAfter <= 0 {
		crashAfter = 5 * time.Second
	}
	if pressureAfter <= 0 {
		pressureAfter = 8 * time.Second
	}
	// The nodes' lifecycle reports, crash artifacts and the agents'
	// pressure captures live under one temporary root, removed on exit
	// (after every agent has stopped: g.Run has returned by then).
	root, err := os.MkdirTemp("", "fodc-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if opts.tempDir != nil {
		opts.tempDir(root)
	}

	cfg := proxy.DefaultConfig()
	cfg.GRPCListenAddr = opts.GRPCListenAddr
	cfg.HTTPListenAddr = opts.HTTPListenAddr
	cfg.HeartbeatInterval = 2 * time.Second
	cfg.AgentHeartbeatTimeout = 10 * time.Second
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(cfg, logger, reg, reg)
	if err != nil {
		return err
	}
	// Actors are interrupted in the order they were added: the agents go
	// first, so they do not see the proxy go away and try to reconnect.
	var g, proxyActors run.Group
	p.AddActors(&proxyActors)

	// Every node has its own synthetic endpoint, like a pod: its metrics
	// and its pprof listener (the command line, and the demo process's
	// own profiles). The liaison also answers InspectAll on its internal
	// port.
	var lis []net.Listener
	closeAll := func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}
	lifecycleLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return errors.Join(fmt.Errorf("listen for the liaison's internal port: %w", err), runNow(&proxyActors))
	}
	lis = append(lis, lifecycleLis)
	lifecyclePort := lifecycleLis.Addr().(*net.TCPAddr).Port
	nodes := make([]synth.Node, len(members))
	dirs := make([]nodeDirs, len(members))
	nodeLis := make([]net.Listener, len(members))
	for i, m := range members {
		if dirs[i], err = makeNodeDirs(root, m.pod); err == nil {
			err = writeLifecycleReports(dirs[i].lifecycle, m.pod, time.Now())
		}
		if err != nil {
			closeAll()
			return errors.Join(errPrefix(m.pod, "lifecycle reports", err), runNow(&proxyActors))
		}
		role, err := roles.Parse(m.role)
		if err != nil {
			closeAll()
			return errors.Join(err, runNow(&proxyActors))
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll()
			return errors.Join(fmt.Errorf("listen for the synthetic endpoint of %s: %w", m.pod, err), runNow(&proxyActors))
		}
		lis = append(lis, l)
		nodeLis[i] = l
		nodes[i] = synth.Node{Pod: m.pod, Role: role, Seed: uint64(i + 1), Pprof: true, MemoryLimit: memoryLimit}
		if m.pod == PressurePod {
			nodes[i].PressureAfter = pressureAfter
		}
		nodes[i].Args = synth.BanyandArgs(nodes[i], synth.ArgsOptions{
			Host:      podHost(m.pod),
			GRPCPort:  m.port,
			PprofAddr: l.Addr().String(),
			Overrides: m.flags,
		})
	}
	wireQueues(nodes)
	agents := make([]*agent.Agent, 0, len(members))
	for i, m := range members {
		lport := 0
		if nodes[i].Role.Kind == roles.KindLiaison {
			lport = lifecyclePort
		}
		a, err := agent.New(agentConfig(m, p.GRPCAddr(), nodeLis[i].Addr().String(), interval, dirs[i], lport),
			logger.With("pod_name", m.pod), prometheus.NewRegistry(), nil)
		if err != nil {
			for _, prev := range agents {
				_ = prev.Close()
			}
			closeAll()
			return errors.Join(fmt.Errorf("agent %s: %w", m.pod, err), runNow(&proxyActors))
		}
		a.AddActors(&g)
		agents = append(agents, a)
	}
	for i, l := range nodeLis {
		srv := &http.Server{Handler: synth.NodeHandler(nodes[i], nil), ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) { _ = srv.Close() })
	}
	lifecycleSrv := newLifecycleGRPC()
	g.Add(func() error { return lifecycleSrv.Serve(lifecycleLis) }, func(error) { lifecycleSrv.Stop() })
	crashDir := ""
	for i, m := range members {
		if m.pod == CrashPod {
			crashDir = dirs[i].crash
		}
	}
	crashStop := make(chan struct{})
	g.Add(func() error {
		t := time.NewTimer(crashAfter)
		defer t.Stop()
		select {
		case <-crashStop:
			return nil
		case at := <-t.C:
			if err := writeCrashArtifact(crashDir, CrashPod, at); err != nil {
				logger.Warn("Demo crash artifact not written", "err", errPrefix(CrashPod, "crash artifact", err))
			}
		}
		<-crashStop
		return nil
	}, func(error) { close(crashStop) })
	p.AddActors(&g)
	started := time.Now().UTC().Truncate(time.Second)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.Add(func() error { <-runCtx.Done(); return nil }, func(error) { cancel() })
	done := make(chan error, 1)
	go func() { done <- g.Run() }()

	if err := waitReady(runCtx, p, agents); err != nil {
		cancel()
		return errors.Join(ignoreCanceled(err), <-done)
	}
	base := "http://" + p.HTTPAddr()
	fmt.Fprintf(out, `FODC demo: a proxy and %d agents (a liaison, two hot and one warm data node),
each scraping a synthetic BanyanDB endpoint every %s.

  agents dial   %s (gRPC)
  try           curl -s %s/metrics
                curl -s '%s/metrics?role=datanode-hot'
                curl -s '%s/metrics-windows?pod_name=demo-data-warm-0&start_time=%s'
                curl -s %s/cluster
                curl -s %s/health
                curl -s %s/cluster/config
                curl -s %s/cluster/config/consistency
                curl -s %s/cluster/lifecycle
                curl -s %s/diagnostics
                curl -s %s/pressure-profiles
                curl -s -X POST '%s/profiling?type=cpu&seconds=5&pod_name=demo-data-hot-0'
                curl -s %s/profiling

%s runs with a different --%s than the other hot data node;
the consistency report names it. %s writes a crash artifact %s after the
start; %s's memory crosses its threshold %s after the start, and its agent
captures a pressure profile (heap and goroutine profiles of this process).
The nodes' pprof listeners serve this process's profiles, so on-demand
profiles work too; download one with curl -sOJ %s/profiling/<profile_id>.

Press Ctrl-C to stop.
`, len(agents), interval, p.GRPCAddr(), base, base, base, started.Format(time.RFC3339), base, base, base, base,
		base, base, base, base, base,
		MisconfiguredPod, MisconfiguredFlag, CrashPod, crashAfter, PressurePod, pressureAfter, base)
	if opts.Ready != nil {
		opts.Ready(p.HTTPAddr())
	}
	return <-done
}

// podHost returns the DNS name a StatefulSet pod gets from its headless
// service: demo-data-hot-0.demo-data-hot.default.svc.cluster.local.
func podHost(pod string) string {
	set := pod
	if i := strings.LastIndexByte(pod, '-'); i > 0 {
		set = pod[:i]
	}
	return pod + "." + set + ".default.svc.cluster.local"
}

// agentConfig configures the agent of m, whose synthetic node serves at
// nodeAddr.
// dirs are its node's directories and lifecyclePort, when not 0, the port
// answering InspectAll.
func agentConfig(m member, proxyAddr, nodeAddr string, interval time.Duration, dirs nodeDirs, lifecyclePort int) agent.Config {
	c := agent.DefaultConfig()
	c.ProxyAddr = proxyAddr
	c.NodeRole = m.role
	c.PodName = m.pod
	c.ContainerNames = []string{m.container}
	c.ScrapeTargets = []string{"http://" + nodeAddr + synth.Path(m.pod)}
	c.NodePprofAddr = nodeAddr
	c.ScrapeInterval = interval
	c.ScrapeTimeout = interval
	c.HeartbeatInterval = 2 * time.Second
	c.ReconnectInterval = 500 * time.Millisecond
	c.ReconnectMaxInterval = 5 * time.Second
	c.RecorderMemoryBytes = 16 << 20
	c.HTTPListenAddr = ""
	// The synthetic nodes have no schema registry. Lifecycle answers
	// with the report files (and the liaison with InspectAll), crashes
	// are picked up from the node's artifact root, and pressure profiles
	// are captured from its pprof listener.
	c.Parity.SchemaRegistryPort = 0
	c.Parity.LifecycleReportDir = dirs.lifecycle
	c.Parity.LifecyclePort = lifecyclePort
	c.Parity.CrashSourceDir = dirs.crash
	c.Parity.PressureEnabled = true
	c.Parity.PressureDir = dirs.pressure
	if _, port, err := net.SplitHostPort(nodeAddr); err == nil {
		c.Parity.PressurePprofPort, _ = strconv.Atoi(port)
	}
	c.NodeIP = "127.0.0.1"
	c.NodePort = m.port
	c.SecondaryAddresses = []string{
		"http=127.0.0.1:" + strconv.Itoa(m.port+1),
		"gossip=127.0.0.1:" + strconv.Itoa(m.port+20),
		"schema=127.0.0.1:" + strconv.Itoa(m.port+30),
	}
	return c
}

// waitReady waits until every agent has scraped once and registered, and
// the proxy holds each one's metrics, topology and configuration streams.
func waitReady(ctx context.Context, p *proxy.Proxy, agents []*agent.Agent) error {
	for _, a := range agents {
		if err := a.WaitReady(ctx); err != nil {
			return err
		}
	}
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		all := true
		for _, a := range agents {
			id := a.Uplink.Status().AgentID
			if id == "" || !p.Streams.Has(id, protocol.KindMetrics) || !p.Streams.Has(id, protocol.KindTopology) ||
				!p.Streams.Has(id, protocol.KindNodeConfig) {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// runNow runs g with an already interrupted context so that its actors
// release what New opened (listeners), and returns its error.
func runNow(g *run.Group) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) {})
	return g.Run()
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
