// Command fodc-demo runs a whole FODC setup in one process: a proxy and
// real agents of a liaison and hot and warm data nodes, each scraping a
// synthetic BanyanDB-like endpoint, so that every endpoint of the proxy
// shows data. Stop it with Ctrl-C.
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

	"github.com/fodc-go/fodc/internal/demo"
	"github.com/fodc-go/fodc/internal/logging"
)

func main() { os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr)) }

func runMain(args []string, stdout, stderr io.Writer) int {
	opts := demo.Options{Out: stdout}
	var logCfg logging.Config
	fs := pflag.NewFlagSet("fodc-demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.GRPCListenAddr, "grpc-listen-addr", "127.0.0.1:17900", "Address of the demo proxy's gRPC server.")
	fs.StringVar(&opts.HTTPListenAddr, "http-listen-addr", "127.0.0.1:17901", "Address of the demo proxy's HTTP API.")
	logCfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if logCfg.Level == "info" && !fs.Changed("log-level") {
		logCfg.Level = "warn" // keep the terminal for the instructions
	}
	logger, err := logCfg.New(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fodc-demo:", err)
		return 2
	}
	opts.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, opts); err != nil {
		fmt.Fprintln(stderr, "fodc-demo:", err)
		return 1
	}
	fmt.Fprintln(stdout, "FODC demo stopped.")
	return 0
}
