package pressure

import (
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pprofServer serves this process's pprof endpoints on loopback, as
// banyand's --pprof-listener-addr does.
func pprofServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func waitCaptures(t *testing.T, p *Profiler, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		ch := p.Changed()
		if p.Captures() >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d captures, want %d", p.Captures(), n)
		}
	}
}

// A gauge crossing the threshold yields a heap and a goroutine profile that
// parse as pprof, listed with the values at trigger time; within the
// cooldown nothing more is captured.
func TestCaptureOnThreshold(t *testing.T) {
	srv := pprofServer(t)
	dir := t.TempDir()
	now := time.Date(2026, 12, 2, 11, 40, 44, 584427149, time.UTC)
	p := New(Options{Dir: dir, PprofBase: srv.URL, Cooldown: time.Minute, PodName: "pod-0", Now: func() time.Time { return now }, Role: func() string { return "ROLE_DATA" }})
	defer p.Close()
	require.NoError(t, p.SelfCheck())

	p.Observe(70, true, 100, true) // below 75 %
	p.Observe(90, true, 0, true)   // no limit anywhere
	p.Observe(90, true, 100, false)
	require.Zero(t, p.Captures())
	require.Empty(t, p.Records())

	p.Observe(80, true, 100, true)
	waitCaptures(t, p, 1)
	p.Observe(99, true, 100, true) // cooldown
	recs := p.Records()
	require.Len(t, recs, 1)
	r := recs[0]
	require.Equal(t, "20261202T114044.584427149Z", r.GetProfileId())
	require.Equal(t, uint64(80), r.GetRssBytes())
	require.Equal(t, uint64(100), r.GetCgroupLimitBytes())
	require.Equal(t, uint64(75), r.GetThresholdBytes())
	require.Equal(t, uint32(75), r.GetTriggerPercent())
	require.Len(t, r.GetProfiles(), 2)
	for _, pr := range r.GetProfiles() {
		f, err := os.Open(pr.GetFilepath())
		require.NoError(t, err)
		prof, err := profile.Parse(f)
		f.Close()
		require.NoError(t, err, pr.GetType())
		require.NotEmpty(t, prof.SampleType, pr.GetType())
	}
	require.Equal(t, 1, p.Captures())
}

// Nodes without a container limit: an explicit threshold, or a limit read
// elsewhere (the node's cgroup), still trigger.
func TestExplicitThresholdAndCgroupLimit(t *testing.T) {
	srv := pprofServer(t)
	p := New(Options{Dir: t.TempDir(), PprofBase: srv.URL, ThresholdBytes: 1000})
	defer p.Close()
	th, _, ok := p.Threshold(0)
	require.True(t, ok)
	require.Equal(t, uint64(1000), th)
	p.Observe(1000, true, 0, false)
	waitCaptures(t, p, 1)
	require.Len(t, p.Records(), 1)

	q := New(Options{Dir: t.TempDir(), PprofBase: srv.URL, Limit: func() uint64 { return 200 }, TriggerPercent: 50})
	th, limit, ok := q.Threshold(0)
	require.True(t, ok)
	require.Equal(t, uint64(100), th)
	require.Equal(t, uint64(200), limit)
}

// Retention keeps the highest-RSS events within the count budget; a
// directory without meta.json is left alone.
func TestRetention(t *testing.T) {
	srv := pprofServer(t)
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "partial"), 0o755))
	now := time.Unix(1_800_000_000, 0)
	p := New(Options{Dir: dir, PprofBase: srv.URL, ThresholdBytes: 1, MaxArtifacts: 2, Now: func() time.Time { return now }})
	defer p.Close()
	for i, rss := range []float64{500, 100, 300} {
		now = now.Add(time.Second)
		p.Observe(rss, true, 0, false)
		waitCaptures(t, p, i+1)
	}
	var rss []uint64
	for _, r := range p.Records() {
		rss = append(rss, r.GetRssBytes())
	}
	require.ElementsMatch(t, []uint64{500, 300}, rss)
	_, err := os.Stat(filepath.Join(dir, "partial"))
	require.NoError(t, err)
}

// Agents of several nodes on one host may share the profile directory and
// start at the same moment: their self-checks must not trip over each
// other, and leave nothing behind.
func TestSelfCheckSharedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	var wg sync.WaitGroup
	errs := make(chan error, 8*50)
	for range 8 {
		p := New(Options{Dir: dir})
		wg.Go(func() {
			for range 50 {
				errs <- p.SelfCheck()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, left, "no probe is left behind")
}
