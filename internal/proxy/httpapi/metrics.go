package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/render"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// metricsAnswer is one /metrics answer. Identical requests that arrive
// while it is being collected share it: one round of agent commands, one
// decoding and one rendering for all of them. An answer that goes to one
// request only is rendered straight into that request's response (through
// its compressor), never held whole: at a million series the rendered
// text is 143 MiB, more than the collected series themselves.
type metricsAnswer struct {
	contentType        string
	format             string
	key                string
	selected, answered int

	packs         []*series.Packed // the collected series, until rendered
	render        sync.Once        // renders into encodedBodies, or is taken by a stream
	encodedBodies                  // the shared rendered answer, compressed once per coding asked for
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
	ticket := a.answers.Join(key, func(context.Context) (*metricsAnswer, error) {
		release, ok := a.admit(classMetrics)
		if !ok {
			return nil, errBusy
		}
		defer release()
		ans := a.collectMetrics(f, b, format, key)
		if a.answers.Waiting(key) > 1 {
			// Shared: render once now, within the admitted work.
			a.renderShared(ans)
		}
		return ans, nil
	})
	ans, err := ticket.Wait(ctx)
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
	a.metrics.answers.WithLabelValues(format, enc).Inc()
	if ticket.Sole() {
		// Only this request gets the answer: render it into the response
		// as it goes. This happens after the admitted collection, on the
		// request's own goroutine, once per request; its write deadline
		// bounds it.
		streamed := false
		ans.render.Do(func() {
			streamed = true
			w.Header().Add("Vary", "Accept")
			cw := compressTo(w, enc)
			err := a.renderTo(cw, ans)
			if cerr := cw.close(); err == nil {
				err = cerr
			}
			if err != nil {
				a.logger.Debug("Writing /metrics answer", "err", err)
			}
		})
		if streamed {
			return
		}
	}
	a.renderShared(ans)
	w.Header().Add("Vary", "Accept, Accept-Encoding")
	if enc != encodingIdentity {
		w.Header().Set("Content-Encoding", enc)
	}
	body := ans.body(enc)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
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

// collectMetrics collects the latest values within budget b, with the
// per-agent status series and, when unfiltered, the proxy's own series.
func (a *API) collectMetrics(f registry.Filter, b time.Duration, format string, key string) *metricsAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), b)
	defer cancel()
	results := a.opts.Scraper.Scrape(ctx, f, series.Window{})
	ans := &metricsAnswer{selected: len(results), contentType: contentTypeOf(format), format: format, key: key}
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
	ans.packs = packs
	return ans
}

// renderTo writes ans' series to w, once, and lets go of them.
func (a *API) renderTo(w io.Writer, ans *metricsAnswer) error {
	st, err := render.WritePackedText(w, ans.packs, ans.format == formatOpenMetrics)
	a.countRemoved(st)
	// The answer is written: nothing refers to the packs any more.
	for _, p := range ans.packs {
		p.Recycle()
	}
	ans.packs = nil
	return err
}

// renderShared renders ans once into its shared body, unless a stream
// took it. The body is written once into a buffer sized after the
// previous answer of the same query (plus a margin), instead of growing
// and zeroing it from empty on every scrape.
func (a *API) renderShared(ans *metricsAnswer) {
	ans.render.Do(func() {
		var buf bytes.Buffer
		buf.Grow(a.sizes.guess(ans.key))
		if err := a.renderTo(&buf, ans); err != nil { // a bytes.Buffer does not fail; keep what was written
			a.logger.Warn("Rendering /metrics answer", "err", err)
		}
		a.sizes.note(ans.key, buf.Len())
		ans.plain = buf.Bytes()
	})
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
