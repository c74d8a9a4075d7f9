package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/fodc-go/fodc/internal/agent/crashwatch"
	"github.com/fodc-go/fodc/internal/agent/lifecycle"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
	"github.com/fodc-go/fodc/internal/agent/pressure"
	"github.com/fodc-go/fodc/internal/agent/schemaregistry"
	"github.com/fodc-go/fodc/internal/agent/scrape"
	"github.com/fodc-go/fodc/internal/agent/uplink"
)

// ParityConfig holds the flags of the upstream streams our agent serves
// beside metrics and topology: lifecycle, schema registry, crash
// diagnostics and pressure profiles (AGENT-NODE.md §11 spellings).
type ParityConfig struct {
	// LifecyclePort is the node port of InspectAll and the schema state
	// (the liaison's internal port, 18912); 0 reports files only.
	LifecyclePort      int
	LifecycleReportDir string
	LifecycleCacheTTL  time.Duration
	// SchemaRegistryPort is the liaison client port read for the registry;
	// 0 leaves the StreamSchemaRegistry stream unopened.
	SchemaRegistryPort int
	// CrashSourceDir is banyand's panic artifact root; empty disables the
	// crash stream.
	CrashSourceDir      string
	CrashMaxArtifacts   int
	CrashMaxBytes       int
	PressureEnabled     bool
	PressurePercent     uint32
	PressureThreshold   uint64
	PressurePprofPort   int
	PressureCooldown    time.Duration
	PressureDir         string
	PressureMaxArtifact int
	PressureMaxDisk     int64
}

func defaultParity() ParityConfig {
	return ParityConfig{
		LifecycleReportDir:  lifecycle.DefaultReportDir,
		LifecycleCacheTTL:   lifecycle.DefaultCacheTTL,
		SchemaRegistryPort:  17912,
		CrashMaxArtifacts:   crashwatch.DefaultMaxArtifacts,
		CrashMaxBytes:       crashwatch.DefaultMaxBytes,
		PressureEnabled:     true,
		PressurePercent:     pressure.DefaultTriggerPercent,
		PressurePprofPort:   6060,
		PressureCooldown:    pressure.DefaultCooldown,
		PressureDir:         pressure.DefaultDir,
		PressureMaxArtifact: pressure.DefaultMaxArtifacts,
		PressureMaxDisk:     pressure.DefaultMaxDiskBytes,
	}
}

func (p *ParityConfig) registerFlags(fs *pflag.FlagSet) {
	fs.IntVar(&p.LifecyclePort, "lifecycle-port", p.LifecyclePort, "Node port of GroupLifecycleService/InspectAll and the node's schema state on 127.0.0.1 (a liaison's internal port, usually 18912). 0 sends the lifecycle report files only (the upstream agent's default is 18912).")
	fs.StringVar(&p.LifecycleReportDir, "lifecycle-report-dir", p.LifecycleReportDir, "Directory of the lifecycle sidecar's *.json reports.")
	fs.DurationVar(&p.LifecycleCacheTTL, "lifecycle-cache-ttl", p.LifecycleCacheTTL, "How long a lifecycle collection is served again; 0 disables the cache.")
	fs.IntVar(&p.SchemaRegistryPort, "schema-registry-port", p.SchemaRegistryPort, "Liaison client port on 127.0.0.1 whose registry List calls the proxy's schema-consistency check reads; 0 disables the schema-registry stream.")
	fs.StringVar(&p.CrashSourceDir, "crash-source-dir", p.CrashSourceDir, "banyand's panic artifact root (--panic-artifact-dir), watched for new artifacts; empty disables crash diagnostics.")
	fs.IntVar(&p.CrashMaxArtifacts, "crash-max-artifacts", p.CrashMaxArtifacts, "Most crash records kept; the oldest fall out first.")
	fs.IntVar(&p.CrashMaxBytes, "crash-max-bytes", p.CrashMaxBytes, "Bytes of crash records kept in all.")
	fs.BoolVar(&p.PressureEnabled, "pressure-profiler-enabled", p.PressureEnabled, "Capture heap and goroutine profiles of the node under memory pressure.")
	fs.Uint32Var(&p.PressurePercent, "pressure-profiler-trigger-percent", p.PressurePercent, "Capture when the node's RSS reaches this percentage of its memory limit (1-100).")
	fs.Uint64Var(&p.PressureThreshold, "pressure-threshold-bytes", p.PressureThreshold, "Capture when the node's RSS reaches this many bytes, whatever the limit; for nodes without a container limit. 0 uses the percentage.")
	fs.IntVar(&p.PressurePprofPort, "pressure-profiler-pprof-port", p.PressurePprofPort, "Port of the node's pprof listener on localhost.")
	fs.DurationVar(&p.PressureCooldown, "pressure-profiler-cooldown", p.PressureCooldown, "Least time between two successful captures.")
	fs.StringVar(&p.PressureDir, "pressure-profiler-dir", p.PressureDir, "Directory the captured profiles are kept in.")
	fs.IntVar(&p.PressureMaxArtifact, "pressure-profiler-max-artifacts", p.PressureMaxArtifact, "Most capture events kept; 0: no limit.")
	fs.Int64Var(&p.PressureMaxDisk, "pressure-profiler-max-disk-bytes", p.PressureMaxDisk, "Bytes of profiles kept on disk; 0: no limit.")
}

func (p *ParityConfig) validate() []error {
	var errs []error
	for _, port := range []struct {
		flag string
		v    int
	}{{"--lifecycle-port", p.LifecyclePort}, {"--schema-registry-port", p.SchemaRegistryPort}, {"--pressure-profiler-pprof-port", p.PressurePprofPort}} {
		if port.v < 0 || port.v > 65535 {
			errs = append(errs, fmt.Errorf("%s (%d) must be in 0..65535", port.flag, port.v))
		}
	}
	if p.LifecycleCacheTTL < 0 {
		errs = append(errs, fmt.Errorf("--lifecycle-cache-ttl (%s) must not be negative", p.LifecycleCacheTTL))
	}
	if p.PressureEnabled && (p.PressurePercent < 1 || p.PressurePercent > 100) {
		errs = append(errs, fmt.Errorf("--pressure-profiler-trigger-percent (%d) must be in 1..100", p.PressurePercent))
	}
	return errs
}

func localAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// parity is the wired parity components; nil fields are disabled.
type parity struct {
	lifecycle *lifecycle.Collector
	registry  *schemaregistry.Reader
	crash     *crashwatch.Watcher
	pressure  *pressure.Profiler
}

func (a *Agent) wireParity(o *options) error {
	c := a.cfg.Parity
	a.par.lifecycle = &lifecycle.Collector{ReportDir: c.LifecycleReportDir, CacheTTL: c.LifecycleCacheTTL, DialOptions: o.nodeDial}
	if c.LifecyclePort > 0 {
		a.par.lifecycle.Addr = localAddr(c.LifecyclePort)
	}
	if c.SchemaRegistryPort > 0 {
		a.par.registry = &schemaregistry.Reader{Addr: localAddr(c.SchemaRegistryPort), DialOptions: o.nodeDial}
	}
	if c.CrashSourceDir != "" {
		a.par.crash = crashwatch.New(crashwatch.Options{Dir: c.CrashSourceDir, MaxArtifacts: c.CrashMaxArtifacts, MaxBytes: c.CrashMaxBytes, Logger: a.logger.With("component", "crashwatch")})
	}
	if c.PressureEnabled {
		a.par.pressure = pressure.New(pressure.Options{
			Dir: c.PressureDir, PprofBase: "http://" + net.JoinHostPort("localhost", strconv.Itoa(c.PressurePprofPort)),
			TriggerPercent: c.PressurePercent, ThresholdBytes: c.PressureThreshold, Cooldown: c.PressureCooldown,
			MaxArtifacts: c.PressureMaxArtifact, MaxDiskBytes: c.PressureMaxDisk, PodName: a.cfg.PodName,
			Role: func() string { id := a.ids.Get(); return id.Role.WireName() },
			// A node whose gauges carry no limit: its cgroup's, when the
			// node's process is visible (--node-pid).
			Limit: func() uint64 {
				v, _ := nodeconfig.MemoryLimit(nodeconfig.Options{PID: a.cfg.NodePID, CgroupRoot: a.cfg.NodeCgroupRoot})
				return v
			},
			Logger: a.logger.With("component", "pressure"),
		})
		if err := a.par.pressure.SelfCheck(); err != nil {
			return fmt.Errorf("--pressure-profiler-dir: %w", err)
		}
	}
	return nil
}

// uplinkParity sets the uplink options of the parity streams.
func (a *Agent) uplinkParity(o *uplink.Options) {
	o.Lifecycle = a.par.lifecycle.Collect
	if a.par.registry != nil {
		o.SchemaRegistry = a.par.registry.Read
	}
	if a.par.crash != nil {
		o.Crash = a.par.crash.Records
	}
	if a.par.pressure != nil {
		o.Pressure = a.par.pressure
	}
}

// observePressure evaluates the pressure trigger on one scrape's families.
func (a *Agent) observePressure(fams []scrape.Family) {
	if a.par.pressure == nil {
		return
	}
	var rss, limit float64
	var hasRSS, hasLimit bool
	for _, f := range fams {
		if len(f.Samples) == 0 {
			continue
		}
		switch f.Name {
		case pressure.RSSMetric:
			rss, hasRSS = f.Samples[0].Value, true
		case pressure.LimitMetric:
			limit, hasLimit = f.Samples[0].Value, true
		}
	}
	a.par.pressure.Observe(rss, hasRSS, limit, hasLimit)
}

// runCrash runs the crash watcher until ctx ends.
func (a *Agent) runCrash(ctx context.Context) error { return a.par.crash.Run(ctx) }

// WithNodeDialOptions adds gRPC dial options to the lifecycle and schema
// registry connections to the node.
func WithNodeDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.nodeDial = append(o.nodeDial, opts...) }
}
