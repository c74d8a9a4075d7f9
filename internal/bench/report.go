package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run. Durations are in seconds and sizes in
// bytes.
type Report struct {
	Config    ConfigSummary `json:"config"`
	ProxyAddr string        `json:"proxy_addr"`
	HTTPURL   string        `json:"http_url"`
	// Spawned is true when the bench started the proxy itself.
	Spawned bool `json:"spawned"`
	// ReplyBytes is the size of one agent's latest reply on the wire.
	ReplyBytes  int `json:"reply_bytes"`
	Connections int `json:"grpc_connections"`
	// PrepareSeconds is the time to build payloads and connections;
	// ConnectSeconds the time until every agent was registered.
	PrepareSeconds float64 `json:"prepare_seconds"`
	ConnectSeconds float64 `json:"connect_seconds"`
	// MeasureSeconds is the wall time of the measurement.
	MeasureSeconds float64          `json:"measure_seconds"`
	Endpoints      []EndpointReport `json:"endpoints"`
	Agents         SimStats         `json:"agents"`
	// HeartbeatsMeasured is the number of heartbeats sent during the
	// measurement.
	HeartbeatsMeasured int64        `json:"heartbeats_measured"`
	Proxy              *ProxyReport `json:"proxy,omitempty"`
}

// ConfigSummary repeats the settings that shape the load.
type ConfigSummary struct {
	Agents         int     `json:"agents"`
	SeriesPerAgent int     `json:"series_per_agent"`
	Families       int     `json:"families"`
	Labels         int     `json:"labels"`
	Cardinality    int     `json:"label_cardinality"`
	HistogramShare float64 `json:"histogram_share"`
	Buckets        int     `json:"buckets"`
	AgentVersion   string  `json:"agent_version"`
	ReplyLatency   float64 `json:"reply_latency_seconds"`
	ReplyJitter    float64 `json:"reply_jitter_seconds"`
	HungFraction   float64 `json:"hung_fraction"`
	FlapFraction   float64 `json:"flap_fraction"`
	HistoryDepth   int     `json:"history_depth"`
	AgentsPerConn  int     `json:"agents_per_conn"`
	Scrapers       int     `json:"scrapers"`
	Scrapes        int     `json:"scrapes"`
	Duration       float64 `json:"duration_seconds"`
	Interval       float64 `json:"interval_seconds"`
	Endpoints      string  `json:"endpoints"`
	Query          string  `json:"query"`
}

func summarize(c Config) ConfigSummary {
	return ConfigSummary{
		Agents: c.Agents, SeriesPerAgent: c.Shape.Series, Families: c.Shape.Families,
		Labels: c.Shape.Labels, Cardinality: c.Shape.Cardinality, HistogramShare: c.Shape.HistogramShare,
		Buckets: c.Shape.Buckets, AgentVersion: c.Version,
		ReplyLatency: c.ReplyLatency.Seconds(), ReplyJitter: c.ReplyJitter.Seconds(),
		HungFraction: c.HungFraction, FlapFraction: c.FlapFraction, HistoryDepth: c.HistoryDepth,
		AgentsPerConn: c.AgentsPerConn, Scrapers: c.Scrapers, Scrapes: c.Scrapes,
		Duration: c.Duration.Seconds(), Interval: c.Interval.Seconds(),
		Endpoints: strings.Join(c.Endpoints, ","), Query: c.Query,
	}
}

// EndpointReport summarises the scrapes of one endpoint.
type EndpointReport struct {
	Endpoint string `json:"endpoint"`
	Scrapes  int    `json:"scrapes"`
	Errors   int    `json:"errors"`
	// Partial counts answers that lacked some agent (the proxy's
	// X-Fodc-Agents-Answered < X-Fodc-Agents-Selected, or fodc_agent_up 0
	// lines when it sends no such headers).
	Partial int `json:"partial"`
	// Short counts successful answers with fewer simulated series than
	// ExpectedSeries (agents that are not hung × series per agent).
	Short          int     `json:"short"`
	ExpectedSeries int     `json:"expected_series"`
	P50            float64 `json:"p50_seconds"`
	P95            float64 `json:"p95_seconds"`
	P99            float64 `json:"p99_seconds"`
	Max            float64 `json:"max_seconds"`
	// SeriesMin and SeriesMean are simulated series per successful answer;
	// Points counts window points (metrics-windows) or series (metrics)
	// in all answers.
	SeriesMin  int64   `json:"series_min"`
	SeriesMean float64 `json:"series_mean"`
	Points     int64   `json:"points"`
	// SeriesPerSecond is every answer's simulated series over the wall
	// time of the measurement; ScrapeSeriesPerSecond is series over the
	// time spent inside scrapes (one scrape's own speed).
	SeriesPerSecond       float64 `json:"series_per_second"`
	ScrapeSeriesPerSecond float64 `json:"scrape_series_per_second"`
	BytesTotal            int64   `json:"bytes_total"`
	BytesMean             float64 `json:"bytes_mean"`
	BytesMax              int64   `json:"bytes_max"`
	// ProxyAllocPerScrape is what the proxy allocated per answer, from
	// its own go_memstats_alloc_bytes_total in the first and last answer
	// that carry it (our proxy's unfiltered /metrics answers), and
	// ProxyAllocPerAnswerByte the same over BytesMean. Zero when fewer
	// than two answers carry it.
	ProxyAllocPerScrape     float64 `json:"proxy_alloc_bytes_per_scrape,omitempty"`
	ProxyAllocPerAnswerByte float64 `json:"proxy_alloc_per_answer_byte,omitempty"`
	FirstError              string  `json:"first_error,omitempty"`
}

// ProxyReport is what /proc says about the proxy process.
type ProxyReport struct {
	PID int `json:"pid"`
	// RSSBeforeAgents is the RSS when the bench started; RSSIdle the RSS
	// once every agent was registered and --settle has passed, just
	// before the measurement (with scrapers, after the readiness probe
	// and --warmup scrapes, whose garbage it may include).
	RSSBeforeAgents int64   `json:"rss_before_agents_bytes"`
	RSSIdle         int64   `json:"rss_idle_bytes"`
	RSSPerAgent     float64 `json:"rss_per_agent_bytes"`
	// PeakRSS is the largest RSS during the measurement.
	PeakRSS    int64  `json:"peak_rss_bytes"`
	PeakSource string `json:"peak_rss_source"`
	// PeakRSSPerResponse is PeakRSS over the largest answer.
	PeakRSSPerResponse float64 `json:"peak_rss_per_response"`
	// CPUSeconds is user+system time during the measurement; CPUCores
	// the same over the wall time.
	CPUSeconds          float64 `json:"cpu_seconds"`
	CPUCores            float64 `json:"cpu_cores"`
	CPUSecondsPerScrape float64 `json:"cpu_seconds_per_scrape"`
}

func summarizeScrapes(results []scrapeResult, endpoints []string, expected int, wall float64) []EndpointReport {
	var out []EndpointReport
	seen := map[string]bool{}
	for _, ep := range endpoints {
		if seen[ep] {
			continue
		}
		seen[ep] = true
		var rs []scrapeResult
		for _, r := range results {
			if r.endpoint == ep {
				rs = append(rs, r)
			}
		}
		e := EndpointReport{Endpoint: ep, Scrapes: len(rs), ExpectedSeries: expected, SeriesMin: -1}
		var inside time.Duration
		var series int64
		ok := 0
		allocs, allocLo, allocHi := 0, 0.0, 0.0
		for _, r := range rs {
			if r.err == nil && r.hasAlloc {
				if allocs == 0 || r.alloc < allocLo {
					allocLo = r.alloc
				}
				allocHi = max(allocHi, r.alloc)
				allocs++
			}
			e.BytesTotal += r.bytes
			e.BytesMax = max(e.BytesMax, r.bytes)
			if r.err != nil {
				e.Errors++
				if e.FirstError == "" {
					e.FirstError = r.err.Error()
				}
				continue
			}
			ok++
			inside += r.latency
			series += r.series
			e.Points += r.points
			if e.SeriesMin < 0 || r.series < e.SeriesMin {
				e.SeriesMin = r.series
			}
			if r.partial {
				e.Partial++
			}
			if r.series < int64(expected) {
				e.Short++
			}
		}
		if e.SeriesMin < 0 {
			e.SeriesMin = 0
		}
		lat := sortedLatencies(rs)
		e.P50, e.P95, e.P99 = percentile(lat, 50).Seconds(), percentile(lat, 95).Seconds(), percentile(lat, 99).Seconds()
		if len(lat) > 0 {
			e.Max = lat[len(lat)-1].Seconds()
		}
		if ok > 0 {
			e.SeriesMean = float64(series) / float64(ok)
		}
		if len(rs) > 0 {
			e.BytesMean = float64(e.BytesTotal) / float64(len(rs))
		}
		if wall > 0 {
			e.SeriesPerSecond = float64(series) / wall
		}
		if allocs >= 2 {
			// The counter is read while each answer is collected, so the
			// span between the first and the last covers allocs-1 scrapes.
			e.ProxyAllocPerScrape = (allocHi - allocLo) / float64(allocs-1)
			if e.BytesMean > 0 {
				e.ProxyAllocPerAnswerByte = e.ProxyAllocPerScrape / e.BytesMean
			}
		}
		if inside > 0 {
			e.ScrapeSeriesPerSecond = float64(series) / inside.Seconds()
		}
		out = append(out, e)
	}
	return out
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r for people.
func (r *Report) WriteText(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "fodc-bench: %d agents (%s) x %d series: %d families, %d labels x %d values, %.0f%% histograms of %d buckets\n",
		c.Agents, c.AgentVersion, c.SeriesPerAgent, c.Families, c.Labels, c.Cardinality, c.HistogramShare*100, c.Buckets)
	if c.ReplyLatency > 0 || c.ReplyJitter > 0 || c.HungFraction > 0 || c.FlapFraction > 0 {
		fmt.Fprintf(&b, "faults: reply latency %s + up to %s, %.1f%% hung, %.1f%% flapping\n",
			secs(c.ReplyLatency), secs(c.ReplyJitter), c.HungFraction*100, c.FlapFraction*100)
	}
	spawned := ""
	if r.Spawned {
		spawned = " (spawned)"
	}
	fmt.Fprintf(&b, "proxy%s: grpc %s, http %s\n", spawned, r.ProxyAddr, r.HTTPURL)
	fmt.Fprintf(&b, "setup: %s per agent reply, %d gRPC connections, prepared in %s, all registered in %s\n",
		size(float64(r.ReplyBytes)), r.Connections, secs(r.PrepareSeconds), secs(r.ConnectSeconds))
	mode := fmt.Sprintf("%d scraper(s)", c.Scrapers)
	if c.Scrapers == 0 {
		mode = "idle, no scrapes"
	}
	if c.Interval > 0 {
		mode += fmt.Sprintf(", one scrape every %s each", secs(c.Interval))
	}
	if c.Query != "" {
		mode += ", query " + c.Query
	}
	fmt.Fprintf(&b, "measured %s: %s\n", secs(r.MeasureSeconds), mode)
	if len(r.Endpoints) > 0 {
		b.WriteByte('\n')
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "endpoint\tscrapes\terrors\tpartial\tshort\tp50\tp95\tp99\tmax\tseries/scrape\tseries/s\tscrape series/s\tbytes/scrape\t")
		for _, e := range r.Endpoints {
			fmt.Fprintf(tw, "/%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t\n",
				e.Endpoint, e.Scrapes, e.Errors, e.Partial, e.Short,
				secs(e.P50), secs(e.P95), secs(e.P99), secs(e.Max),
				e.SeriesMean, count(e.SeriesPerSecond), count(e.ScrapeSeriesPerSecond), size(e.BytesMean))
		}
		_ = tw.Flush()
		for _, e := range r.Endpoints {
			if e.FirstError != "" {
				fmt.Fprintf(&b, "first error on /%s: %s\n", e.Endpoint, e.FirstError)
			}
			if e.ProxyAllocPerScrape > 0 {
				fmt.Fprintf(&b, "/%s: the proxy allocated %s per scrape = %.2fx the answer (its go_memstats_alloc_bytes_total in the answers)\n",
					e.Endpoint, size(e.ProxyAllocPerScrape), e.ProxyAllocPerAnswerByte)
			}
		}
		b.WriteByte('\n')
	}
	if p := r.Proxy; p != nil {
		fmt.Fprintf(&b, "proxy pid %d: RSS %s before agents, %s with agents idle (%s per agent)\n",
			p.PID, size(float64(p.RSSBeforeAgents)), size(float64(p.RSSIdle)), size(p.RSSPerAgent))
		fmt.Fprintf(&b, "  measurement: peak RSS %s (%s)", size(float64(p.PeakRSS)), p.PeakSource)
		if p.PeakRSSPerResponse > 0 {
			fmt.Fprintf(&b, " = %.2fx the largest answer", p.PeakRSSPerResponse)
		}
		fmt.Fprintf(&b, "; CPU %s = %.3f cores", secs(p.CPUSeconds), p.CPUCores)
		if p.CPUSecondsPerScrape > 0 {
			fmt.Fprintf(&b, ", %s per scrape", secs(p.CPUSecondsPerScrape))
		}
		b.WriteByte('\n')
	}
	a := r.Agents
	fmt.Fprintf(&b, "agents: %d established, %d registrations, %d failed attempts; %d heartbeats (%d during measurement, %d errors, every %s); %d latest and %d window replies; %d commands left unanswered\n",
		a.Established, a.Registrations, a.FailedAttempts, a.Heartbeats, r.HeartbeatsMeasured, a.HeartbeatErrors,
		a.HeartbeatInterval, a.LatestReplies, a.WindowReplies, a.IgnoredCommands)
	_, err := io.WriteString(w, b.String())
	return err
}

func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func size(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
