package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/render"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// metricsAnswer is one rendered /metrics answer. Identical requests that
// arrive while it is being produced share it: one round of agent commands,
// one enrichment and one rendering for all of them.
type metricsAnswer struct {
	encodedBodies      // the rendered answer, compressed once per coding asked for
	contentType        string
	selected, answered int
}

func (a *API) serveMetrics(w http.ResponseWriter, r *http.Request) {
	q, err := query(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	f, err := parseFilter(q)
	if err != nil {
		respondErr(w, err)
		return
	}
	format, enc := negotiateFormat(r), negotiateEncoding(r)
	if r.Method == http.MethodHead {
		// A HEAD never starts a collection: the headers a GET would carry
		// up to the collection's results.
		w.Header().Set("Content-Type", contentTypeOf(format))
		return
	}
	b := budget(r, a.opts.CollectTimeout)
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(b + a.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		a.logger.Debug("Could not extend write deadline", "err", err)
	}
	// The answer is produced on its own deadline, so that a caller that
	// goes away does not cut it short for the others.
	ctx, cancel := context.WithTimeout(r.Context(), b+a.opts.WriteTimeout)
	defer cancel()
	key := format + "?" + q.Encode()
	ans, err := a.answers.Do(ctx, key, func(context.Context) (*metricsAnswer, error) {
		release, ok := a.admit(classMetrics)
		if !ok {
			return nil, errBusy
		}
		defer release()
		return a.renderMetrics(f, b, format, key), nil
	})
	if errors.Is(err, errBusy) {
		refuseBusy(w)
		return
	}
	if err != nil {
		if r.Context().Err() == nil {
			writeError(w, http.StatusServiceUnavailable, "the shared collection this request joined did not finish within its budget")
		}
		return
	}
	w.Header().Set("Content-Type", ans.contentType)
	w.Header().Set("X-Fodc-Agents-Selected", strconv.Itoa(ans.selected))
	w.Header().Set("X-Fodc-Agents-Answered", strconv.Itoa(ans.answered))
	w.Header().Add("Vary", "Accept, Accept-Encoding")
	if enc != encodingIdentity {
		w.Header().Set("Content-Encoding", enc)
	}
	body := ans.body(enc)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	a.metrics.answers.WithLabelValues(format, enc).Inc()
	if _, err := w.Write(body); err != nil {
		a.logger.Debug("Writing /metrics answer", "err", err)
	}
}

func contentTypeOf(format string) string {
	if format == formatOpenMetrics {
		return render.OpenMetricsContentType
	}
	return render.TextContentType
}

// renderMetrics collects the latest values within budget b and renders
// them with the per-agent status series and, when unfiltered, the proxy's
// own series.
func (a *API) renderMetrics(f registry.Filter, b time.Duration, format string, key string) *metricsAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), b)
	defer cancel()
	results := a.opts.Scraper.Scrape(ctx, f, series.Window{})
	ans := &metricsAnswer{selected: len(results), contentType: contentTypeOf(format)}
	packs := make([]*series.Packed, 0, len(results)+5)
	for i := range results {
		if results[i].Up() {
			ans.answered++
			packs = append(packs, results[i].Packed)
		}
	}
	packs = append(packs, series.Pack(agentStatusBatch(results)))
	if !isFiltered(f) && a.opts.Cluster != nil {
		packs = append(packs,
			series.Pack(consistencyBatch(a.opts.Cluster.ConsistencyStatuses())),
			series.Pack(configDifferencesBatch(a.opts.Cluster.ConfigDifferences())),
			series.Pack(nodesWithoutAgentBatch(a.opts.Cluster.NodesWithoutAgentByRole())))
	}
	if !isFiltered(f) && a.opts.Gatherer != nil {
		mfs, err := a.opts.Gatherer.Gather()
		if err != nil {
			a.logger.Warn("Gathering own metrics", "err", err)
		}
		packs = append(packs, series.Pack(gatheredBatch(mfs)))
	}
	// The answer is written once into a buffer sized after the previous
	// answer of the same query (plus a margin), instead of growing and
	// zeroing it from empty on every scrape.
	var buf bytes.Buffer
	buf.Grow(a.sizes.guess(key))
	defer func() { a.sizes.note(key, buf.Len()) }()
	st, err := render.WritePackedText(&buf, packs, format == formatOpenMetrics)
	// The answer is written: nothing refers to the packs any more.
	for _, p := range packs {
		p.Recycle()
	}
	a.countRemoved(st)
	if err != nil { // a bytes.Buffer does not fail; keep what was written
		a.logger.Warn("Rendering /metrics answer", "err", err)
	}
	ans.plain = buf.Bytes()
	return ans
}

func (a *API) metricsWindows(w http.ResponseWriter, r *http.Request) {
	q, err := query(r)
	if err != nil {
		respondErr(w, err)
		return
	}
	f, err := parseFilter(q)
	if err != nil {
		respondErr(w, err)
		return
	}
	win, err := parseWindow(q, a.now())
	if err != nil {
		respondErr(w, err)
		return
	}
	results := a.collect(w, r, f, win)
	batches := make([]series.Batch, 0, len(results))
	for i := range results {
		if results[i].Up() {
			batches = append(batches, results[i].Batch)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	cw := compressTo(w, negotiateEncoding(r))
	st, err := render.WriteWindows(cw, batches) // buffers its own writes
	if cerr := cw.close(); err == nil {
		err = cerr
	}
	a.countRemoved(st)
	if err != nil {
		a.logger.Debug("Writing /metrics-windows answer", "err", err)
	}
}

// answerSizes remembers the size of the last answer per query, to size the
// next one's buffer. It holds at most maxSizedQueries queries; beyond that
// it starts over (a scraper asks the same few queries again and again).
type answerSizes struct {
	mu    sync.Mutex
	sizes map[string]int
}

const maxSizedQueries = 256

// guess returns the size to allocate for key's next answer: the last one
// plus an eighth, or a small default for a query not seen yet.
func (s *answerSizes) guess(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.sizes[key]; ok {
		return n + n/8
	}
	return 64 << 10
}

func (s *answerSizes) note(key string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sizes == nil || len(s.sizes) >= maxSizedQueries {
		s.sizes = make(map[string]int)
	}
	s.sizes[key] = n
}
