// Command fodc-agent is the FODC agent: the sidecar beside one BanyanDB
// node that scrapes the node's metrics into a flight recorder and answers
// the FODC proxy.
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

	"github.com/fodc-go/fodc/internal/agent"
	"github.com/fodc-go/fodc/internal/logging"
	"github.com/fodc-go/fodc/internal/version"
)

func main() { os.Exit(runMain(os.Args[1:], os.Stderr)) }

func runMain(args []string, stderr io.Writer) int {
	cfg := agent.DefaultConfig()
	var logCfg logging.Config
	fs := pflag.NewFlagSet("fodc-agent", pflag.ContinueOnError)
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
		fmt.Fprintln(stderr, "fodc-agent", version.Version)
		return 0
	}
	logger, err := logCfg.New(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fodc-agent:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "fodc-agent: invalid configuration:", err)
		return 2
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := agent.New(cfg, logger, reg, reg, agent.WithAgentParams(agent.FlagParams(fs)))
	if err != nil {
		logger.Error("Agent could not start", "err", err)
		return 1
	}
	var g run.Group
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	a.AddActors(&g)
	logger.Info("FODC agent started", "version", version.Version, "proxy_addr", cfg.ProxyAddr,
		"pod_name", cfg.PodName, "http_addr", a.HTTPAddr())
	if err := g.Run(); err != nil {
		var sig run.SignalError
		if !errors.As(err, &sig) {
			logger.Error("Agent stopped with error", "err", err)
			return 1
		}
	}
	logger.Info("FODC agent stopped")
	return 0
}
