// Command fodc-bench is the FODC proxy load tool: it simulates many
// upstream agents in one process against any wire-compatible proxy, drives
// concurrent scrapes of /metrics and /metrics-windows and reports latency,
// throughput, errors, partial answers and the proxy's peak RSS and CPU.
// See docs/performance.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/fodc-go/fodc/internal/bench"
	"github.com/fodc-go/fodc/internal/logging"
)

func main() { os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr)) }

func runMain(args []string, stdout, stderr io.Writer) int {
	cfg := bench.DefaultConfig()
	logCfg := logging.Config{}
	fs := pflag.NewFlagSet("fodc-bench", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	logCfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if !fs.Changed("log-level") {
		logCfg.Level = "warn"
	}
	logger, err := logCfg.New(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fodc-bench:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "fodc-bench: invalid configuration:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "fodc-bench:", err)
		return 1
	}
	if cfg.JSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "fodc-bench:", err)
		return 1
	}
	return 0
}
