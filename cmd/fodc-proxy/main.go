// Command fodc-proxy is the FODC proxy: the control plane that FODC agents
// beside every BanyanDB node connect to, and that Prometheus and operators
// query.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/logging"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/version"
)

func main() { os.Exit(runMain(os.Args[1:], os.Stderr)) }

func runMain(args []string, stderr io.Writer) int {
	cfg := proxy.DefaultConfig()
	var logCfg logging.Config
	fs := pflag.NewFlagSet("fodc-proxy", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	logCfg.RegisterFlags(fs)
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stderr, "fodc-proxy", version.Version)
		return 0
	}
	logger, err := logCfg.New(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fodc-proxy:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "fodc-proxy: invalid configuration:", err)
		return 2
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(cfg, logger, reg, reg)
	if err != nil {
		logger.Error("Proxy could not start", "err", err)
		return 1
	}
	var g run.Group
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	p.AddActors(&g)
	logger.Info("FODC proxy started", "version", version.Version, "grpc_addr", p.GRPCAddr(), "http_addr", p.HTTPAddr())
	if err := g.Run(); err != nil {
		var sig run.SignalError
		if !errors.As(err, &sig) {
			logger.Error("Proxy stopped with error", "err", err)
			return 1
		}
	}
	logger.Info("FODC proxy stopped")
	return 0
}
