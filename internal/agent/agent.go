// Package agent is the composition root of the FODC agent: the sidecar
// beside one BanyanDB node that scrapes the node's Prometheus endpoints into
// a memory-bounded flight recorder, serves its own /metrics, and answers the
// FODC proxy through the uplink, including reports of the node's
// configuration on the proxy's request (configsource, nodeconfig). It
// learns the node's identity through discovery. It only wires: it builds
// every component from a Config and exposes the long-running parts as
// run.Group actors.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/fodc-go/fodc/internal/agent/configsource"
	"github.com/fodc-go/fodc/internal/agent/discovery"
	"github.com/fodc-go/fodc/internal/agent/ondemand"
	"github.com/fodc-go/fodc/internal/agent/recorder"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/agent/uplink"
)

// Agent is a wired, not yet running agent.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	targets []scrape.Target

	// Recorder holds the scraped samples.
	Recorder *recorder.Recorder
	// Uplink is the proxy client.
	Uplink *uplink.Client

	scraper *scrape.Scraper
	ids     *discovery.Source
	nodeCfg *configsource.Source
	disc    *discovery.Discoverer // nil without --node-grpc-addr

	httpLis net.Listener // nil when --http-listen-addr is empty
	httpSrv *http.Server

	par parity // the lifecycle, registry, crash and pressure parts

	scrapedOnce sync.Once
	scraped     chan struct{} // closed after the first scrape round
}

// Option changes how New wires the agent; the defaults suit production.
type Option func(*options)

type options struct {
	httpClient *http.Client
	uplinkDial []grpc.DialOption
	discDial   []grpc.DialOption
	after      func(time.Duration) <-chan time.Time
	params     map[string][]string
	nodeDial   []grpc.DialOption
}

// WithHTTPClient scrapes the targets with c instead of a client of the
// agent's own.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithUplinkDialOptions adds gRPC dial options to the proxy connection.
func WithUplinkDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.uplinkDial = append(o.uplinkDial, opts...) }
}

// WithDiscoveryDialOptions adds gRPC dial options to the connection to the
// node named by --node-grpc-addr.
func WithDiscoveryDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.discDial = append(o.discDial, opts...) }
}

// WithReconnectWait replaces the uplink's wait between connection attempts
// (time.After); tests use it to observe the backoff without waiting.
func WithReconnectWait(after func(time.Duration) <-chan time.Time) Option {
	return func(o *options) { o.after = after }
}

// WithAgentParams sets the agent's own flags as reported to the proxy in the
// node configuration (see FlagParams); the default is cfg.Params(). Secrets
// among them are redacted before they leave the agent.
func WithAgentParams(params map[string][]string) Option {
	return func(o *options) { o.params = params }
}

// New validates cfg, builds every component and opens the HTTP listener
// (so that a ":0" address is resolved before Run). It starts no goroutines.
// reg receives the agent's own metrics; gatherer, usually the same
// registry, is served on /metrics. A nil logger discards, a nil reg
// registers nowhere.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, opts ...Option) (*Agent, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	targets, err := cfg.targets()
	if err != nil {
		return nil, err
	}
	secDial, err := cfg.Security.dialOptions()
	if err != nil {
		return nil, err
	}
	if cfg.Security.TokenFile != "" && !cfg.Security.enabled() {
		logger.Warn("The proxy token is sent in plaintext: set --proxy-tls (and --proxy-ca-file)")
	}
	o.uplinkDial = append(secDial, o.uplinkDial...)
	rec, err := recorder.New(recorder.Options{BudgetBytes: cfg.RecorderMemoryBytes, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("--recorder-memory-bytes: %w", err)
	}
	client := o.httpClient
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	a := &Agent{
		cfg:      cfg,
		logger:   logger,
		targets:  targets,
		Recorder: rec,
		scraper:  scrape.New(client, scrape.Limits{MaxBodyBytes: cfg.ScrapeMaxBodyBytes, MaxSamples: cfg.ScrapeSampleLimit}, nil, reg),
		ids:      discovery.NewSource(cfg.baseIdentity(), cfg.NodeRole != "", cfg.NodeGRPCAddr != ""),
		scraped:  make(chan struct{}),
	}
	if cfg.NodeGRPCAddr != "" {
		a.disc = &discovery.Discoverer{
			Addr:        cfg.NodeGRPCAddr,
			Interval:    cfg.DiscoveryInterval,
			Source:      a.ids,
			Logger:      logger.With("component", "discovery"),
			DialOptions: o.discDial,
		}
	}
	params := o.params
	if params == nil {
		params = cfg.Params()
	}
	a.nodeCfg = configsource.New(cfg.nodeConfigOptions(params), cfg.NodeConfigTimeout, logger.With("component", "nodeconfig"))
	if err := a.wireParity(&o); err != nil {
		return nil, err
	}
	uopts := uplink.Options{
		ProxyAddr:            cfg.ProxyAddr,
		Identity:             a.ids.Get,
		Source:               rec,
		NodeConfig:           a.nodeCfg.Get,
		Profiles:             (&ondemand.Profiler{Addr: cfg.NodePprofAddr}).Answer,
		HeartbeatInterval:    cfg.HeartbeatInterval,
		ReconnectInterval:    cfg.ReconnectInterval,
		ReconnectMaxInterval: cfg.ReconnectMaxInterval,
		DialOptions:          o.uplinkDial,
		After:                o.after,
		Logger:               logger,
		Registerer:           reg,
	}
	a.uplinkParity(&uopts)
	a.Uplink, err = uplink.New(uopts)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPListenAddr != "" {
		if gatherer == nil {
			gatherer = prometheus.NewRegistry()
		}
		lis, err := net.Listen("tcp", cfg.HTTPListenAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on --http-listen-addr %s: %w", cfg.HTTPListenAddr, err)
		}
		a.httpLis = lis
		a.httpSrv = &http.Server{
			Handler:           a.handler(gatherer),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
	}
	return a, nil
}

// HTTPAddr returns the address of the agent's own HTTP server, or "" when
// it is disabled.
func (a *Agent) HTTPAddr() string {
	if a.httpLis == nil {
		return ""
	}
	return a.httpLis.Addr().String()
}

// Close releases the HTTP listener of an agent that will not Run.
func (a *Agent) Close() error {
	if a.httpLis == nil {
		return nil
	}
	return a.httpLis.Close()
}

// WaitReady blocks until the first scrape round is done and the agent has
// registered with the proxy, or ctx ends.
func (a *Agent) WaitReady(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-a.scraped:
	}
	return a.Uplink.WaitRegistered(ctx, 1)
}

// AddActors adds the agent's long-running parts to g.
func (a *Agent) AddActors(g *run.Group) {
	{ // Scrape loop.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { a.runScrapes(ctx); return nil }, func(error) { cancel() })
	}
	if a.par.crash != nil { // Crash artifact watcher.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return a.runCrash(ctx) }, func(error) { cancel() })
	}
	if a.par.pressure != nil { // Captures still running finish before Run returns.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { <-ctx.Done(); a.par.pressure.Close(); return nil }, func(error) { cancel() })
	}
	if a.disc != nil { // Node discovery.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return a.disc.Run(ctx) }, func(error) { cancel() })
	}
	{ // Proxy client; with discovery it waits for the first answer. Its
		// configuration reports are collected beside it.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			defer a.nodeCfg.Close(a.cfg.ShutdownGrace)
			select {
			case <-ctx.Done():
				return nil
			case <-a.ids.Resolved():
			}
			return a.Uplink.Run(ctx)
		}, func(error) { cancel() })
	}
	if a.httpSrv != nil { // Own /metrics and /healthz.
		g.Add(func() error {
			a.logger.Info("Serving agent metrics", "addr", a.HTTPAddr())
			if err := a.httpSrv.Serve(a.httpLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
			defer cancel()
			if err := a.httpSrv.Shutdown(ctx); err != nil {
				_ = a.httpSrv.Close()
			}
		})
	}
}

// Run serves until ctx is cancelled or a component fails, then stops
// everything.
func (a *Agent) Run(ctx context.Context) error {
	var g run.Group
	a.AddActors(&g)
	ctx, cancel := context.WithCancel(ctx)
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	return g.Run()
}

// health is the /healthz document.
type health struct {
	Status  string                `json:"status"`
	Uplink  uplinkHealth          `json:"uplink"`
	Targets []scrape.TargetHealth `json:"targets"`
}

type uplinkHealth struct {
	Connected     bool     `json:"connected"`
	AgentID       string   `json:"agent_id"`
	Registrations int      `json:"registrations"`
	Unimplemented []string `json:"unimplemented_streams"`
	LastError     string   `json:"last_error,omitempty"`
}

func (a *Agent) handler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	if a.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.Uplink.Status()
		h := health{
			Status: "ok",
			Uplink: uplinkHealth{
				Connected:     st.Connected,
				AgentID:       st.AgentID,
				Registrations: st.Registrations,
				Unimplemented: append([]string{}, st.Unimplemented...),
				LastError:     st.LastError,
			},
			Targets: a.scraper.Health(),
		}
		if h.Targets == nil {
			h.Targets = []scrape.TargetHealth{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}

// runScrapes scrapes every target once per interval, all targets at once,
// until ctx ends. The first round starts at once.
func (a *Agent) runScrapes(ctx context.Context) {
	up := make([]bool, len(a.targets))
	for i := range up {
		up[i] = true // log the first failure
	}
	tick := time.NewTicker(a.cfg.ScrapeInterval)
	defer tick.Stop()
	for {
		var wg sync.WaitGroup
		for i, t := range a.targets {
			wg.Go(func() { up[i] = a.scrapeTarget(ctx, t, up[i]) })
		}
		wg.Wait()
		a.scrapedOnce.Do(func() { close(a.scraped) })
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// scrapeTarget scrapes t into the recorder and reports whether it is up;
// wasUp decides whether a failure is news worth a warning.
func (a *Agent) scrapeTarget(ctx context.Context, t scrape.Target, wasUp bool) bool {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ScrapeTimeout)
	defer cancel()
	fams, err := a.scraper.Scrape(ctx, t)
	if err != nil {
		a.Recorder.MarkTargetDown(t.URL)
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return wasUp // shutting down
		}
		if wasUp {
			a.logger.Warn("Scrape failed; the target's series are no longer current", "target", t.URL, "err", err)
		} else {
			a.logger.Debug("Scrape failed", "target", t.URL, "err", err)
		}
		return false
	}
	if !wasUp {
		a.logger.Info("Scrape target is up again", "target", t.URL)
	}
	if t.Name != "" {
		addLabel(fams, uplink.LabelContainerName, t.Name)
	}
	a.Recorder.Append(t.URL, 0, fams)
	a.observePressure(fams)
	return true
}

// addLabel gives every sample the label name=value unless it has one,
// keeping labels sorted. It does not modify the samples' label slices.
func addLabel(fams []scrape.Family, name, value string) {
	for fi := range fams {
		for si := range fams[fi].Samples {
			s := &fams[fi].Samples[si]
			i, found := slices.BinarySearchFunc(s.Labels, name, func(l scrape.Label, n string) int {
				switch {
				case l.Name < n:
					return -1
				case l.Name > n:
					return 1
				}
				return 0
			})
			if found {
				continue
			}
			ls := make([]scrape.Label, 0, len(s.Labels)+1)
			ls = append(ls, s.Labels[:i]...)
			ls = append(ls, scrape.Label{Name: name, Value: value})
			s.Labels = append(ls, s.Labels[i:]...)
		}
	}
}
