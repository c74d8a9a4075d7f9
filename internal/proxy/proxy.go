// Package proxy is the composition root of the FODC proxy daemon: it builds
// the registry, the stream table, the agent-facing gRPC service, the
// scraper, the cluster views and the HTTP API from a Config, and exposes their long-running parts as run.Group
// actors.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/cluster"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/httpapi"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
	"github.com/fodc-go/fodc/internal/proxy/profiling"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/scrape"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// Fixed settings that are not flags. Each has a reason to be what it is.
const (
	// maxConcurrentStreams bounds the streams of one gRPC connection. An
	// agent opens at most eight (seven upstream kinds and the extension);
	// leave room for the overlap of a reconnect.
	maxConcurrentStreams = 64
	// keepaliveMinTime is the most frequent client ping the server
	// tolerates. Upstream agents configure no keepalive; ours pings at
	// most every five minutes against upstream proxies' enforcement, so
	// 5s only stops misbehaving clients.
	keepaliveMinTime = 5 * time.Second
	// streamSendQueueLen bounds the commands queued for one stream's
	// sender; streamMaxPending the commands outstanding on one stream.
	streamSendQueueLen = 64
	streamMaxPending   = 32
	// registrationWait bounds how long a new registration stream may stay
	// silent: agents send their registration right after opening it.
	registrationWait = 30 * time.Second
	// failedAgentWait is how long an agent whose last lifecycle collection
	// failed is waited for in the next round (W12).
	failedAgentWait = time.Second
	// configTimeout bounds a configuration collection.
	configTimeout = 5 * time.Second
	// maxCrashRecords and crashRecordMaxAge bound the crash-record cache.
	maxCrashRecords   = 1000
	crashRecordMaxAge = 24 * time.Hour
	// pressureListTimeout bounds one agent's pressure-profile list round;
	// maxProfilesPerPod the records kept for one pod.
	pressureListTimeout = 10 * time.Second
	maxProfilesPerPod   = 1000
	// maxOnDemandProfiles bounds the on-demand profiles listed (their
	// bytes are bounded by --on-demand-profile-bytes); profileAcceptTimeout
	// bounds the wait for an agent to accept a profile request.
	maxOnDemandProfiles  = 1000
	profileAcceptTimeout = 10 * time.Second
	// maxRequestBodyBytes bounds an HTTP request body (the API takes none
	// larger than a query string).
	maxRequestBodyBytes = 1 << 20
	// httpIdleTimeout closes idle keep-alive HTTP connections.
	httpIdleTimeout = 2 * time.Minute
	// topologyRefreshInterval is how often the topology is collected when
	// nobody asks, so that nodes without an agent show in /health and
	// /metrics; twice a Prometheus default scrape interval.
	topologyRefreshInterval = 30 * time.Second
)

// Proxy is a wired, listening, not yet running proxy.
type Proxy struct {
	cfg      Config
	logger   *slog.Logger
	Registry *registry.Registry
	Streams  *streams.Table
	Service  *agentsvc.Service
	Views    *cluster.Views
	// Profiling runs on-demand profiles (POST /profiling).
	Profiling *profiling.Manager

	grpcLis net.Listener
	httpLis net.Listener
	grpcSrv *grpc.Server
	httpSrv *http.Server

	// The plaintext agent listener (--grpc-insecure-listen-addr); nil
	// when disabled.
	insecureLis net.Listener
	insecureSrv *grpc.Server
}

// New validates cfg, builds every component and opens both listeners (so
// that ":0" addresses are resolved before Run). It starts no goroutines.
// reg receives the proxy's own metrics; gatherer, usually the same
// registry, is exposed in /metrics.
//
// The components are built in the order data flows: the registry and the
// table of open streams first, then the caches fed by the streams, the
// gRPC service that fills both, and the views and API that read them.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil || reg == nil {
		return nil, errors.New("proxy: logger and registerer are required")
	}
	agents, err := registry.New(registry.Options{
		HeartbeatTimeout: cfg.AgentHeartbeatTimeout,
		CleanupTimeout:   cfg.AgentCleanupTimeout,
		MaxAgents:        cfg.MaxAgents,
		StateFile:        cfg.StateFile,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	table := streams.NewTable(streams.Limits{
		SendQueueLen:  streamSendQueueLen,
		MaxPending:    streamMaxPending,
		MaxCommandAge: cfg.AgentReplyTimeout,
	})
	crashes, err := diagnostics.New(diagnostics.Options{
		Registry:       agents,
		Streams:        table,
		Window:         cfg.DiagnosticsWindow,
		MaxRecords:     maxCrashRecords,
		MaxAge:         crashRecordMaxAge,
		MaxRecordBytes: cfg.MaxCrashRecordBytes,
		MaxBytes:       cfg.MaxCrashBytes,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	profiles, err := pressure.New(pressure.Options{
		Registry:          agents,
		Streams:           table,
		ListTimeout:       pressureListTimeout,
		MaxProfilesPerPod: maxProfilesPerPod,
		MaxRecordBytes:    cfg.MaxProfileRecordBytes,
		MaxBytes:          cfg.MaxProfileBytes,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	svc, err := agentsvc.New(agentsvc.Options{
		Registry:          agents,
		Streams:           table,
		HeartbeatInterval: cfg.HeartbeatInterval,
		RegistrationWait:  registrationWait,
		Limits: agentsvc.RegistrationLimits{
			MaxLabels:     cfg.MaxRegistrationLabels,
			MaxContainers: cfg.MaxContainers,
			MaxNameLen:    cfg.MaxNameLength,
			MaxValueLen:   cfg.MaxValueLength,
			PerPeerRate:   cfg.RegistrationsPerSecond,
			PerPeerBurst:  cfg.RegistrationBurst,
		},
		OnCrashRecord: crashes.OnRecord,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	scraper, err := scrape.New(agents, table, decode.Limits{
		MaxSeries:        cfg.MaxSeriesPerReply,
		MaxLabels:        cfg.MaxLabelsPerSeries,
		MaxLabelNameLen:  cfg.MaxLabelNameLength,
		MaxLabelValueLen: cfg.MaxLabelValueLength,
		MaxNameLen:       cfg.MaxMetricNameLength,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	ignore, err := configreport.ParseIgnore(cfg.ConfigIgnoreParams)
	if err != nil {
		return nil, err
	}
	views, err := cluster.New(cluster.Options{
		Registry:         agents,
		Streams:          table,
		TopologyTimeout:  cfg.TopologyTimeout,
		LifecycleTimeout: cfg.LifecycleTimeout,
		FailedAgentWait:  failedAgentWait,
		RegistryTimeout:  cfg.LifecycleTimeout,
		ConfigTimeout:    configTimeout,
		ConfigCacheTTL:   cfg.ConfigCacheTTL,
		ConfigIgnore:     ignore,
	}, logger, reg)
	if err != nil {
		return nil, err
	}
	ondemand, err := profiling.New(profiling.Options{
		Registry: agents, Streams: table, MaxBytes: cfg.OnDemandProfileBytes,
		MaxEntries: maxOnDemandProfiles, AcceptTimeout: profileAcceptTimeout,
	}, logger.With("component", "profiling"), reg)
	if err != nil {
		return nil, err
	}
	api, err := httpapi.New(httpapi.Options{
		Registry: agents,
		Scraper:  scraper,
		Admission: httpapi.Admission{
			Metrics:   cfg.MaxInflightMetrics,
			Cluster:   cfg.MaxInflightCluster,
			Downloads: cfg.MaxInflightDownloads,
		},
		Cluster:        views,
		Diagnostics:    crashes,
		Pressure:       profiles,
		Profiling:      ondemand,
		Gatherer:       gatherer,
		CollectTimeout: cfg.CollectTimeout,
		WriteTimeout:   cfg.HTTPWriteTimeout,
		EnablePprof:    cfg.EnablePprof,
		Streams:        table,
	}, logger, reg)
	if err != nil {
		return nil, err
	}

	sec, err := buildAgentSecurity(cfg.Security, svc, logger)
	if err != nil {
		return nil, err
	}
	grpcOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.GRPCMaxMsgSize),
		// A connection that never completes the HTTP/2 handshake holds a
		// file descriptor: grpc-go's default keeps it 120s.
		grpc.ConnectionTimeout(cfg.GRPCHandshakeTimeout),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		// Upstream agents configure no keepalive, so the server probes: a
		// half-open connection is noticed within time+timeout (W4).
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.GRPCKeepaliveTime, Timeout: cfg.GRPCKeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		// Metrics replies reach the scraper undecoded, in pooled buffers,
		// to be decoded straight into packed series (decode.DecodeLatest).
		agentsvc.ServerCodec(),
	}
	// Per-connection buffers sized for agent traffic: an idle agent
	// connection (one per upstream agent) should hold next to nothing.
	grpcOpts = append(grpcOpts, agentsvc.TransportOptions()...)
	grpcSrv := grpc.NewServer(append(grpcOpts, sec.mainOpts...)...)
	agentsvc.Register(grpcSrv, svc)
	var insecureSrv *grpc.Server
	if cfg.Security.GRPCInsecureListenAddr != "" {
		insecureSrv = grpc.NewServer(append(grpcOpts, sec.insecureOpts...)...)
		agentsvc.Register(insecureSrv, svc)
	}

	connsOpen := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fodc_proxy_grpc_connections_open",
		Help: "Agent-facing gRPC connections open.",
	})
	connsRejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fodc_proxy_grpc_connections_rejected_total",
		Help: "Agent-facing connections closed at once because --grpc-max-connections were open.",
	})
	for _, c := range []prometheus.Collector{connsOpen, connsRejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	rawGRPCLis, err := net.Listen("tcp", cfg.GRPCListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on --grpc-listen-addr %s: %w", cfg.GRPCListenAddr, err)
	}
	grpcLis := newCapListener(rawGRPCLis, cfg.GRPCMaxConnections, connsOpen, connsRejected)
	httpLis, err := net.Listen("tcp", cfg.HTTPListenAddr)
	if err != nil {
		_ = grpcLis.Close()
		return nil, fmt.Errorf("listen on --http-listen-addr %s: %w", cfg.HTTPListenAddr, err)
	}
	var insecureLis net.Listener
	if insecureSrv != nil {
		raw, err := net.Listen("tcp", cfg.Security.GRPCInsecureListenAddr)
		if err != nil {
			_ = grpcLis.Close()
			_ = httpLis.Close()
			return nil, fmt.Errorf("listen on --grpc-insecure-listen-addr %s: %w", cfg.Security.GRPCInsecureListenAddr, err)
		}
		insecureLis = newCapListener(raw, cfg.GRPCMaxConnections, connsOpen, connsRejected)
	}
	if sec.roles != nil {
		// On-demand profile downloads hand out profiles like pressure
		// downloads, and a configuration refresh makes every node work:
		// both are operator routes (POST /profiling is a default rule).
		sec.roles.AddRule(httpapi.Rule{Method: http.MethodGet, Prefix: "/profiling/", Role: httpapi.RoleOperator})
		sec.roles.AddRule(httpapi.Rule{Method: http.MethodPost, Prefix: "/cluster/config/refresh", Role: httpapi.RoleOperator})
	}
	httpSrv := &http.Server{
		Handler:           http.MaxBytesHandler(sec.roles.Guard(api.Handler()), maxRequestBodyBytes),
		ReadHeaderTimeout: cfg.HTTPReadTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		// Handlers that collect extend their own deadline by their budget.
		WriteTimeout: cfg.HTTPWriteTimeout,
		IdleTimeout:  httpIdleTimeout,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return &Proxy{
		cfg:       cfg,
		logger:    logger,
		Registry:  agents,
		Streams:   table,
		Service:   svc,
		Views:     views,
		Profiling: ondemand,
		grpcLis:   grpcLis,
		httpLis:   httpLis,
		grpcSrv:   grpcSrv,
		httpSrv:   httpSrv,

		insecureLis: insecureLis,
		insecureSrv: insecureSrv,
	}, nil
}

// InsecureGRPCAddr returns the address of the plaintext agent listener, ""
// when it is disabled.
func (p *Proxy) InsecureGRPCAddr() string {
	if p.insecureLis == nil {
		return ""
	}
	return p.insecureLis.Addr().String()
}

// GRPCAddr returns the address the gRPC server listens on.
func (p *Proxy) GRPCAddr() string { return p.grpcLis.Addr().String() }

// HTTPAddr returns the address the HTTP API listens on.
func (p *Proxy) HTTPAddr() string { return p.httpLis.Addr().String() }

// AddActors adds the proxy's long-running parts to g. Each actor's
// interrupt stops it within the configured shutdown grace.
func (p *Proxy) AddActors(g *run.Group) {
	{ // Registry health sweep.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return p.Registry.Run(ctx) }, func(error) { cancel() })
	}
	{ // On-demand profiles: the running ones stop with the proxy.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { <-ctx.Done(); p.Profiling.Close(); return nil }, func(error) { cancel() })
	}
	{ // Topology refresh, for nodes without an agent.
		ctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return p.Views.Run(ctx, topologyRefreshInterval) }, func(error) { cancel() })
	}
	{ // Agent-facing gRPC server. Bidi streams never end on their own: drain first.
		g.Add(func() error {
			p.logger.Info("Serving agents", "addr", p.GRPCAddr())
			return p.grpcSrv.Serve(p.grpcLis)
		}, func(error) {
			p.Service.Drain()
			stopped := make(chan struct{})
			go func() { p.grpcSrv.GracefulStop(); close(stopped) }()
			t := time.NewTimer(p.cfg.ShutdownGrace)
			defer t.Stop()
			select {
			case <-stopped:
			case <-t.C:
				p.grpcSrv.Stop()
				<-stopped
			}
			p.Registry.Close()
		})
	}
	if p.insecureSrv != nil { // Plaintext agent listener, stopped like the main one.
		g.Add(func() error {
			p.logger.Info("Serving unauthenticated agents (plaintext)", "addr", p.InsecureGRPCAddr())
			return p.insecureSrv.Serve(p.insecureLis)
		}, func(error) {
			p.Service.Drain()
			stopped := make(chan struct{})
			go func() { p.insecureSrv.GracefulStop(); close(stopped) }()
			t := time.NewTimer(p.cfg.ShutdownGrace)
			defer t.Stop()
			select {
			case <-stopped:
			case <-t.C:
				p.insecureSrv.Stop()
				<-stopped
			}
		})
	}
	{ // HTTP API, with the web configuration's TLS and basic auth.
		g.Add(func() error {
			p.logger.Info("Serving HTTP API", "addr", p.HTTPAddr())
			if err := serveHTTP(p.httpSrv, p.httpLis, p.cfg.Security.WebConfigFile, p.logger); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
			defer cancel()
			if err := p.httpSrv.Shutdown(ctx); err != nil {
				_ = p.httpSrv.Close()
			}
		})
	}
}

// Run serves until ctx is cancelled or a component fails, then stops
// everything. It is the whole daemon for callers without their own group.
func (p *Proxy) Run(ctx context.Context) error {
	var g run.Group
	p.AddActors(&g)
	ctx, cancel := context.WithCancel(ctx)
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	return g.Run()
}
