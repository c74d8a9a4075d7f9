// Package pressure captures heap and goroutine profiles of the node when
// its memory use crosses a threshold, keeps them on disk within a count
// and byte budget, and lists them for the proxy's StreamPressureProfiles
// (AGENT-NODE.md §9).
//
// The trigger is evaluated after every successful scrape from the node's
// gauges process_resident_memory_bytes and
// banyandb_memory_protector_cgroup_limit_bytes. Unlike the upstream agent
// it also works for nodes that export no limit: the limit then comes from
// Options.Limit (the node's cgroup, when readable), and an explicit
// Options.ThresholdBytes replaces the percentage altogether.
package pressure

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Defaults, the upstream agent's.
const (
	DefaultDir            = "/tmp/pressure-profiles"
	DefaultTriggerPercent = 75
	DefaultCooldown       = 5 * time.Minute
	DefaultMaxArtifacts   = 16
	DefaultMaxDiskBytes   = 512 << 20
	FetchTimeout          = 30 * time.Second
	// IDLayout formats a profile id from the trigger time (UTC).
	IDLayout = "20060102T150405.000000000Z"
	metaFile = "meta.json"
)

// Gauge names read from the node's metrics.
const (
	RSSMetric   = "process_resident_memory_bytes"
	LimitMetric = "banyandb_memory_protector_cgroup_limit_bytes"
)

// profiles are fetched in this order.
var profiles = []struct{ typ, path string }{
	{"heap", "/debug/pprof/heap"},
	{"goroutine", "/debug/pprof/goroutine?debug=0"},
}

// Options configures a Profiler.
type Options struct {
	Dir string
	// PprofBase is the node's pprof listener, e.g. http://localhost:6060.
	PprofBase      string
	TriggerPercent uint32
	// ThresholdBytes, when > 0, is the threshold, whatever the limit.
	ThresholdBytes uint64
	// Limit returns the node's memory limit when the gauge is missing or
	// 0 (e.g. read from its cgroup); nil or 0 means none.
	Limit        func() uint64
	Cooldown     time.Duration
	MaxArtifacts int
	MaxDiskBytes int64
	PodName      string
	Role         func() string
	Client       *http.Client
	Now          func() time.Time
	Logger       *slog.Logger
}

// Profiler is safe for concurrent use.
type Profiler struct {
	opts Options
	wg   sync.WaitGroup

	mu        sync.Mutex
	capturing bool
	lastOK    time.Time
	captures  int
	changed   chan struct{}
}

// New applies defaults.
func New(opts Options) *Profiler {
	if opts.Dir == "" {
		opts.Dir = DefaultDir
	}
	if opts.TriggerPercent == 0 {
		opts.TriggerPercent = DefaultTriggerPercent
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Role == nil {
		opts.Role = func() string { return "" }
	}
	return &Profiler{opts: opts, changed: make(chan struct{})}
}

// Dir is the profile directory.
func (p *Profiler) Dir() string { return p.opts.Dir }

// SelfCheck creates the directory and probes that it is writable. The
// probe file has a name of its own: agents of several nodes on one host
// may share the directory and start at the same moment, and with one
// fixed name each could remove the other's probe (and fail to start).
func (p *Profiler) SelfCheck() error {
	if err := os.MkdirAll(p.opts.Dir, 0o750); err != nil {
		return fmt.Errorf("pressure profile directory: %w", err)
	}
	probe, err := os.CreateTemp(p.opts.Dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("pressure profile directory not writable: %w", err)
	}
	_ = probe.Close()
	return os.Remove(probe.Name())
}

// Changed returns a channel closed after the next finished capture.
func (p *Profiler) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Captures counts finished captures.
func (p *Profiler) Captures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.captures
}

// Threshold returns the threshold and limit in force for a limit gauge
// value (0: none); ok is false when there is no threshold.
func (p *Profiler) Threshold(gaugeLimit float64) (threshold, limit uint64, ok bool) {
	limit = uint64(max(gaugeLimit, 0))
	if limit == 0 && p.opts.Limit != nil {
		limit = p.opts.Limit()
	}
	if p.opts.ThresholdBytes > 0 {
		return p.opts.ThresholdBytes, limit, true
	}
	if limit == 0 {
		return 0, 0, false
	}
	return limit * uint64(p.opts.TriggerPercent) / 100, limit, true
}

// Observe evaluates the trigger for one successful scrape; hasLimit false
// means the gauge was missing. A capture runs in the background.
func (p *Profiler) Observe(rss float64, hasRSS bool, gaugeLimit float64, hasLimit bool) {
	if !hasRSS {
		return
	}
	if !hasLimit {
		gaugeLimit = 0
	}
	threshold, limit, ok := p.Threshold(gaugeLimit)
	if !ok || uint64(max(rss, 0)) < threshold {
		return
	}
	now := p.opts.Now()
	p.mu.Lock()
	if p.capturing || (!p.lastOK.IsZero() && p.opts.Cooldown > 0 && now.Sub(p.lastOK) < p.opts.Cooldown) {
		p.mu.Unlock()
		return
	}
	p.capturing = true
	p.mu.Unlock()
	p.wg.Go(func() {
		err := p.capture(now, uint64(rss), limit, threshold)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.capturing = false
		if err == nil {
			p.lastOK = now
		} else {
			p.opts.Logger.Warn("Pressure capture failed", "err", err)
		}
		p.captures++
		close(p.changed)
		p.changed = make(chan struct{})
	})
}

// Close waits for a running capture.
func (p *Profiler) Close() { p.wg.Wait() }

type profileJSON struct {
	Type      string `json:"type"`
	Filename  string `json:"filename"`
	Filepath  string `json:"filepath"`
	Format    string `json:"format"`
	SizeBytes int64  `json:"size_bytes"`
}

type metaJSON struct {
	CapturedAt       time.Time     `json:"capturedAt"`
	PodName          string        `json:"podName"`
	Role             string        `json:"role"`
	SourceEndpoint   string        `json:"sourceEndpoint"`
	Profiles         []profileJSON `json:"profiles"`
	RSSBytes         uint64        `json:"rssBytes"`
	CgroupLimitBytes uint64        `json:"cgroupLimitBytes"`
	ThresholdBytes   uint64        `json:"thresholdBytes"`
	TriggerPercent   uint32        `json:"triggerPercent"`
}

// capture fetches the profiles into a new event directory and finalises it
// with meta.json, then applies retention.
func (p *Profiler) capture(at time.Time, rss, limit, threshold uint64) error {
	id := at.UTC().Format(IDLayout)
	dir, err := filepath.Abs(filepath.Join(p.opts.Dir, id))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	meta := metaJSON{
		CapturedAt: at.UTC(), PodName: p.opts.PodName, Role: p.opts.Role(), SourceEndpoint: p.opts.PprofBase,
		RSSBytes: rss, CgroupLimitBytes: limit, ThresholdBytes: threshold, TriggerPercent: p.opts.TriggerPercent,
		Profiles: []profileJSON{},
	}
	for _, pr := range profiles {
		path := filepath.Join(dir, pr.typ+".pprof")
		n, err := p.fetch(p.opts.PprofBase+pr.path, path)
		if err != nil {
			p.opts.Logger.Warn("Pressure profile fetch failed", "type", pr.typ, "err", err)
			continue
		}
		meta.Profiles = append(meta.Profiles, profileJSON{Type: pr.typ, Filename: pr.typ + ".pprof", Filepath: path, Format: "pprof", SizeBytes: n})
	}
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, metaFile)); err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	p.retain()
	return nil
}

func (p *Profiler) fetch(url, path string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return 0, err
	}
	return n, nil
}

type event struct {
	id   string
	meta metaJSON
}

// events reads every complete event, in directory-name order.
func (p *Profiler) events() []event {
	ents, err := os.ReadDir(p.opts.Dir)
	if err != nil {
		return nil
	}
	var out []event
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.opts.Dir, e.Name(), metaFile))
		if err != nil {
			continue
		}
		var m metaJSON
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		out = append(out, event{id: e.Name(), meta: m})
	}
	return out
}

// retain keeps the events with the highest RSS within the count and byte
// budgets and deletes the rest; the first is always kept.
func (p *Profiler) retain() {
	evs := p.events()
	slices.SortFunc(evs, func(a, b event) int {
		return cmp.Or(cmp.Compare(b.meta.RSSBytes, a.meta.RSSBytes), b.meta.CapturedAt.Compare(a.meta.CapturedAt))
	})
	kept, total := 0, int64(0)
	for i, ev := range evs {
		var size int64
		for _, pr := range ev.meta.Profiles {
			size += pr.SizeBytes
		}
		fits := (p.opts.MaxArtifacts <= 0 || kept < p.opts.MaxArtifacts) && (p.opts.MaxDiskBytes <= 0 || total+size <= p.opts.MaxDiskBytes)
		if i == 0 || fits {
			kept++
			total += size
			continue
		}
		if err := os.RemoveAll(filepath.Join(p.opts.Dir, ev.id)); err != nil {
			p.opts.Logger.Warn("Cannot delete pressure profile", "profile_id", ev.id, "err", err)
		}
	}
}

// Records lists the complete events for the proxy.
func (p *Profiler) Records() []*fodcv1.PressureProfileRecord {
	var out []*fodcv1.PressureProfileRecord
	for _, ev := range p.events() {
		r := &fodcv1.PressureProfileRecord{
			ProfileId: ev.id, CapturedAt: timestamppb.New(ev.meta.CapturedAt), SourceEndpoint: ev.meta.SourceEndpoint,
			RssBytes: ev.meta.RSSBytes, CgroupLimitBytes: ev.meta.CgroupLimitBytes, TriggerPercent: ev.meta.TriggerPercent,
			ThresholdBytes: ev.meta.ThresholdBytes,
		}
		for _, pr := range ev.meta.Profiles {
			r.Profiles = append(r.Profiles, &fodcv1.PressureProfileInfo{Type: pr.Type, Filename: pr.Filename, Filepath: pr.Filepath, Format: pr.Format, SizeBytes: pr.SizeBytes})
		}
		out = append(out, r)
	}
	return out
}
