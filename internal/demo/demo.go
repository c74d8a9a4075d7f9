// Package demo runs a self-contained FODC cluster in one process: a proxy
// and simulated agents of a liaison and hot and warm data nodes producing
// BanyanDB-like metrics, so that every endpoint shows real data at once.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/proxy"
)

// Options configures the demo.
type Options struct {
	GRPCListenAddr string
	HTTPListenAddr string
	Logger         *slog.Logger
	// Out receives the human-readable instructions.
	Out io.Writer
	// Ready, if set, is called with the proxy's HTTP address once every
	// agent has registered.
	Ready func(httpAddr string)
}

// nodes are the simulated cluster members.
var nodes = []*fodcv1.RegisterAgentRequest{
	{NodeRole: "ROLE_LIAISON", PodName: "demo-liaison-0", ContainerNames: []string{"liaison"},
		PrimaryAddress:     &fodcv1.Address{Ip: "127.0.0.1", Port: 17912},
		SecondaryAddresses: map[string]*fodcv1.Address{"http": {Ip: "127.0.0.1", Port: 17913}}},
	{NodeRole: "ROLE_DATA", PodName: "demo-data-hot-0", Labels: map[string]string{"type": "hot"}, ContainerNames: []string{"data"}},
	{NodeRole: "ROLE_DATA", PodName: "demo-data-hot-1", Labels: map[string]string{"type": "hot"}, ContainerNames: []string{"data"}},
	{NodeRole: "ROLE_DATA", PodName: "demo-data-warm-0", Labels: map[string]string{"type": "warm"}, ContainerNames: []string{"data"}},
}

// Run starts the proxy and the agents and serves until ctx is cancelled.
func Run(ctx context.Context, opts Options) error {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)+1)
	wg.Go(func() { errs <- p.Run(ctx) })
	agents := make([]*agentsim.Agent, 0, len(nodes))
	for _, n := range nodes {
		a, err := agentsim.New(agentsim.Config{
			ProxyAddr:         p.GRPCAddr(),
			Register:          n,
			ReconnectInterval: time.Second,
			Logger:            logger.With("pod_name", n.GetPodName()),
		})
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		agents = append(agents, a)
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				errs <- fmt.Errorf("agent %s: %w", n.GetPodName(), err)
			}
		})
	}
	for _, a := range agents {
		if _, err := a.WaitRegistered(ctx, 1); err != nil {
			cancel()
			wg.Wait()
			return errors.Join(err, drain(errs))
		}
	}
	base := "http://" + p.HTTPAddr()
	fmt.Fprintf(out, `FODC demo: a proxy and %d agents (a liaison, two hot and one warm data node).

  agents dial   %s (gRPC)
  try           curl -s %s/metrics
                curl -s '%s/metrics?role=datanode-hot'
                curl -s '%s/metrics-windows?pod_name=demo-data-warm-0'
                curl -s %s/cluster
                curl -s %s/health

Press Ctrl-C to stop.
`, len(agents), p.GRPCAddr(), base, base, base, base, base)
	if opts.Ready != nil {
		opts.Ready(p.HTTPAddr())
	}
	<-ctx.Done()
	wg.Wait()
	return drain(errs)
}

func drain(errs chan error) error {
	var all []error
	for {
		select {
		case err := <-errs:
			all = append(all, err)
		default:
			return errors.Join(all...)
		}
	}
}
