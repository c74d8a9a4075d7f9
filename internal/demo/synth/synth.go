// Package synth serves synthetic, BanyanDB-like Prometheus endpoints for the
// demo and tests: counters grow, gauges move and histograms fill with time.
//
// Every value is a pure function of the node's seed and the time elapsed
// since the Handler was built, so two scrapes at the same instant agree.
// Liaison nodes expose gRPC request counters and a latency histogram per
// group; data nodes expose written-element counters, file parts, a queue
// latency histogram and disk use per group, the warm tier at a lower rate;
// every node exposes system, Go runtime and process metrics (including a
// summary). The exposition is rendered by client_golang, so it is valid
// Prometheus text (or OpenMetrics on request).
//
// NodeHandler serves one node on its own listener, the way a BanyanDB pod
// does: its metrics and, like the node's pprof listener, its command line at
// /debug/pprof/cmdline (see BanyandArgs).
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fodc-go/fodc/internal/roles"
)

// Node describes one synthetic BanyanDB node.
type Node struct {
	// Pod names the node; its endpoint is served at Path(Pod).
	Pod string
	// Role selects the metric set; a data node's tier sets its rates.
	Role roles.Role
	// Seed varies rates and offsets between nodes.
	Seed uint64
	// Args is the node's command line after the program name (see
	// BanyandArgs). NodeHandler serves it behind Program at CmdlinePath;
	// nil serves no command line, like a node without a pprof listener.
	Args []string
	// Publishes are the nodes this one sends queue messages to (a liaison
	// to the data nodes, a hot data node to the warm tier), exposed as
	// banyandb_queue_pub_* series; Subscribes the nodes it receives from,
	// as banyandb_queue_sub_* series.
	Publishes, Subscribes []Peer
	// Pprof, when set, serves the serving process's own net/http/pprof
	// handlers under /debug/pprof/ (heap, goroutine, profile, trace, ...):
	// real profiles of that process, as a BanyanDB pprof listener serves
	// its own. CmdlinePath keeps serving Args.
	Pprof bool
	// MemoryLimit, when above zero, is exposed as the cgroup memory limit
	// gauge (MemoryLimitMetric) the agent's pressure trigger reads.
	MemoryLimit float64
	// PressureAfter, when above zero, is when the node's resident memory
	// (process_resident_memory_bytes) jumps to PressureShare of
	// MemoryLimit, counted from the handler's start: a node crossing its
	// memory threshold.
	PressureAfter time.Duration
}

// MemoryLimitMetric is the gauge of a node's container memory limit.
const MemoryLimitMetric = "banyandb_memory_protector_cgroup_limit_bytes"

// PressureShare is the share of MemoryLimit a node under pressure uses.
const PressureShare = 0.85

// Peer is the other end of a node's queue traffic.
type Peer struct {
	Pod  string
	Role roles.Role
	// Operations are the queue operations on this edge (write, query,
	// file_sync); file_sync also counts bytes.
	Operations []string
	// ErrorRatio is the share of messages that fail on this edge.
	ErrorRatio float64
}

// Groups are the BanyanDB groups the metrics are labelled with.
var Groups = []string{"sw_metric", "sw_record", "sw_trace"}

// latencyBuckets are the histograms' upper bounds, in seconds, and the
// share of observations at or below each.
var latencyBuckets = []struct{ le, share float64 }{
	{0.005, 0.30}, {0.01, 0.50}, {0.05, 0.80}, {0.1, 0.90}, {0.5, 0.97}, {1, 0.99}, {5, 1},
}

// Path returns the URL path of pod's endpoint.
func Path(pod string) string { return "/" + pod + "/metrics" }

// Handler serves the endpoint of every node at Path(node.Pod). now is the
// clock (nil: time.Now). It is safe for concurrent use.
func Handler(nodes []Node, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	start := now()
	mux := http.NewServeMux()
	for _, n := range nodes {
		mux.Handle(Path(n.Pod), metricsHandler(n, start, now))
	}
	return mux
}

// NodeHandler serves one node: its metrics at Path(n.Pod) and, when n.Args
// is set, its NUL-separated argv (Program, then n.Args) at CmdlinePath, as
// net/http/pprof serves a process's os.Args. now is the clock (nil:
// time.Now). It is safe for concurrent use.
func NodeHandler(n Node, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	mux := http.NewServeMux()
	mux.Handle(Path(n.Pod), metricsHandler(n, now(), now))
	if n.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if n.Args != nil {
		body := []byte(strings.Join(append([]string{Program}, n.Args...), "\x00"))
		mux.HandleFunc(CmdlinePath, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(body)
		})
	}
	return mux
}

func metricsHandler(n Node, start time.Time, now func() time.Time) http.Handler {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(n, start, now))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// collector computes one node's metrics at collection time. It is
// immutable and safe for concurrent use.
type collector struct {
	node  Node
	start time.Time
	now   func() time.Time

	rate   float64 // overall activity factor of the node
	phase  float64
	cpus   float64
	offset float64

	cpuNum, memory, disk, goroutines, rss, upTime *prometheus.Desc
	memLimit                                      *prometheus.Desc
	gcDuration                                    *prometheus.Desc
	grpcStarted, grpcLatency                      *prometheus.Desc
	measureWritten, streamWritten                 *prometheus.Desc
	parts, queueLatency                           *prometheus.Desc
	pubStarted, pubErr, pubLatency, pubBytes      *prometheus.Desc
	subStarted, subErr, subLatency                *prometheus.Desc
}

func newCollector(n Node, start time.Time, now func() time.Time) *collector {
	rng := rand.New(rand.NewPCG(n.Seed, 0x5eed))
	rate := 1.0
	if n.Role.Kind == roles.KindData && n.Role.Tier != "" && n.Role.Tier != "hot" {
		rate = 0.15 // colder tiers take fewer writes
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		node:   n,
		start:  start,
		now:    now,
		rate:   rate * (0.8 + 0.4*rng.Float64()),
		phase:  rng.Float64() * 2 * math.Pi,
		cpus:   float64(int(4) << rng.IntN(3)),
		offset: math.Floor(rng.Float64() * 10000),

		cpuNum:     desc("banyandb_system_cpu_num", "Number of logical CPUs."),
		memory:     desc("banyandb_system_memory_state", "Memory of the node in bytes by kind.", "kind"),
		disk:       desc("banyandb_system_disk", "Disk use of the data directory in bytes by kind.", "path", "kind"),
		goroutines: desc("go_goroutines", "Number of goroutines that currently exist."),
		rss:        desc("process_resident_memory_bytes", "Resident memory size in bytes."),
		memLimit:   desc(MemoryLimitMetric, "Memory limit of the node's container in bytes."),
		upTime:     desc("banyandb_system_up_time", "Seconds since the node started."),
		gcDuration: desc("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles."),

		grpcStarted: desc("banyandb_liaison_grpc_total_started", "Total number of gRPC requests started on the liaison.", "group", "service", "method"),
		grpcLatency: desc("banyandb_liaison_grpc_total_latency", "Latency of gRPC requests on the liaison in seconds.", "group", "service", "method"),

		measureWritten: desc("banyandb_measure_total_written", "Total number of measure data points written.", "group"),
		streamWritten:  desc("banyandb_stream_total_written", "Total number of stream elements written.", "group"),
		parts:          desc("banyandb_tsdb_total_file_parts", "Number of file parts of the group's series on disk.", "group"),
		queueLatency:   desc("banyandb_queue_sub_total_latency", "Latency of handling queue messages on the data node in seconds.", "group", "topic"),

		pubStarted: desc("banyandb_queue_pub_total_started", "Queue messages published to a remote node.", queueLabels...),
		pubErr:     desc("banyandb_queue_pub_total_err", "Queue messages published to a remote node that failed.", queueLabels...),
		pubLatency: desc("banyandb_queue_pub_total_latency", "Latency of queue messages published to a remote node, in seconds.", queueLabels...),
		pubBytes:   desc("banyandb_queue_pub_total_sent_bytes", "Bytes sent to a remote node by file synchronisation.", queueLabels...),
		subStarted: desc("banyandb_queue_sub_total_started", "Queue messages received from a remote node.", queueLabels...),
		subErr:     desc("banyandb_queue_sub_total_err", "Queue messages received from a remote node whose handling failed.", queueLabels...),
		subLatency: desc("banyandb_queue_sub_total_handle_latency", "Latency of handling queue messages received from a remote node, in seconds.", queueLabels...),
	}
}

// queueLabels are the labels of the banyandb_queue_pub_* and
// banyandb_queue_sub_* series: what, which group, and the node at the
// other end.
var queueLabels = []string{"operation", "group", "remote_node", "remote_role", "remote_tier"}

// Describe sends nothing: the collector is unchecked, its label values
// depend on the node.
func (c *collector) Describe(chan<- *prometheus.Desc) {}

// Collect computes every value for the current time.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	t := max(c.now().Sub(c.start).Seconds(), 0)
	wave := func(period, amp float64) float64 { return amp * math.Sin(2*math.Pi*t/period+c.phase) }
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, math.Floor(v), lv...)
	}

	const gib = 1 << 30
	gauge(c.cpuNum, c.cpus)
	gauge(c.memory, 16*gib, "total")
	gauge(c.memory, math.Round(6*gib+wave(120, 1*gib)), "used")
	gauge(c.goroutines, math.Round(150+wave(60, 40)))
	rss := math.Round(900e6 + wave(90, 150e6))
	if c.node.MemoryLimit > 0 {
		gauge(c.memLimit, c.node.MemoryLimit)
		if c.node.PressureAfter > 0 && t >= c.node.PressureAfter.Seconds() {
			rss = math.Round(c.node.MemoryLimit * PressureShare)
		}
	}
	gauge(c.rss, rss)
	gauge(c.upTime, math.Floor(3600+t))
	c.summary(ch, t)

	switch c.node.Role.Kind {
	case roles.KindLiaison:
		for i, g := range Groups {
			r := c.rate * float64(40-10*i)
			for _, m := range []string{"Write", "Query"} {
				mr := r
				if m == "Query" {
					mr = r / 4
				}
				counter(c.grpcStarted, c.offset+mr*t, g, "measure", m)
				c.histogram(ch, c.grpcLatency, mr*t, 0.02, g, "measure", m)
			}
		}
	case roles.KindData:
		used := 0.0
		for i, g := range Groups {
			r := c.rate * float64(300-80*i)
			counter(c.measureWritten, c.offset+r*t, g)
			counter(c.streamWritten, c.offset/2+r*t/3, g)
			gauge(c.parts, math.Round(20+wave(180, 8)+float64(4*i)), g)
			c.histogram(ch, c.queueLatency, r*t/10, 0.004, g, "write")
			used += (c.offset + r*t) * 64 // bytes per element
		}
		gauge(c.disk, 500*gib, "/data", "total")
		gauge(c.disk, math.Round(40*gib+used), "/data", "used")
	}
	c.queue(ch, t, counter)
}

// queue emits the node's queue traffic with its peers: per edge,
// operation and group a message counter, a failure counter, a latency
// histogram and, for file synchronisation, a byte counter.
func (c *collector) queue(ch chan<- prometheus.Metric, t float64, counter func(*prometheus.Desc, float64, ...string)) {
	edges := func(peers []Peer, started, errs, latency, bytes *prometheus.Desc) {
		for pi, p := range peers {
			for oi, op := range p.Operations {
				for gi, g := range Groups {
					r := c.rate * float64(60-15*gi) / float64(1+oi) / float64(1+pi%2)
					if op == "file_sync" {
						r = c.rate * 0.5
					}
					n := c.offset/4 + r*t
					lv := []string{op, g, p.Pod, p.Role.WireName(), p.Role.Tier}
					counter(started, n, lv...)
					counter(errs, n*p.ErrorRatio, lv...)
					c.histogram(ch, latency, r*t, 0.003+0.01*p.ErrorRatio, lv...)
					if op == "file_sync" && bytes != nil {
						counter(bytes, n*(4<<20), lv...)
					}
				}
			}
		}
	}
	edges(c.node.Publishes, c.pubStarted, c.pubErr, c.pubLatency, c.pubBytes)
	edges(c.node.Subscribes, c.subStarted, c.subErr, c.subLatency, nil)
}

// histogram emits a latency histogram with count observations of the given
// mean.
func (c *collector) histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, count, mean float64, lv ...string) {
	n := uint64(count)
	buckets := make(map[float64]uint64, len(latencyBuckets))
	for _, b := range latencyBuckets {
		buckets[b.le] = uint64(math.Floor(float64(n) * b.share))
	}
	ch <- prometheus.MustNewConstHistogram(d, n, float64(n)*mean, buckets, lv...)
}

// summary emits the Go GC pause summary.
func (c *collector) summary(ch chan<- prometheus.Metric, t float64) {
	n := uint64(t/5) + 10
	q := map[float64]float64{0: 0.00002, 0.25: 0.00005, 0.5: 0.00008, 0.75: 0.00012, 1: 0.0009}
	ch <- prometheus.MustNewConstSummary(c.gcDuration, n, float64(n)*0.0001, q)
}

// String describes the node, e.g. for logs.
func (n Node) String() string {
	return fmt.Sprintf("%s (%s)", n.Pod, strings.ToLower(n.Role.String()))
}
