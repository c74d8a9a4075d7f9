package pressure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/proxy/streams"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/proxytest"
)

var base = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

func profRec(id string, captured time.Time, types ...string) *fodcv1.PressureProfileRecord {
	r := &fodcv1.PressureProfileRecord{
		ProfileId:        id,
		CapturedAt:       timestamppb.New(captured),
		SourceEndpoint:   "http://localhost:6060",
		RssBytes:         900,
		CgroupLimitBytes: 1000,
		ThresholdBytes:   800,
		TriggerPercent:   80,
	}
	for _, typ := range types {
		r.Profiles = append(r.Profiles, &fodcv1.PressureProfileInfo{
			Type: typ, Filename: typ + ".pprof", Filepath: "/pp/" + id + "/" + typ + ".pprof", Format: "pprof", SizeBytes: 1,
		})
	}
	return r
}

func register(pod, role string, containers ...string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: role, PodName: pod, ContainerNames: containers}
}

func records(recs ...*fodcv1.PressureProfileRecord) func() []*fodcv1.PressureProfileRecord {
	return func() []*fodcv1.PressureProfileRecord { return recs }
}

func ids(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.PodName+"/"+e.Rec.GetProfileId())
	}
	return out
}

// cachedIDs returns the cache's content without asking any agent.
func (e *env) cachedIDs() []string {
	return ids(e.c.cached(map[string]bool{"data-0": true, "data-1": true, "liaison-0": true}))
}

// listUntil lists until every entry was listed by agentID and there are n.
func (e *env) listUntil(t *testing.T, n int, agentID string) []Entry {
	t.Helper()
	var got []Entry
	require.Eventually(t, func() bool {
		var err error
		got, err = e.c.List(context.Background(), registry.Filter{})
		if err != nil || len(got) != n {
			return false
		}
		for _, en := range got {
			if en.AgentID != agentID {
				return false
			}
		}
		return true
	}, wait, time.Millisecond)
	return got
}

// buffer is the writer a download's start returns.
type buffer struct {
	bytes.Buffer
	name    string
	started int
}

func (b *buffer) start(name string) io.Writer {
	b.name = name
	b.started++
	return b
}

// The recorded liaison session lists in the upstream JSON shape, byte for
// byte apart from the agent id, and its recorded heap download comes out
// byte-identical.
func TestReplayLiaisonFake(t *testing.T) {
	const recordedID = "26217768-5bf6-43a4-9417-86e4a32f58ea"
	rec, err := fixture.Load("head-agent-liaison-fake")
	require.NoError(t, err)
	cfg, err := agentsim.FromRecording(rec)
	require.NoError(t, err)
	e := newEnv(t, Options{})
	_, id := e.start(t, cfg)

	got, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "banyand-liaison-0", got[0].PodName)
	require.Equal(t, "ROLE_LIAISON", got[0].Role)
	require.Equal(t, "20261126T200907.510799489Z", got[0].Rec.GetProfileId())

	var body bytes.Buffer
	require.NoError(t, WriteJSON(&body, got))
	dir, err := fixture.Dir()
	require.NoError(t, err)
	upstream, err := os.ReadFile(filepath.Join(dir, "head-agent-liaison-fake.http", "pressure-profiles.txt"))
	require.NoError(t, err)
	require.Equal(t, strings.ReplaceAll(string(upstream), recordedID, id), body.String())

	want, err := os.ReadFile(filepath.Join(dir, "head-agent-liaison-fake.http", "pressure-profile_heap.pprof"))
	require.NoError(t, err)
	var buf buffer
	n, err := e.c.Download(context.Background(), "banyand-liaison-0", "20261126T200907.510799489Z", TypeHeap, buf.start)
	require.NoError(t, err)
	require.Equal(t, int64(len(want)), n)
	require.Equal(t, want, buf.Bytes())
	require.Equal(t, "banyand-liaison-0-ROLE_LIAISON-20261126T200907.510799489Z-heap.pprof", buf.name)
	require.Equal(t, 1, buf.started)

	// The goroutine profile was never downloaded in the recording, so the
	// agent answers with an error chunk before any byte.
	var none buffer
	n, err = e.c.Download(context.Background(), "banyand-liaison-0", "20261126T200907.510799489Z", TypeGoroutine, none.start)
	require.ErrorIs(t, err, streams.ErrProfileUnavailable)
	require.Zero(t, n)
	require.Zero(t, none.started)
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.downloads.WithLabelValues(resultOK)))
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.downloads.WithLabelValues(resultError)))
	require.Equal(t, float64(len(want)), testutil.ToFloat64(e.c.metrics.downloadBytes))
}

func TestDownloadErrors(t *testing.T) {
	e := newEnv(t, Options{})
	a, _ := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("p1", base, TypeHeap)),
		PressureFile:    func(string, string) ([]byte, error) { return []byte("x"), nil },
	})
	tests := []struct {
		name, pod, profile, typ string
		want                    error
		rounds                  float64 // list rounds it runs
	}{
		{"unknown type", "data-0", "p1", "cpu", ErrUnknownType, 0},
		{"unknown profile after one refresh", "data-0", "nope", TypeHeap, ErrProfileNotFound, 1},
		{"no file of that type", "data-0", "p1", TypeGoroutine, ErrProfileNotFound, 1},
		{"unknown pod", "data-9", "p1", TypeHeap, ErrProfileNotFound, 0},
		{"empty pod", "", "p1", TypeHeap, ErrProfileNotFound, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultOK))
			commands := a.Commands(protocol.KindPressure)
			var buf buffer
			n, err := e.c.Download(context.Background(), tc.pod, tc.profile, tc.typ, buf.start)
			require.ErrorIs(t, err, tc.want)
			require.Zero(t, n)
			require.Zero(t, buf.started)
			require.Equal(t, tc.rounds, testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultOK))-before)
			require.Equal(t, commands+int(tc.rounds), a.Commands(protocol.KindPressure))
		})
	}

	// A cached profile is downloaded without another round.
	_, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	commands := a.Commands(protocol.KindPressure)
	var buf buffer
	_, err = e.c.Download(context.Background(), "DATA-0", "p1", TypeHeap, buf.start)
	require.NoError(t, err)
	require.Equal(t, "x", buf.String())
	require.Equal(t, "data-0-ROLE_DATA-p1-heap.pprof", buf.name)
	require.Equal(t, commands+1, a.Commands(protocol.KindPressure)) // the fetch only
}

// An empty file still starts the response, after the agent said it is
// complete.
func TestDownloadEmptyFile(t *testing.T) {
	e := newEnv(t, Options{})
	e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("p1", base, TypeHeap)),
		PressureFile:    func(string, string) ([]byte, error) { return nil, nil },
	})
	var buf buffer
	n, err := e.c.Download(context.Background(), "data-0", "p1", TypeHeap, buf.start)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, 1, buf.started)
	require.Equal(t, "data-0-ROLE_DATA-p1-heap.pprof", buf.name)
}

// cancelWriter cancels its download after the first write.
type cancelWriter struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(b []byte) (int, error) {
	w.cancel()
	return w.Buffer.Write(b)
}

// A download cancelled after its first chunk stops; the agent's stream
// stays aligned, so a list and a full download on it still work (W10).
func TestDownloadCancelledHalfway(t *testing.T) {
	data := make([]byte, 4<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	e := newEnv(t, Options{})
	e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("p1", base, TypeHeap, TypeGoroutine)),
		PressureFile: func(_, typ string) ([]byte, error) {
			if typ == TypeGoroutine {
				return []byte("goroutines"), nil
			}
			return data, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelWriter{cancel: cancel}
	n, err := e.c.Download(ctx, "data-0", "p1", TypeHeap, func(string) io.Writer { return w })
	require.ErrorIs(t, err, context.Canceled)
	require.Positive(t, n)
	require.Less(t, n, int64(len(data)))
	require.Equal(t, data[:n], w.Bytes())
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.downloads.WithLabelValues(resultCanceled)))

	got, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/p1"}, ids(got))
	var small buffer
	_, err = e.c.Download(context.Background(), "data-0", "p1", TypeGoroutine, small.start)
	require.NoError(t, err)
	require.Equal(t, "goroutines", small.String())
	var full buffer
	n, err = e.c.Download(context.Background(), "data-0", "p1", TypeHeap, full.start)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	require.True(t, bytes.Equal(data, full.Bytes()), "second download differs")
}

// Two agents of one pod: the online one is used, and among equals the most
// recently registered one; never a random pick (W5).
func TestDownloadPicksOnlineThenNewestAgent(t *testing.T) {
	clk := proxytest.NewClock(base)
	e := newEnv(t, Options{Now: clk.Now})
	agentFor := func(container string) agentsim.Config {
		return agentsim.Config{Register: register("data-0", "ROLE_DATA", container),
			PressureRecords: records(profRec("p1", base, TypeHeap)),
			PressureFile:    func(string, string) ([]byte, error) { return []byte("from-" + container), nil },
		}
	}
	_, older := e.start(t, agentFor("a"))
	clk.Advance(time.Second)
	_, newer := e.start(t, agentFor("b"))
	require.NotEqual(t, older, newer)

	download := func() string {
		t.Helper()
		var buf buffer
		_, err := e.c.Download(context.Background(), "data-0", "p1", TypeHeap, buf.start)
		require.NoError(t, err)
		return buf.String()
	}
	require.Equal(t, "from-b", download())

	// Both fall silent; only the older one sends a heartbeat again.
	clk.Advance(time.Minute)
	e.reg.Sweep()
	_, err := e.reg.Heartbeat(older, registry.Identity{RoleName: "ROLE_DATA"})
	require.NoError(t, err)
	require.Equal(t, "from-a", download())
}

func TestCompareCandidates(t *testing.T) {
	on, off := registry.StatusOnline, registry.StatusUnconnected
	agent := func(id string, st registry.Status, registered time.Duration) registry.Agent {
		return registry.Agent{ID: id, Status: st, RegisteredAt: base.Add(registered)}
	}
	tests := []struct {
		name   string
		agents []registry.Agent
		want   string
	}{
		{"online beats newer", []registry.Agent{agent("new", off, 2), agent("old", on, 1)}, "old"},
		{"newest among online", []registry.Agent{agent("a", on, 1), agent("b", on, 3), agent("c", on, 2)}, "b"},
		{"newest among unconnected", []registry.Agent{agent("a", off, 3), agent("b", off, 1)}, "a"},
		{"greatest id on a tie", []registry.Agent{agent("a", on, 1), agent("c", on, 1), agent("b", on, 1)}, "c"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 3 { // any input order gives the same pick
				best := tc.agents[0]
				for _, a := range tc.agents[1:] {
					if compareCandidates(a, best) < 0 {
						best = a
					}
				}
				require.Equal(t, tc.want, best.ID)
				tc.agents = append(tc.agents[1:], tc.agents[0])
			}
		})
	}
}

// gate blocks an agent's list answers until opened. Tests open it in a
// cleanup registered after the agent's, so that it runs first: an agent
// blocked in a callback cannot stop.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// receive returns the next value of ch, failing the test if none comes.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}

func (e *env) waiters(agentID string) int {
	return e.c.rounds.Waiting(agentID)
}

// Concurrent lists for the same agent share one round.
func TestConcurrentListsShareOneRound(t *testing.T) {
	e := newEnv(t, Options{})
	g := newGate()
	a, id := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: func() []*fodcv1.PressureProfileRecord {
			<-g.ch
			return []*fodcv1.PressureProfileRecord{profRec("p1", base, TypeHeap)}
		},
	})
	t.Cleanup(g.open)
	results := make(chan []Entry, 2)
	list := func(f registry.Filter) {
		got, err := e.c.List(context.Background(), f)
		if err != nil {
			t.Error(err)
		}
		results <- got
	}
	go list(registry.Filter{})
	require.Eventually(t, func() bool { return a.Commands(protocol.KindPressure) == 1 }, wait, time.Millisecond)
	go list(registry.Filter{PodName: "data-0"})
	require.Eventually(t, func() bool { return e.waiters(id) == 2 }, wait, time.Millisecond)
	g.open()
	for range 2 {
		require.Equal(t, []string{"data-0/p1"}, ids(receive(t, results)))
	}
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultOK)))
	require.Equal(t, 1, a.Commands(protocol.KindPressure))
}

// A round abandoned by its callers overlaps the next one on a slow agent;
// the late answer of the first is dropped and the cache is never emptied
// (W9).
func TestOverlappingRoundsNeverEmptyTheCache(t *testing.T) {
	e := newEnv(t, Options{})
	g := newGate()
	var calls atomic.Int32
	a, id := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: func() []*fodcv1.PressureProfileRecord {
			n := calls.Add(1)
			if n == 2 {
				<-g.ch
			}
			return []*fodcv1.PressureProfileRecord{profRec(fmt.Sprintf("p%d", n), base, TypeHeap)}
		},
	})
	t.Cleanup(g.open)
	_, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/p1"}, e.cachedIDs())

	ctx, cancel := context.WithCancel(context.Background())
	abandoned := make(chan error, 1)
	go func() {
		got, err := e.c.List(ctx, registry.Filter{})
		if len(got) != 1 {
			t.Errorf("an abandoned list returned %v", ids(got))
		}
		abandoned <- err
	}()
	require.Eventually(t, func() bool { return a.Commands(protocol.KindPressure) == 2 }, wait, time.Millisecond)
	cancel()
	require.ErrorIs(t, receive(t, abandoned), context.Canceled)
	require.Zero(t, e.waiters(id))
	require.Equal(t, []string{"data-0/p1"}, e.cachedIDs())

	second := make(chan []Entry, 1)
	go func() {
		got, err := e.c.List(context.Background(), registry.Filter{})
		if err != nil {
			t.Error(err)
		}
		second <- got
	}()
	require.Eventually(t, func() bool { return e.waiters(id) == 1 }, wait, time.Millisecond)
	require.Equal(t, []string{"data-0/p1"}, e.cachedIDs())
	g.open() // the agent answers the abandoned round, then the second
	require.Equal(t, []string{"data-0/p3"}, ids(receive(t, second)))
	require.Equal(t, []string{"data-0/p3"}, e.cachedIDs())
	require.Equal(t, 2.0, testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultOK)))
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultCanceled)))
}

// An agent that does not answer within ListTimeout keeps its entries.
func TestFailedRoundKeepsEntries(t *testing.T) {
	e := newEnv(t, Options{ListTimeout: 200 * time.Millisecond})
	a, id := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("p1", base, TypeHeap))})
	before := e.listUntil(t, 1, id)

	a.SetHang(protocol.KindPressure, true)
	got, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, before, got)
	require.GreaterOrEqual(t, testutil.ToFloat64(e.c.metrics.rounds.WithLabelValues(resultError)), 1.0)
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.profiles))
}

// Entries move with their pod across a reconnect, are replaced (not
// duplicated) by the new agent's round, stay while the pod is offline, and
// go when the registry forgets the pod.
func TestEntriesFollowThePod(t *testing.T) {
	e := newEnv(t, Options{})
	var recs atomic.Pointer[[]*fodcv1.PressureProfileRecord]
	recs.Store(&[]*fodcv1.PressureProfileRecord{profRec("p1", base, TypeHeap), profRec("old", base, TypeHeap)})
	a, id1 := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: func() []*fodcv1.PressureProfileRecord { return *recs.Load() }})
	e.start(t, agentsim.Config{Register: register("data-1", "ROLE_DATA"), PressureRecords: records(profRec("q1", base, TypeHeap))})
	_, err := e.c.List(context.Background(), registry.Filter{PodName: "data-0"})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/old", "data-0/p1"}, e.cachedIDs())

	require.True(t, e.reg.Unregister(id1, registry.ReasonUnregistered))
	id2 := e.waitAttached(t, a.Agent, 2)
	a.SetHang(protocol.KindPressure, true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	got, err := e.c.List(ctx, registry.Filter{PodName: "data-0"})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, []string{"data-0/old", "data-0/p1"}, ids(got))
	require.Equal(t, id1, got[0].AgentID)

	a.SetHang(protocol.KindPressure, false)
	recs.Store(&[]*fodcv1.PressureProfileRecord{profRec("p1", base, TypeHeap), profRec("p2", base, TypeHeap)})
	got, err = e.c.List(context.Background(), registry.Filter{PodName: "data-0"})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/p1", "data-0/p2"}, ids(got))
	for _, en := range got {
		require.Equal(t, id2, en.AgentID)
	}

	a.Stop()
	require.Eventually(t, func() bool { return e.reg.CountByStatus().Offline == 1 }, wait, time.Millisecond)
	got, err = e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/p1", "data-0/p2", "data-1/q1"}, ids(got), "an offline pod keeps its entries")

	require.True(t, e.reg.Unregister(id2, registry.ReasonExpired)) // what the cleanup sweep does
	got, err = e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, []string{"data-1/q1"}, ids(got))
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.profiles))
}

func TestListOrderAndFilters(t *testing.T) {
	e := newEnv(t, Options{})
	data, _ := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("d1", base, TypeHeap), profRec("d3", base.Add(3*time.Second), TypeHeap))})
	liaison, _ := e.start(t, agentsim.Config{Register: register("liaison-0", "ROLE_LIAISON"),
		PressureRecords: records(profRec("l2", base.Add(2*time.Second), TypeHeap), profRec("l3", base.Add(3*time.Second), TypeHeap))})
	tests := []struct {
		name                 string
		filter               registry.Filter
		want                 []string
		dataAsks, liaisonAsk int
	}{
		{"all, newest first", registry.Filter{}, []string{"data-0/d3", "liaison-0/l3", "liaison-0/l2", "data-0/d1"}, 1, 1},
		{"role", registry.Filter{Role: roles.Role{Kind: roles.KindLiaison}, HasRole: true}, []string{"liaison-0/l3", "liaison-0/l2"}, 0, 1},
		{"pod ignoring case", registry.Filter{PodName: "DATA-0"}, []string{"data-0/d3", "data-0/d1"}, 1, 0},
		{"nothing selected", registry.Filter{PodName: "nope"}, nil, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, l := data.Commands(protocol.KindPressure), liaison.Commands(protocol.KindPressure)
			got, err := e.c.List(context.Background(), tc.filter)
			require.NoError(t, err)
			require.Equal(t, tc.want, ids(got))
			require.Equal(t, d+tc.dataAsks, data.Commands(protocol.KindPressure))
			require.Equal(t, l+tc.liaisonAsk, liaison.Commands(protocol.KindPressure))
		})
	}
}

func TestFilename(t *testing.T) {
	tests := []struct{ pod, role, id, typ, want string }{
		{"banyand-liaison-0", "ROLE_LIAISON", "20261126T200907.510799489Z", "heap", "banyand-liaison-0-ROLE_LIAISON-20261126T200907.510799489Z-heap.pprof"},
		{`a/b"c d`, "ROLE_DATA", "../x:y", "goroutine", "a_b_c_d-ROLE_DATA-.._x_y-goroutine.pprof"},
		{"pöd\r\n", "ROLE_DATA", "é", "heap", "p_d__-ROLE_DATA-_-heap.pprof"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			require.Equal(t, tc.want, filename(tc.pod, tc.role, tc.id, tc.typ))
		})
	}
}

func TestWriteJSON(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"empty is an array", nil, "[]\n"},
		{
			"unset fields are present",
			[]Entry{{AgentID: "id", PodName: "p", Role: "ROLE_DATA", Rec: &fodcv1.PressureProfileRecord{ProfileId: "x"}}},
			`[{"captured_at":"0001-01-01T00:00:00Z","agent_id":"id","pod_name":"p","role":"ROLE_DATA","profile_id":"x","source_endpoint":"",` +
				`"profiles":[],"rss_bytes":0,"cgroup_limit_bytes":0,"threshold_bytes":0,"trigger_percent":0}]` + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, WriteJSON(&buf, tc.entries))
			require.Equal(t, tc.want, buf.String())
		})
	}
}

func TestNewValidates(t *testing.T) {
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	table := streams.NewTable(streams.Limits{})
	logger, prom := slog.New(slog.DiscardHandler), prometheus.NewRegistry()
	_, err = New(withDefaults(Options{Streams: table}), logger, prom)
	require.ErrorContains(t, err, "registry and stream table are required")
	_, err = New(withDefaults(Options{Registry: reg}), logger, prom)
	require.ErrorContains(t, err, "registry and stream table are required")
	_, err = New(withDefaults(Options{Registry: reg, Streams: table, ListTimeout: -1}), logger, prom)
	require.ErrorContains(t, err, "must be positive")
	_, err = New(withDefaults(Options{Registry: reg, Streams: table}), nil, nil)
	require.ErrorContains(t, err, "logger and registerer are required")
	c, err := New(withDefaults(Options{Registry: reg, Streams: table}), logger, prom)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, c.listTimeout)
}

// A round with more records than the pod may keep keeps the newest.
func TestMaxProfilesPerPod(t *testing.T) {
	e := newEnv(t, Options{MaxProfilesPerPod: 2})
	e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		PressureRecords: records(profRec("a", base, TypeHeap), profRec("c", base.Add(2*time.Second), TypeHeap), profRec("b", base.Add(time.Second), TypeHeap))})
	got, err := e.c.List(context.Background(), registry.Filter{})
	require.NoError(t, err)
	require.Equal(t, []string{"data-0/c", "data-0/b"}, ids(got))
}
