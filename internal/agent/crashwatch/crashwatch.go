// Package crashwatch picks up the panic artifacts banyand writes under its
// artifact root (--crash-source-dir) and keeps them as crash records for
// the proxy's StreamCrashDiagnostics (AGENT-NODE.md §8).
//
// banyand creates one sub-directory per recovered panic and writes
// panic.json into it last, with a plain (non-atomic) write. The Watcher
// watches the root and, once an artifact directory appears, that directory
// too, so the creation and every write of panic.json are seen as events
// rather than guessed by a timed rescan. A panic.json that does not decode
// yet (caught half-written) leaves only that artifact pending: it is tried
// again on its next event and on a short backoff, and never holds up other
// artifacts. A periodic rescan is the fallback for lost events and for a
// root that does not exist yet (the watch is retried on every rescan).
//
// An artifact is read once: its key (the directory name) stays known after
// it has been stored, and later changes are not re-read. The store is
// bounded by count and by bytes; the oldest records fall out first.
package crashwatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// PanicFile is the file banyand writes last into an artifact directory.
const PanicFile = "panic.json"

// Defaults applied by New to zero Options fields.
const (
	DefaultMaxArtifacts   = 128
	DefaultMaxBytes       = 16 << 20
	DefaultMaxRecordBytes = 1 << 20
	DefaultRescan         = 30 * time.Second
	DefaultRetry          = 100 * time.Millisecond
)

// Options configures a Watcher.
type Options struct {
	// Dir is banyand's artifact root, as given on the command line.
	Dir string
	// MaxArtifacts bounds the records kept; the oldest fall out first.
	MaxArtifacts int
	// MaxBytes bounds the records kept in all (protobuf size).
	MaxBytes int
	// MaxRecordBytes bounds one panic.json read; a larger one is kept as
	// an artifact without a record.
	MaxRecordBytes int64
	// Rescan is the interval of the fallback rescan of the whole root.
	Rescan time.Duration
	// Retry is the first wait before a pending artifact (panic.json
	// missing or not decodable yet) is tried again; it doubles up to
	// Rescan.
	Retry time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// pending is an artifact directory seen but not stored yet.
type pending struct {
	next  time.Time     // when to try again; zero: only on an event
	delay time.Duration // the backoff in force
}

// Watcher watches one artifact root. Records and Changed are safe for
// concurrent use; Run may be called once.
type Watcher struct {
	opts   Options
	logger *slog.Logger
	ready  chan struct{}

	// Owned by Run's goroutine.
	fsw     *fsnotify.Watcher
	watched map[string]bool // artifact directories with a watch of their own
	pending map[string]*pending

	cmds chan func() // run on Run's goroutine (tests)

	mu      sync.Mutex
	stored  int             // records stored in all
	known   map[string]bool // artifact names stored (also evicted ones)
	records []*fodcv1.StreamCrashDiagnosticsRequest
	sizes   []int
	total   int
	changed chan struct{}
}

// New returns a Watcher that has not started.
func New(opts Options) *Watcher {
	if opts.MaxArtifacts <= 0 {
		opts.MaxArtifacts = DefaultMaxArtifacts
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxRecordBytes <= 0 {
		opts.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if opts.Rescan <= 0 {
		opts.Rescan = DefaultRescan
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{
		opts:    opts,
		logger:  opts.Logger,
		ready:   make(chan struct{}),
		watched: make(map[string]bool),
		pending: make(map[string]*pending),
		known:   make(map[string]bool),
		changed: make(chan struct{}),
		cmds:    make(chan func()),
	}
}

// Stored returns how many records were stored in all, evicted ones
// included.
func (w *Watcher) Stored() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stored
}

// SourceEndpoint is the source_endpoint of the records: file://<dir>.
func (w *Watcher) SourceEndpoint() string { return "file://" + w.opts.Dir }

// Ready is closed once the first scan is done.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Records returns the stored records, oldest first. The messages are shared
// and must not be modified.
func (w *Watcher) Records() []*fodcv1.StreamCrashDiagnosticsRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.records)
}

// Changed returns a channel closed at the next change of the records.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer func() {
		if w.fsw != nil {
			_ = w.fsw.Close()
		}
	}()
	w.ensureWatch()
	w.scan()
	close(w.ready)

	rescan := time.NewTicker(w.opts.Rescan)
	defer rescan.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		w.armRetry(retry)
		var events chan fsnotify.Event
		var errs chan error
		if w.fsw != nil {
			events, errs = w.fsw.Events, w.fsw.Errors
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rescan.C:
			w.ensureWatch()
			w.scan()
		case <-retry.C:
			w.retryDue()
		case f := <-w.cmds:
			f()
		case ev, ok := <-events:
			if !ok {
				w.fsw = nil
				continue
			}
			w.event(ev)
		case err, ok := <-errs:
			if !ok {
				w.fsw = nil
				continue
			}
			// An overflow loses events: rescan now.
			w.logger.Debug("Crash directory watch error, rescanning", "dir", w.opts.Dir, "err", err)
			w.scan()
		}
	}
}

// ensureWatch sets up the watch of the root when there is none.
func (w *Watcher) ensureWatch() {
	if w.fsw != nil {
		return
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.logger.Warn("Cannot watch crash directory, rescanning only", "dir", w.opts.Dir, "err", err)
		return
	}
	if err := fsw.Add(w.opts.Dir); err != nil {
		_ = fsw.Close()
		w.logger.Debug("Cannot watch crash directory yet, rescanning", "dir", w.opts.Dir, "err", err)
		return
	}
	w.fsw = fsw
	clear(w.watched)
}

// event handles one filesystem event under the root.
func (w *Watcher) event(ev fsnotify.Event) {
	if ev.Op == fsnotify.Chmod {
		return
	}
	parent := filepath.Dir(ev.Name)
	switch {
	case filepath.Clean(parent) == filepath.Clean(w.opts.Dir):
		// The root changed: an artifact directory was created, or renamed
		// into place.
		w.artifact(filepath.Base(ev.Name), true)
	case filepath.Clean(filepath.Dir(parent)) == filepath.Clean(w.opts.Dir):
		// A file inside an artifact directory changed.
		w.artifact(filepath.Base(parent), true)
	}
}

// scan looks at every artifact directory of the root.
func (w *Watcher) scan() {
	ents, err := os.ReadDir(w.opts.Dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			w.logger.Debug("Cannot read crash directory", "dir", w.opts.Dir, "err", err)
		}
		return
	}
	present := make(map[string]bool, len(ents))
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		present[e.Name()] = true
		w.artifact(e.Name(), true)
	}
	for name := range w.pending {
		if !present[name] {
			w.forget(name)
		}
	}
	w.mu.Lock()
	for name := range w.known {
		if !present[name] && !w.storedLocked(name) {
			delete(w.known, name)
		}
	}
	w.mu.Unlock()
}

func (w *Watcher) storedLocked(name string) bool {
	return slices.ContainsFunc(w.records, func(r *fodcv1.StreamCrashDiagnosticsRequest) bool { return r.GetArtifactDir() == name })
}

// forget drops a pending artifact and its watch.
func (w *Watcher) forget(name string) {
	delete(w.pending, name)
	if w.watched[name] {
		delete(w.watched, name)
		if w.fsw != nil {
			_ = w.fsw.Remove(filepath.Join(w.opts.Dir, name))
		}
	}
}

// artifact tries to store the artifact directory name; fresh resets its
// backoff (an event or a rescan, not a retry).
func (w *Watcher) artifact(name string, fresh bool) {
	w.mu.Lock()
	done := w.known[name]
	w.mu.Unlock()
	if done {
		return
	}
	dir := filepath.Join(w.opts.Dir, name)
	if st, err := os.Lstat(dir); err != nil || !st.IsDir() {
		w.forget(name)
		return
	}
	if w.fsw != nil && !w.watched[name] {
		// Watch before reading: a write that lands after the read below
		// is then an event.
		if err := w.fsw.Add(dir); err == nil {
			w.watched[name] = true
		}
	}
	rec, err := w.read(name)
	if err != nil {
		p := w.pending[name]
		if p == nil {
			p = &pending{}
			w.pending[name] = p
		}
		if fresh || p.delay == 0 {
			p.delay = w.opts.Retry
		} else {
			p.delay = min(2*p.delay, w.opts.Rescan)
		}
		if errors.Is(err, errNoPanicFile) && w.watched[name] {
			p.next = time.Time{} // its creation will be an event
		} else {
			p.next = w.opts.Now().Add(p.delay)
		}
		w.logger.Debug("Crash artifact not complete yet", "artifact", name, "err", err)
		return
	}
	w.forget(name)
	w.store(rec)
}

// retryDue tries the pending artifacts whose time has come.
func (w *Watcher) retryDue() {
	now := w.opts.Now()
	for name, p := range w.pending {
		if !p.next.IsZero() && !now.Before(p.next) {
			w.artifact(name, false)
		}
	}
}

// armRetry sets t to the earliest pending retry.
func (w *Watcher) armRetry(t *time.Timer) {
	var next time.Time
	for _, p := range w.pending {
		if !p.next.IsZero() && (next.IsZero() || p.next.Before(next)) {
			next = p.next
		}
	}
	d := time.Hour
	if !next.IsZero() {
		d = max(next.Sub(w.opts.Now()), time.Millisecond)
	}
	t.Reset(d)
}

var errNoPanicFile = errors.New("no " + PanicFile + " yet")

// read builds the record of one artifact directory.
func (w *Watcher) read(name string) (*fodcv1.StreamCrashDiagnosticsRequest, error) {
	dir := filepath.Join(w.opts.Dir, name)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	hasPanic := false
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		files = append(files, e.Name())
		hasPanic = hasPanic || e.Name() == PanicFile
	}
	if !hasPanic {
		return nil, errNoPanicFile
	}
	slices.Sort(files)
	rec := &fodcv1.StreamCrashDiagnosticsRequest{
		SourceEndpoint: w.SourceEndpoint(),
		ArtifactDir:    name,
		Files:          files,
	}
	f, err := os.Open(filepath.Join(dir, PanicFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, w.opts.MaxRecordBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > w.opts.MaxRecordBytes {
		w.logger.Warn("Crash record too large, kept without its content", "artifact", name, "limit_bytes", w.opts.MaxRecordBytes)
		return rec, nil
	}
	pr, err := decodePanic(body)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", PanicFile, err)
	}
	rec.PanicRecord = pr
	return rec, nil
}

// store keeps rec, evicting the oldest records beyond the bounds.
func (w *Watcher) store(rec *fodcv1.StreamCrashDiagnosticsRequest) {
	rec.FetchedAt = timestamppb.New(w.opts.Now().UTC())
	size := proto.Size(rec)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.known[rec.GetArtifactDir()] = true
	w.stored++
	if size > w.opts.MaxBytes {
		w.logger.Warn("Crash record larger than the whole budget, dropped", "artifact", rec.GetArtifactDir(), "bytes", size)
		return
	}
	w.records = append(w.records, rec)
	w.sizes = append(w.sizes, size)
	w.total += size
	for len(w.records) > w.opts.MaxArtifacts || w.total > w.opts.MaxBytes {
		w.total -= w.sizes[0]
		w.records, w.sizes = w.records[1:], w.sizes[1:]
	}
	w.logger.Info("Crash artifact picked up", "artifact", rec.GetArtifactDir(), "component", rec.GetPanicRecord().GetComponent())
	close(w.changed)
	w.changed = make(chan struct{})
}

// panicJSON is banyand's panic.json (AGENT-NODE.md §8.1).
type panicJSON struct {
	ProcessMetadata map[string]string `json:"processMetadata"`
	Component       string            `json:"component"`
	PanicValue      string            `json:"panicValue"`
	GoroutineStack  string            `json:"goroutineStack"`
	OccurredAt      *time.Time        `json:"occurredAt"`
	Breadcrumbs     []struct {
		Fields    map[string]string `json:"fields"`
		Time      *time.Time        `json:"time"`
		Stage     string            `json:"stage"`
		Component string            `json:"component"`
	} `json:"breadcrumbs"`
	Recovered bool `json:"recovered"`
}

// decodePanic decodes panic.json; a record with none of occurredAt,
// component, panicValue and goroutineStack is nil.
func decodePanic(body []byte) (*fodcv1.CrashPanicRecord, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("empty file")
	}
	var p panicJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data")
	}
	if (p.OccurredAt == nil || p.OccurredAt.IsZero()) && p.Component == "" && p.PanicValue == "" && p.GoroutineStack == "" {
		return nil, nil
	}
	r := &fodcv1.CrashPanicRecord{
		Component:       p.Component,
		PanicValue:      p.PanicValue,
		Recovered:       p.Recovered,
		GoroutineStack:  p.GoroutineStack,
		ProcessMetadata: p.ProcessMetadata,
	}
	if p.OccurredAt != nil {
		r.OccurredAt = timestamppb.New(*p.OccurredAt)
	}
	for _, b := range p.Breadcrumbs {
		cb := &fodcv1.CrashBreadcrumb{Stage: b.Stage, Component: b.Component, Fields: b.Fields}
		if b.Time != nil {
			cb.Time = timestamppb.New(*b.Time)
		}
		r.Breadcrumbs = append(r.Breadcrumbs, cb)
	}
	return r, nil
}
