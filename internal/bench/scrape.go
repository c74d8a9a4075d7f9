package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fodc-go/fodc/internal/timeutil"
)

// Endpoints the scrapers can drive.
const (
	EndpointMetrics        = "metrics"
	EndpointMetricsWindows = "metrics-windows"
)

// Headers our proxy sets on collection answers.
const (
	headerSelected = "X-Fodc-Agents-Selected"
	headerAnswered = "X-Fodc-Agents-Answered"
	// scrapeTimeoutHeader is how Prometheus tells its scrape timeout.
	scrapeTimeoutHeader = "X-Prometheus-Scrape-Timeout-Seconds"
)

// ScrapeConfig configures the scrapers.
type ScrapeConfig struct {
	// BaseURL is the proxy's HTTP address, like http://127.0.0.1:17901.
	BaseURL string
	// Endpoints are taken in turn by each scraper.
	Endpoints []string
	// Query is appended to every request, like role=ROLE_DATA.
	Query string
	// WindowSpan is the length of the window asked of /metrics-windows
	// (ending now).
	WindowSpan time.Duration
	// Concurrency is the number of scrapers.
	Concurrency int
	// Count stops after this many scrapes in all (0: Duration decides).
	Count int
	// Duration stops starting scrapes after this long (0: Count decides).
	Duration time.Duration
	// Interval makes each scraper start a scrape every Interval, like
	// Prometheus, instead of back to back; Stagger then offsets scraper i
	// by i*Interval/Concurrency instead of starting all at once.
	Interval time.Duration
	Stagger  bool
	// Timeout bounds one scrape; it is also sent as
	// X-Prometheus-Scrape-Timeout-Seconds.
	Timeout time.Duration
}

// scrapeResult is one scrape.
type scrapeResult struct {
	endpoint string
	latency  time.Duration
	bytes    int64
	series   int64 // series of the simulated agents (name starts with MetricPrefix)
	points   int64 // window points (metrics-windows), or series for metrics
	// alloc is the proxy's own go_memstats_alloc_bytes_total in a
	// /metrics answer (our proxy's unfiltered answers carry it), when
	// hasAlloc.
	alloc    float64
	hasAlloc bool
	partial  bool
	err      error
}

// scrape runs the scrapers and returns every result in completion order.
func scrape(ctx context.Context, cfg ScrapeConfig, client *http.Client) []scrapeResult {
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var (
		started atomic.Int64
		mu      sync.Mutex
		results []scrapeResult
		wg      sync.WaitGroup
	)
	for w := range cfg.Concurrency {
		wg.Go(func() {
			var tick *time.Ticker
			if cfg.Interval > 0 {
				if cfg.Stagger {
					if !timeutil.Sleep(ctx, time.Duration(w)*cfg.Interval/time.Duration(cfg.Concurrency)) {
						return
					}
				}
				tick = time.NewTicker(cfg.Interval)
				defer tick.Stop()
			}
			for i := 0; ; i++ {
				if ctx.Err() != nil {
					return
				}
				n := started.Add(1)
				if cfg.Count > 0 && n > int64(cfg.Count) {
					return
				}
				ep := cfg.Endpoints[(w+i)%len(cfg.Endpoints)]
				r := scrapeOnce(ctx, cfg, client, ep)
				if r.err != nil && ctx.Err() != nil && cfg.Count == 0 {
					return // cut off by the end of the run: not an error
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if tick != nil {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			}
		})
	}
	wg.Wait()
	return results
}

// requestURL builds the URL of one scrape of ep.
func requestURL(cfg ScrapeConfig, ep string, now time.Time) string {
	q, _ := url.ParseQuery(cfg.Query)
	if q == nil {
		q = url.Values{}
	}
	if ep == EndpointMetricsWindows {
		q.Set("start_time", now.Add(-cfg.WindowSpan).UTC().Format(time.RFC3339))
		q.Set("end_time", now.UTC().Format(time.RFC3339))
	}
	u := cfg.BaseURL + "/" + ep
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func scrapeOnce(ctx context.Context, cfg ScrapeConfig, client *http.Client, ep string) (r scrapeResult) {
	r.endpoint = ep
	start := time.Now()
	defer func() { r.latency = time.Since(start) }()
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, requestURL(cfg, ep, start), nil)
	if err != nil {
		r.err = err
		return r
	}
	if cfg.Timeout > 0 {
		req.Header.Set(scrapeTimeoutHeader, strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64))
	}
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer func() { _ = resp.Body.Close() }()
	body := &countingReader{r: resp.Body}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, body)
		r.bytes = body.n
		r.err = fmt.Errorf("GET /%s: status %s", ep, resp.Status)
		return r
	}
	var upZero int64
	if ep == EndpointMetricsWindows {
		r.series, r.points, err = countWindows(body)
	} else {
		var c textCounts
		c, err = countText(body)
		r.series, r.points, upZero, r.alloc, r.hasAlloc = c.series, c.series, c.upZero, c.alloc, c.hasAlloc
	}
	r.bytes = body.n
	if err != nil {
		r.err = fmt.Errorf("read /%s answer: %w", ep, err)
		return r
	}
	if sel, ans := resp.Header.Get(headerSelected), resp.Header.Get(headerAnswered); sel != "" && ans != "" {
		s, err1 := strconv.Atoi(sel)
		a, err2 := strconv.Atoi(ans)
		r.partial = err1 == nil && err2 == nil && a < s
	} else {
		r.partial = upZero > 0
	}
	return r
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var (
	prefixBytes = []byte(MetricPrefix)
	agentUpLine = []byte("fodc_agent_up")
	allocLine   = []byte("go_memstats_alloc_bytes_total ")
)

// textCounts is what countText finds in a text exposition.
type textCounts struct {
	series, upZero int64
	alloc          float64
	hasAlloc       bool
}

// countText counts the sample lines of simulated series in a text
// exposition and the fodc_agent_up lines whose value is 0, and reads the
// proxy's go_memstats_alloc_bytes_total when the answer has it.
func countText(r io.Reader) (c textCounts, err error) {
	br := bufio.NewReaderSize(r, 256<<10)
	long := false // inside a line longer than the buffer
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && !long {
			switch {
			case bytes.HasPrefix(line, prefixBytes):
				c.series++
			case bytes.HasPrefix(line, agentUpLine) && bytes.HasSuffix(bytes.TrimRight(line, "\n"), []byte(" 0")):
				c.upZero++
			case bytes.HasPrefix(line, allocLine):
				v, perr := strconv.ParseFloat(string(bytes.TrimSpace(line[len(allocLine):])), 64)
				c.alloc, c.hasAlloc = v, perr == nil
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			long = true
			continue
		case errors.Is(err, io.EOF):
			return c, nil
		case err != nil:
			return c, err
		}
		long = false
	}
}

// windowElement is the part of a /metrics-windows element the bench reads.
type windowElement struct {
	Name string            `json:"name"`
	Data []json.RawMessage `json:"data"`
}

// countWindows counts the simulated series and their points in a
// /metrics-windows JSON array.
func countWindows(r io.Reader) (series, points int64, err error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	tok, err := dec.Token()
	if err != nil {
		return 0, 0, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return 0, 0, fmt.Errorf("want a JSON array, got %v", tok)
	}
	for dec.More() {
		var e windowElement
		if err := dec.Decode(&e); err != nil {
			return series, points, err
		}
		if len(e.Name) >= len(MetricPrefix) && e.Name[:len(MetricPrefix)] == MetricPrefix {
			series++
			points += int64(len(e.Data))
		}
	}
	_, err = dec.Token()
	return series, points, err
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func sortedLatencies(rs []scrapeResult) []time.Duration {
	out := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.latency)
	}
	slices.Sort(out)
	return out
}
