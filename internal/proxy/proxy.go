// Package proxy is the composition root of the FODC proxy daemon: it builds
// the registry, the agent-facing gRPC service, the collector and the HTTP
// API from a Config, and exposes their long-running parts as run.Group
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

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/cluster"
	"github.com/fodc-go/fodc/internal/proxy/collector"
	"github.com/fodc-go/fodc/internal/proxy/configreport"
	"github.com/fodc-go/fodc/internal/proxy/diagnostics"
	"github.com/fodc-go/fodc/internal/proxy/httpapi"
	"github.com/fodc-go/fodc/internal/proxy/pressure"
	"github.com/fodc-go/fodc/internal/proxy/registry"
)

// Proxy is a wired, listening, not yet running proxy.
type Proxy struct {
	cfg      Config
	logger   *slog.Logger
	Registry *registry.Registry
	Service  *agentsvc.Service

	grpcLis net.Listener
	httpLis net.Listener
	grpcSrv *grpc.Server
	httpSrv *http.Server
}

// New validates cfg, builds every component and opens both listeners (so
// that ":0" addresses are resolved before Run). It starts no goroutines.
// reg receives the proxy's own metrics; gatherer, usually the same
// registry, is exposed in /metrics.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	agents, err := registry.New(registry.Options{
		HeartbeatTimeout: cfg.AgentHeartbeatTimeout,
		CleanupTimeout:   cfg.AgentCleanupTimeout,
		MaxAgents:        cfg.MaxAgents,
		Logger:           logger,
		Registerer:       reg,
	})
	if err != nil {
		return nil, err
	}
	// The crash collector and the service refer to each other: records
	// arriving on the service's streams go to the collector.
	var crashes *diagnostics.Collector
	svc, err := agentsvc.New(agentsvc.Options{
		Registry: agents,
		OnCrashRecord: func(agentID string, rec *fodcv1.StreamCrashDiagnosticsRequest) {
			crashes.OnRecord(agentID, rec)
		},
		HeartbeatInterval: cfg.HeartbeatInterval,
		MaxCommandAge:     cfg.AgentReplyTimeout,
		Logger:            logger,
		Registerer:        reg,
	})
	if err != nil {
		return nil, err
	}
	crashes, err = diagnostics.New(diagnostics.Options{
		Registry:   agents,
		Streams:    svc.Crash,
		Window:     cfg.DiagnosticsWindow,
		Logger:     logger,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	profiles, err := pressure.New(pressure.Options{
		Registry:   agents,
		Streams:    svc.Pressure,
		Logger:     logger,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	coll, err := collector.New(collector.Options{
		Registry: agents,
		Streams: func(id string) (collector.Requester, bool) {
			ms, ok := svc.Metrics(id)
			if !ok {
				return nil, false
			}
			return ms, true
		},
		Logger:     logger,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	ignore, err := configreport.ParseIgnore(cfg.ConfigIgnoreParams)
	if err != nil {
		return nil, err
	}
	clusterColl, err := cluster.New(cluster.Options{
		Registry:         agents,
		Streams:          svc,
		TopologyTimeout:  cfg.TopologyTimeout,
		LifecycleTimeout: cfg.LifecycleTimeout,
		RegistryTimeout:  cfg.LifecycleTimeout,
		ConfigCacheTTL:   cfg.ConfigCacheTTL,
		ConfigIgnore:     &ignore,
		Logger:           logger,
		Registerer:       reg,
	})
	if err != nil {
		return nil, err
	}
	api, err := httpapi.New(httpapi.Options{
		Registry:       agents,
		Collector:      coll,
		Cluster:        clusterColl,
		Diagnostics:    crashes,
		Pressure:       profiles,
		Gatherer:       gatherer,
		CollectTimeout: cfg.CollectTimeout,
		WriteTimeout:   cfg.HTTPWriteTimeout,
		Logger:         logger,
		Registerer:     reg,
	})
	if err != nil {
		return nil, err
	}

	grpcSrv := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.GRPCMaxMsgSize),
		// An agent opens at most seven streams; leave room for reconnect overlap.
		grpc.MaxConcurrentStreams(64),
		// Upstream agents configure no keepalive, so the server probes: a
		// half-open connection is noticed within time+timeout (W4).
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.GRPCKeepaliveTime, Timeout: cfg.GRPCKeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Metrics replies reach the collector undecoded, to be decoded
		// straight into series (enrich.DecodeBatch).
		agentsvc.ServerCodec(),
	)
	agentsvc.Register(grpcSrv, svc)

	grpcLis, err := net.Listen("tcp", cfg.GRPCListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on --grpc-listen-addr %s: %w", cfg.GRPCListenAddr, err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPListenAddr)
	if err != nil {
		_ = grpcLis.Close()
		return nil, fmt.Errorf("listen on --http-listen-addr %s: %w", cfg.HTTPListenAddr, err)
	}
	httpSrv := &http.Server{
		Handler:           http.MaxBytesHandler(api.Handler(), 1<<20),
		ReadHeaderTimeout: cfg.HTTPReadTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		// Handlers that collect extend their own deadline by their budget.
		WriteTimeout: cfg.HTTPWriteTimeout,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return &Proxy{
		cfg:      cfg,
		logger:   logger,
		Registry: agents,
		Service:  svc,
		grpcLis:  grpcLis,
		httpLis:  httpLis,
		grpcSrv:  grpcSrv,
		httpSrv:  httpSrv,
	}, nil
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
	{ // HTTP API.
		g.Add(func() error {
			p.logger.Info("Serving HTTP API", "addr", p.HTTPAddr())
			if err := p.httpSrv.Serve(p.httpLis); !errors.Is(err, http.ErrServerClosed) {
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
