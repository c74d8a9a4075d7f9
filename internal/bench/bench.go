// Package bench is the logic of fodc-bench, the FODC proxy load tool. It
// simulates many upstream agents in one process, speaking the real
// protocol against any FODC proxy's gRPC address (Simulator), drives
// concurrent scrapers of /metrics and /metrics-windows, and reports
// latency percentiles, throughput, response sizes, errors and partial
// answers, plus the proxy process's peak RSS and CPU time read from /proc.
//
// Run is the whole tool; cmd/fodc-bench only parses flags into a Config
// and prints the Report.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fodc-go/fodc/internal/timeutil"

	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/protocol"
)

// Config is everything fodc-bench can be told.
type Config struct {
	// Target.
	ProxyAddr  string
	HTTPAddr   string
	ProxyPID   int
	SpawnProxy string
	ProxyArgs  []string
	ProxyLog   string

	// Agents.
	Agents            int
	Shape             Shape
	Version           string
	ReplyLatency      time.Duration
	ReplyJitter       time.Duration
	HungFraction      float64
	FlapFraction      float64
	FlapPeriod        time.Duration
	HistoryDepth      int
	HistoryStep       time.Duration
	AgentsPerConn     int
	ConnectRate       int
	ConnectTimeout    time.Duration
	HeartbeatInterval time.Duration

	// Scrapers.
	Scrapers      int
	Scrapes       int
	Duration      time.Duration
	Interval      time.Duration
	Stagger       bool
	Endpoints     []string
	Query         string
	ScrapeTimeout time.Duration
	// Gzip asks for gzip-compressed answers, as Prometheus does; answers
	// are counted once decompressed.
	Gzip   bool
	Warmup int
	Settle time.Duration

	JSON bool
}

// DefaultConfig returns the defaults of the flags.
func DefaultConfig() Config {
	return Config{
		ProxyAddr: "127.0.0.1:17900",
		HTTPAddr:  "127.0.0.1:17901",
		Agents:    10,
		Shape: Shape{
			Series: 1000, Families: 50, Labels: 4, Cardinality: 10,
			HistogramShare: 0.2, Buckets: 10, NodeType: "hot",
		},
		Version:        protocol.ReleaseHEAD.String(),
		FlapPeriod:     30 * time.Second,
		HistoryDepth:   30,
		HistoryStep:    10 * time.Second,
		AgentsPerConn:  8,
		ConnectTimeout: 2 * time.Minute,
		Scrapers:       1,
		Scrapes:        10,
		Endpoints:      []string{EndpointMetrics},
		ScrapeTimeout:  10 * time.Second,
	}
}

// RegisterFlags binds the configuration to fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ProxyAddr, "proxy-addr", c.ProxyAddr, "The proxy's agent-facing gRPC address, host:port.")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "The proxy's HTTP address, host:port or a URL.")
	fs.IntVar(&c.ProxyPID, "proxy-pid", c.ProxyPID, "Pid of the proxy process, to report its peak RSS and CPU time from /proc (0: not measured).")
	fs.StringVar(&c.SpawnProxy, "spawn-proxy", c.SpawnProxy, "Path of a proxy binary to start on free loopback ports and measure; overrides --proxy-addr, --http-addr and --proxy-pid.")
	fs.StringArrayVar(&c.ProxyArgs, "proxy-arg", c.ProxyArgs, "Extra argument for the spawned proxy (repeatable), like --proxy-arg=--max-agents=20000.")
	fs.StringVar(&c.ProxyLog, "proxy-log", c.ProxyLog, "File that receives the spawned proxy's output (default: discarded).")

	fs.IntVar(&c.Agents, "agents", c.Agents, "Number of simulated agents.")
	fs.IntVar(&c.Shape.Series, "series", c.Shape.Series, "Series per agent.")
	fs.IntVar(&c.Shape.Families, "families", c.Shape.Families, "Metric families the series of an agent are spread over.")
	fs.IntVar(&c.Shape.Labels, "labels", c.Shape.Labels, "Extra labels per series, besides node_role, pod_name, container_name and node_type.")
	fs.IntVar(&c.Shape.Cardinality, "label-cardinality", c.Shape.Cardinality, "Distinct values of each extra label.")
	fs.Float64Var(&c.Shape.HistogramShare, "histogram-share", c.Shape.HistogramShare, "Fraction of the families that are histograms.")
	fs.IntVar(&c.Shape.Buckets, "buckets", c.Shape.Buckets, "Buckets per histogram, +Inf included.")
	fs.StringVar(&c.Shape.NodeType, "node-type", c.Shape.NodeType, "The node label type the agents register with (empty: none).")
	fs.StringVar(&c.Version, "agent-version", c.Version, "Upstream agent release to imitate: head (7 streams), v0.10.3 (4) or v0.10.0 (3, untyped metrics).")
	fs.DurationVar(&c.ReplyLatency, "reply-latency", c.ReplyLatency, "Delay before every metrics reply.")
	fs.DurationVar(&c.ReplyJitter, "reply-jitter", c.ReplyJitter, "Random extra delay of up to this much per metrics reply.")
	fs.Float64Var(&c.HungFraction, "hung-fraction", c.HungFraction, "Fraction of agents that never answer metrics commands.")
	fs.Float64Var(&c.FlapFraction, "flap-fraction", c.FlapFraction, "Fraction of agents that reconnect (new agent id) every --flap-period.")
	fs.DurationVar(&c.FlapPeriod, "flap-period", c.FlapPeriod, "Mean time between the reconnects of a flapping agent.")
	fs.IntVar(&c.HistoryDepth, "history-depth", c.HistoryDepth, "Points per series in a window reply (/metrics-windows).")
	fs.DurationVar(&c.HistoryStep, "history-step", c.HistoryStep, "Spacing of the points of a window reply.")
	fs.IntVar(&c.AgentsPerConn, "agents-per-conn", c.AgentsPerConn, "Agents sharing one gRPC connection (an agent opens up to 7 streams; our proxy allows 64 per connection).")
	fs.IntVar(&c.ConnectRate, "connect-rate", c.ConnectRate, "Most new agents started per second (0: all at once).")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "How long to wait for every agent to register.")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "Agents' own heartbeat interval, used when the proxy sends none (0: 10s).")

	fs.IntVar(&c.Scrapers, "scrapers", c.Scrapers, "Concurrent scrapers (0: no scrapes, measure idle agents for --duration).")
	fs.IntVar(&c.Scrapes, "scrapes", c.Scrapes, "Scrapes in all (0: as many as fit in --duration).")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "Stop starting scrapes after this long (0: --scrapes decides).")
	fs.DurationVar(&c.Interval, "interval", c.Interval, "Each scraper starts a scrape every interval like Prometheus (0: back to back).")
	fs.BoolVar(&c.Stagger, "stagger", c.Stagger, "With --interval, offset the scrapers evenly instead of firing together.")
	fs.StringSliceVar(&c.Endpoints, "endpoint", c.Endpoints, "Endpoints to scrape in turn: metrics, metrics-windows (comma-separated or repeated).")
	fs.StringVar(&c.Query, "query", c.Query, "Query string added to every scrape, like role=ROLE_DATA.")
	fs.DurationVar(&c.ScrapeTimeout, "scrape-timeout", c.ScrapeTimeout, "Timeout of one scrape, also sent as X-Prometheus-Scrape-Timeout-Seconds.")
	fs.BoolVar(&c.Gzip, "gzip", c.Gzip, "Ask for gzip-compressed answers, as Prometheus does (bytes/scrape then counts the answer decompressed).")
	fs.IntVar(&c.Warmup, "warmup", c.Warmup, "Unmeasured scrapes before the measurement.")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "Wait after every agent registered, before measuring.")
	fs.BoolVar(&c.JSON, "json", c.JSON, "Print the report as JSON.")
}

// Validate reports every invalid setting at once, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	if c.SpawnProxy == "" && (c.ProxyAddr == "" || c.HTTPAddr == "") {
		errs = append(errs, errors.New("--proxy-addr and --http-addr must be set unless --spawn-proxy is"))
	}
	if c.Agents < 0 || c.Agents >= 1_000_000 {
		errs = append(errs, fmt.Errorf("--agents (%d) must be within [0, 999999]", c.Agents))
	}
	if err := c.Shape.validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := protocol.ParseRelease(c.Version); err != nil {
		errs = append(errs, fmt.Errorf("--agent-version: %w", err))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"--hung-fraction", c.HungFraction}, {"--flap-fraction", c.FlapFraction}} {
		if f.v < 0 || f.v > 1 {
			errs = append(errs, fmt.Errorf("%s (%g) must be within [0, 1]", f.name, f.v))
		}
	}
	if c.HistoryDepth < 0 || c.HistoryStep <= 0 {
		errs = append(errs, fmt.Errorf("--history-depth (%d) must not be negative and --history-step (%s) must be positive", c.HistoryDepth, c.HistoryStep))
	}
	if c.Scrapers < 0 {
		errs = append(errs, fmt.Errorf("--scrapers (%d) must not be negative", c.Scrapers))
	}
	if c.Scrapes < 0 || c.Duration < 0 {
		errs = append(errs, errors.New("--scrapes and --duration must not be negative"))
	}
	if c.Scrapers > 0 && c.Scrapes == 0 && c.Duration == 0 {
		errs = append(errs, errors.New("set --scrapes or --duration"))
	}
	if c.Scrapers == 0 && c.Duration == 0 {
		errs = append(errs, errors.New("--scrapers=0 measures idle agents: set --duration"))
	}
	if len(c.Endpoints) == 0 {
		errs = append(errs, errors.New("--endpoint must name at least one endpoint"))
	}
	for _, ep := range c.Endpoints {
		if ep != EndpointMetrics && ep != EndpointMetricsWindows {
			errs = append(errs, fmt.Errorf("--endpoint %q: want %s or %s", ep, EndpointMetrics, EndpointMetricsWindows))
		}
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--connect-timeout (%s) must be positive", c.ConnectTimeout))
	}
	return errors.Join(errs...)
}

// baseURL turns --http-addr into a URL without a trailing slash.
func baseURL(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

// Run builds the payloads, starts the agents against the proxy (spawning
// it first with --spawn-proxy), waits until all of them are registered,
// measures the scrapes, stops the agents and returns the report.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	proxyOut := io.Discard
	if cfg.SpawnProxy != "" && cfg.ProxyLog != "" {
		f, err := os.Create(cfg.ProxyLog)
		if err != nil {
			return nil, fmt.Errorf("create --proxy-log: %w", err)
		}
		defer func() { _ = f.Close() }()
		proxyOut = f
	}
	release, err := protocol.ParseRelease(cfg.Version)
	if err != nil {
		return nil, fmt.Errorf("--agent-version: %w", err)
	}
	cfg.Shape.Typed = release.Typed()
	rep := &Report{Config: summarize(cfg)}

	if cfg.SpawnProxy != "" {
		sp, err := spawnProxy(ctx, cfg.SpawnProxy, cfg.ProxyArgs, proxyOut, 30*time.Second)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := sp.stop(30 * time.Second); err != nil {
				logger.Warn("Stopping spawned proxy", "err", err)
			}
		}()
		cfg.ProxyAddr, cfg.HTTPAddr, cfg.ProxyPID = sp.grpcAddr, sp.httpAddr, sp.pid()
		rep.Spawned = true
	}
	rep.ProxyAddr, rep.HTTPURL = cfg.ProxyAddr, baseURL(cfg.HTTPAddr)
	var pr *ProxyReport
	if cfg.ProxyPID > 0 {
		s, err := readProc(cfg.ProxyPID)
		if err != nil {
			return nil, fmt.Errorf("--proxy-pid %d: %w", cfg.ProxyPID, err)
		}
		pr = &ProxyReport{PID: cfg.ProxyPID, RSSBeforeAgents: s.RSS}
		rep.Proxy = pr
	}

	t0 := time.Now()
	payloads, err := NewPayloads(cfg.Shape, cfg.HistoryDepth, cfg.HistoryStep, time.Now())
	if err != nil {
		return nil, err
	}
	rep.ReplyBytes = payloads.LatestSize()
	sim, err := NewSimulator(SimConfig{
		ProxyAddr:         cfg.ProxyAddr,
		Agents:            cfg.Agents,
		AgentsPerConn:     cfg.AgentsPerConn,
		Release:           release,
		Shape:             cfg.Shape,
		Payloads:          payloads,
		ReplyLatency:      cfg.ReplyLatency,
		ReplyJitter:       cfg.ReplyJitter,
		HungFraction:      cfg.HungFraction,
		FlapFraction:      cfg.FlapFraction,
		FlapPeriod:        cfg.FlapPeriod,
		HeartbeatInterval: cfg.HeartbeatInterval,
		ConnectRate:       cfg.ConnectRate,
		Logger:            logger,
	})
	if err != nil {
		return nil, err
	}
	rep.Connections = len(sim.conns)
	rep.PrepareSeconds = time.Since(t0).Seconds()

	simCtx, stopSim := context.WithCancel(ctx)
	var simWG sync.WaitGroup
	simWG.Go(func() { _ = sim.Run(simCtx) })
	defer func() {
		stopSim()
		simWG.Wait()
	}()

	t1 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	err = sim.WaitEstablished(wctx, cfg.Agents)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("agents did not register within --connect-timeout: %w", err)
	}
	rep.ConnectSeconds = time.Since(t1).Seconds()
	logger.Info("Agents registered", "agents", cfg.Agents, "seconds", rep.ConnectSeconds)

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: max(cfg.Scrapers, 1),
		// The transport asks for gzip and decompresses when enabled.
		DisableCompression: !cfg.Gzip,
	}}
	defer client.CloseIdleConnections()
	scfg := ScrapeConfig{
		BaseURL:     rep.HTTPURL,
		Endpoints:   cfg.Endpoints,
		Query:       cfg.Query,
		WindowSpan:  time.Duration(max(cfg.HistoryDepth, 1)) * cfg.HistoryStep,
		Concurrency: cfg.Scrapers,
		Count:       cfg.Scrapes,
		Duration:    cfg.Duration,
		Interval:    cfg.Interval,
		Stagger:     cfg.Stagger,
		Timeout:     cfg.ScrapeTimeout,
	}
	if cfg.Scrapers > 0 {
		want := cfg.Agents - hungAgents(cfg.Agents, cfg.HungFraction)
		if err := waitComplete(ctx, scfg, client, want, cfg.ConnectTimeout); err != nil {
			logger.Warn("Proxy does not report every agent yet", "err", err)
		}
		for range cfg.Warmup {
			scrapeOnce(ctx, scfg, client, cfg.Endpoints[0])
		}
	}
	if cfg.Settle > 0 && !timeutil.Sleep(ctx, cfg.Settle) {
		return nil, ctx.Err()
	}

	var before procSample
	var mon *rssMonitor
	if pr != nil {
		if before, err = readProc(cfg.ProxyPID); err != nil {
			return nil, err
		}
		pr.RSSIdle = before.RSS
		if cfg.Agents > 0 {
			pr.RSSPerAgent = float64(pr.RSSIdle-pr.RSSBeforeAgents) / float64(cfg.Agents)
		}
		pr.PeakSource = "VmHWM"
		if err := resetPeak(cfg.ProxyPID); err != nil {
			pr.PeakSource = "sampled every 10ms"
			logger.Debug("Cannot reset the proxy's VmHWM; sampling RSS", "err", err)
		}
		mon = startRSSMonitor(cfg.ProxyPID, 10*time.Millisecond)
	}
	hbBefore := sim.Stats().Heartbeats

	t2 := time.Now()
	var results []scrapeResult
	if cfg.Scrapers > 0 {
		results = scrape(ctx, scfg, client)
	} else if !timeutil.Sleep(ctx, cfg.Duration) {
		return nil, ctx.Err()
	}
	rep.MeasureSeconds = time.Since(t2).Seconds()

	if pr != nil {
		sampled := mon.stop()
		after, err := readProc(cfg.ProxyPID)
		if err != nil {
			return nil, err
		}
		pr.PeakRSS = sampled
		if pr.PeakSource == "VmHWM" {
			pr.PeakRSS = max(after.HWM, sampled)
		}
		pr.CPUSeconds = (after.CPU - before.CPU).Seconds()
		if rep.MeasureSeconds > 0 {
			pr.CPUCores = pr.CPUSeconds / rep.MeasureSeconds
		}
		if len(results) > 0 {
			pr.CPUSecondsPerScrape = pr.CPUSeconds / float64(len(results))
		}
	}
	rep.Agents = sim.Stats()
	rep.HeartbeatsMeasured = rep.Agents.Heartbeats - hbBefore
	expected := (cfg.Agents - hungAgents(cfg.Agents, cfg.HungFraction)) * cfg.Shape.Series
	rep.Endpoints = summarizeScrapes(results, cfg.Endpoints, expected, rep.MeasureSeconds)
	if pr != nil {
		for _, e := range rep.Endpoints {
			if e.BytesMax > 0 {
				pr.PeakRSSPerResponse = max(pr.PeakRSSPerResponse, float64(pr.PeakRSS)/float64(e.BytesMax))
			}
		}
	}
	return rep, nil
}

// hungAgents is the number of agents the simulator makes hang.
func hungAgents(agents int, fraction float64) int {
	n := every(fraction)
	if n == 0 {
		return 0
	}
	return agents / n
}

// waitComplete scrapes /metrics until the proxy reports that want agents
// answered (X-Fodc-Agents-Answered), so that the measurement does not
// start while the proxy still attaches streams. A proxy without the header
// is scraped once.
func waitComplete(ctx context.Context, cfg ScrapeConfig, client *http.Client, want int, budget time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	for {
		answered, err := probeAnswered(ctx, cfg, client)
		if err != nil || answered < 0 || answered >= want {
			return err
		}
		if !timeutil.Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("%d of %d agents answer: %w", answered, want, ctx.Err())
		}
	}
}

// probeAnswered returns the proxy's X-Fodc-Agents-Answered for a latest
// collection, or -1 when it sends none.
func probeAnswered(ctx context.Context, cfg ScrapeConfig, client *http.Client) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, requestURL(cfg, EndpointMetrics, time.Now()), nil)
	if err != nil {
		return 0, err
	}
	if cfg.Timeout > 0 {
		req.Header.Set(scrapeTimeoutHeader, strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	h := resp.Header.Get(headerAnswered)
	if h == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(h)
	if err != nil {
		return 0, fmt.Errorf("parse %s %q: %w", headerAnswered, h, err)
	}
	return n, nil
}
