package diagnostics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
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

func crashRec(dir, component string, occurred time.Time) *fodcv1.StreamCrashDiagnosticsRequest {
	return &fodcv1.StreamCrashDiagnosticsRequest{
		FetchedAt:      timestamppb.New(occurred.Add(100 * time.Millisecond)),
		SourceEndpoint: "file:///data/crash",
		ArtifactDir:    dir,
		Files:          []string{"panic.json"},
		PanicRecord: &fodcv1.CrashPanicRecord{
			OccurredAt: timestamppb.New(occurred),
			Component:  component,
			PanicValue: "boom",
			Recovered:  true,
		},
	}
}

func register(pod, role string) *fodcv1.RegisterAgentRequest {
	return &fodcv1.RegisterAgentRequest{NodeRole: role, PodName: pod}
}

// collectUntil collects until the result has n records, all last sent by
// agentID, and returns it.
func (e *env) collectUntil(t *testing.T, f registry.Filter, n int, agentID string) []Record {
	t.Helper()
	var got []Record
	require.Eventually(t, func() bool {
		got = e.c.Collect(context.Background(), f)
		if len(got) != n {
			return false
		}
		for _, r := range got {
			if r.AgentID != agentID {
				return false
			}
		}
		return true
	}, wait, time.Millisecond)
	return got
}

// The records of the recorded upstream session come out in the upstream
// proxy's JSON shape, byte for byte apart from the agent id.
func TestReplayMatchesUpstream(t *testing.T) {
	const recordedID = "c95ab8ac-af51-4076-84a5-f84d96f056df"
	rec, err := fixture.Load("head-agent-crash-diagnostics")
	require.NoError(t, err)
	cfg, err := agentsim.FromRecording(rec)
	require.NoError(t, err)
	e := newEnv(t, Options{Window: 20 * time.Millisecond})
	_, id := e.start(t, cfg)

	got := e.collectUntil(t, registry.Filter{}, 2, id)
	for i, want := range []struct{ component, dir string }{
		{"fixture-debug-panic", "20261126T201020.392236405Z-fixture-debug-panic-13171"},
		{"fixture/second panic", "20261126T201026.420568443Z-fixture-second-panic-13171"},
	} {
		r := got[i]
		require.Equal(t, "banyand-data-0", r.PodName)
		require.Equal(t, "ROLE_DATA", r.Role)
		require.Equal(t, want.component, r.Rec.GetPanicRecord().GetComponent())
		require.Equal(t, "diagnostic test panic triggered via /debug/panic", r.Rec.GetPanicRecord().GetPanicValue())
		require.Equal(t, want.dir, r.Rec.GetArtifactDir())
		require.Equal(t, []string{"deep-dump.json", "panic.json"}, r.Rec.GetFiles())
	}

	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, got))
	dir, err := fixture.Dir()
	require.NoError(t, err)
	upstream, err := os.ReadFile(filepath.Join(dir, "head-agent-crash-diagnostics.http", "diagnostics_two.txt"))
	require.NoError(t, err)
	require.Equal(t, strings.ReplaceAll(string(upstream), recordedID, id), buf.String())

	// And field by field, so that a mismatch says where.
	var ours, theirs []map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &ours))
	require.NoError(t, json.Unmarshal(upstream, &theirs))
	require.Len(t, ours, len(theirs))
	for i := range theirs {
		require.Equal(t, id, ours[i]["agent_id"])
		delete(ours[i], "agent_id")
		delete(theirs[i], "agent_id")
		require.Equal(t, theirs[i], ours[i])
	}
}

func TestFilters(t *testing.T) {
	e := newEnv(t, Options{Window: 20 * time.Millisecond})
	_, dataID := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest {
			return []*fodcv1.StreamCrashDiagnosticsRequest{crashRec("d1", "data", base)}
		}})
	_, liaisonID := e.start(t, agentsim.Config{Register: register("liaison-0", "ROLE_LIAISON"),
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest {
			return []*fodcv1.StreamCrashDiagnosticsRequest{crashRec("l1", "liaison", base), crashRec("l0", "liaison", base)}
		}})
	require.Eventually(t, func() bool { return len(e.c.Collect(context.Background(), registry.Filter{})) == 3 }, wait, time.Millisecond)

	tests := []struct {
		name     string
		filter   registry.Filter
		wantDirs []string
		wantIDs  []string
	}{
		{"all, by pod then time then dir", registry.Filter{}, []string{"d1", "l0", "l1"}, []string{dataID, liaisonID, liaisonID}},
		{"role", registry.Filter{Role: roles.Role{Kind: roles.KindLiaison}, HasRole: true}, []string{"l0", "l1"}, []string{liaisonID, liaisonID}},
		{"pod ignoring case", registry.Filter{PodName: "DATA-0"}, []string{"d1"}, []string{dataID}},
		{"role and pod disagree", registry.Filter{Role: roles.Role{Kind: roles.KindData}, HasRole: true, PodName: "liaison-0"}, nil, nil},
		{"unknown pod", registry.Filter{PodName: "nope"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := e.c.Collect(context.Background(), tc.filter)
			var dirs, ids []string
			for _, r := range got {
				dirs = append(dirs, r.Rec.GetArtifactDir())
				ids = append(ids, r.AgentID)
			}
			require.Equal(t, tc.wantDirs, dirs)
			require.Equal(t, tc.wantIDs, ids)
		})
	}
}

// A pod that reconnects under a new agent id keeps its records, and the
// records it re-sends replace the cached ones instead of duplicating them
// (W6).
func TestRecordsSurviveReconnectWithoutDuplicates(t *testing.T) {
	e := newEnv(t, Options{Window: 20 * time.Millisecond})
	recs := []*fodcv1.StreamCrashDiagnosticsRequest{crashRec("a1", "x", base), crashRec("a2", "y", base.Add(time.Second))}
	a, id1 := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest { return recs }})
	e.collectUntil(t, registry.Filter{}, 2, id1)

	// The proxy forgets the id; the agent registers again under a new one.
	require.True(t, e.reg.Unregister(id1, registry.ReasonUnregistered))
	id2 := e.waitAttached(t, a.Agent, 2)
	require.NotEqual(t, id1, id2)

	// Before the new agent re-sends anything, the pod's records are kept.
	a.SetHang(protocol.KindCrash, true)
	got := e.c.Collect(context.Background(), registry.Filter{})
	require.Len(t, got, 2)
	require.Equal(t, id1, got[0].AgentID)

	a.SetHang(protocol.KindCrash, false)
	got = e.collectUntil(t, registry.Filter{}, 2, id2)
	require.Equal(t, "a1", got[0].Rec.GetArtifactDir())
	require.Equal(t, "a2", got[1].Rec.GetArtifactDir())
	require.Equal(t, 2.0, testutil.ToFloat64(e.c.metrics.records))
}

// The records of a pod whose agent went offline are kept (they may say why
// it went away); once the registry forgets the pod they are pruned. Other
// pods keep theirs.
func TestRecordsOfGonePodsArePruned(t *testing.T) {
	e := newEnv(t, Options{Window: 20 * time.Millisecond})
	gone, goneID := e.start(t, agentsim.Config{Register: register("data-0", "ROLE_DATA"),
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest {
			return []*fodcv1.StreamCrashDiagnosticsRequest{crashRec("a1", "x", base), crashRec("a2", "x", base)}
		}})
	_, stayID := e.start(t, agentsim.Config{Register: register("data-1", "ROLE_DATA"),
		Crash: func() []*fodcv1.StreamCrashDiagnosticsRequest {
			return []*fodcv1.StreamCrashDiagnosticsRequest{crashRec("b1", "x", base)}
		}})
	require.Eventually(t, func() bool { return len(e.c.Collect(context.Background(), registry.Filter{})) == 3 }, wait, time.Millisecond)

	gone.Stop()
	require.Eventually(t, func() bool { return e.reg.CountByStatus().Offline == 1 }, wait, time.Millisecond)
	require.Len(t, e.c.Collect(context.Background(), registry.Filter{}), 3, "an offline pod keeps its records")

	require.True(t, e.reg.Unregister(goneID, registry.ReasonExpired)) // what the cleanup sweep does
	got := e.c.Collect(context.Background(), registry.Filter{})
	require.Len(t, got, 1)
	require.Equal(t, stayID, got[0].AgentID)
	require.Equal(t, "b1", got[0].Rec.GetArtifactDir())
	require.Equal(t, 1.0, testutil.ToFloat64(e.c.metrics.records))
	require.GreaterOrEqual(t, testutil.ToFloat64(e.c.metrics.evicted.WithLabelValues(EvictAgentGone)), 2.0)
}

// Concurrent collections share the requests in flight: one command reaches
// the agent, and a caller that gives up early leaves the others waiting.
// The agent is played through its stream handle, so the whole exchange
// runs on synctest's clock.
func TestConcurrentCollectsShareOneRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		require.NoError(t, err)
		table := streams.NewTable(streams.Limits{SendQueueLen: 8, MaxPending: 8})
		prom := prometheus.NewRegistry()
		c, err := New(withDefaults(Options{Registry: reg, Streams: table, Window: time.Hour}), slog.New(slog.DiscardHandler), prom)
		require.NoError(t, err)
		a, err := reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"})
		require.NoError(t, err)
		st, err := table.OpenCrash(a.ID)
		require.NoError(t, err)
		defer st.Close(nil)
		commands := 0
		go func() { // the agent: every command re-sends its one record
			for {
				select {
				case <-st.Outbox():
					commands++
					c.OnRecord(a.ID, crashRec("a1", "x", base))
				case <-st.Done():
					return
				}
			}
		}()

		ctx := t.Context()
		results := make(chan []Record, 2)
		go func() { results <- c.Collect(ctx, registry.Filter{}) }()
		go func() { results <- c.Collect(ctx, registry.Filter{PodName: "data-0"}) }()
		synctest.Wait()
		require.Equal(t, 2.0, testutil.ToFloat64(c.metrics.waiting))

		// A third caller gives up; the other two keep waiting.
		quitCtx, quit := context.WithCancel(ctx)
		quitter := make(chan []Record, 1)
		go func() { quitter <- c.Collect(quitCtx, registry.Filter{}) }()
		synctest.Wait()
		require.Equal(t, 3.0, testutil.ToFloat64(c.metrics.waiting))
		quit()
		<-quitter
		synctest.Wait()
		require.Equal(t, 2.0, testutil.ToFloat64(c.metrics.waiting))
		require.Empty(t, results, "no collection ends before its window")
		require.Equal(t, 1.0, testutil.ToFloat64(c.metrics.records))

		time.Sleep(time.Hour) // the window ends
		for range 2 {
			got := <-results
			require.Len(t, got, 1)
			require.Equal(t, a.ID, got[0].AgentID)
		}
		require.Equal(t, 1.0, testutil.ToFloat64(c.metrics.requests))
		require.Equal(t, 1, commands)

		// Once the window has ended, the next collection asks again.
		go func() { results <- c.Collect(ctx, registry.Filter{}) }()
		time.Sleep(time.Hour)
		require.Len(t, <-results, 1)
		require.Equal(t, 2.0, testutil.ToFloat64(c.metrics.requests))
		require.Equal(t, 2, commands)
	})
}

// Without any agent to ask, a collection returns the cache at once.

func TestCollectWithoutStreamsDoesNotWait(t *testing.T) {
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	c, err := New(withDefaults(Options{Registry: reg, Window: time.Hour, Streams: streams.NewTable(streams.Limits{})}),
		slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	a, err := reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"})
	require.NoError(t, err)
	offer(c, a.ID, crashRec("a1", "x", base))
	// The agent has no crash stream: nothing is asked, nothing waited for
	// (a one-hour window would time the test out).
	require.Len(t, c.Collect(context.Background(), registry.Filter{}), 1)
	require.Zero(t, testutil.ToFloat64(c.metrics.requests))
}

func TestCacheBounds(t *testing.T) {
	type step struct {
		advance time.Duration
		pod     string // sender: "data-0" or "data-1"; "gone" is unregistered
		dir     string
		crash   time.Duration // after base
	}
	tests := []struct {
		name        string
		maxRecords  int
		maxAge      time.Duration
		steps       []step
		wantDirs    []string
		wantEvicted map[string]float64
	}{
		{
			name: "capacity evicts the oldest crash", maxRecords: 3,
			steps: []step{
				{pod: "data-0", dir: "c", crash: 3 * time.Second},
				{pod: "data-0", dir: "a", crash: time.Second},
				{pod: "data-1", dir: "d", crash: 4 * time.Second},
				{pod: "data-1", dir: "b", crash: 2 * time.Second},
			},
			wantDirs:    []string{"c", "b", "d"},
			wantEvicted: map[string]float64{EvictCapacity: 1},
		},
		{
			name: "a re-sent record replaces, it does not count twice", maxRecords: 2,
			steps: []step{
				{pod: "data-0", dir: "a", crash: time.Second},
				{pod: "data-0", dir: "b", crash: 2 * time.Second},
				{pod: "data-0", dir: "a", crash: time.Second},
				{pod: "data-0", dir: "b", crash: 2 * time.Second},
			},
			wantDirs:    []string{"a", "b"},
			wantEvicted: map[string]float64{EvictCapacity: 0},
		},
		{
			name: "records not re-sent within the maximum age expire", maxAge: time.Hour,
			steps: []step{
				{pod: "data-0", dir: "old"},
				{pod: "data-0", dir: "refreshed"},
				{advance: 40 * time.Minute, pod: "data-0", dir: "young"},
				{advance: 10 * time.Minute, pod: "data-0", dir: "refreshed"},
				{advance: 21 * time.Minute},
			},
			wantDirs:    []string{"refreshed", "young"},
			wantEvicted: map[string]float64{EvictExpired: 1},
		},
		{
			name: "records of unknown agents are dropped",
			steps: []step{
				{pod: "gone", dir: "x"},
				{pod: "data-1", dir: "y"},
			},
			wantDirs:    []string{"y"},
			wantEvicted: map[string]float64{EvictAgentGone: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := proxytest.NewClock(base)
			reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10, Now: clk.Now}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			require.NoError(t, err)
			prom := prometheus.NewRegistry()
			c, err := New(withDefaults(Options{Registry: reg, MaxRecords: tc.maxRecords, MaxAge: tc.maxAge, Now: clk.Now,
				Streams: streams.NewTable(streams.Limits{})}), slog.New(slog.DiscardHandler), prom)
			require.NoError(t, err)
			ids := map[string]string{"gone": "not-registered"}
			for _, pod := range []string{"data-0", "data-1"} {
				a, err := reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: pod})
				require.NoError(t, err)
				ids[pod] = a.ID
			}
			for _, s := range tc.steps {
				clk.Advance(s.advance)
				if s.pod != "" {
					offer(c, ids[s.pod], crashRec(s.dir, "x", base.Add(s.crash)))
				}
			}
			got := c.Collect(context.Background(), registry.Filter{})
			var dirs []string
			for _, r := range got {
				dirs = append(dirs, r.Rec.GetArtifactDir())
			}
			require.Equal(t, tc.wantDirs, dirs)
			require.Equal(t, float64(len(tc.wantDirs)), testutil.ToFloat64(c.metrics.records))
			for reason, n := range tc.wantEvicted {
				require.Equal(t, n, testutil.ToFloat64(c.metrics.evicted.WithLabelValues(reason)), reason)
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
		want string
	}{
		{"empty is an array", nil, "[]\n"},
		{
			"unset times and absent parts",
			[]Record{{AgentID: "id", PodName: "p", Role: "ROLE_DATA", Rec: &fodcv1.StreamCrashDiagnosticsRequest{ArtifactDir: "d"}}},
			`[{"fetched_at":"0001-01-01T00:00:00Z","agent_id":"id","pod_name":"p","role":"ROLE_DATA","source_endpoint":"","artifact_dir":"d"}]` + "\n",
		},
		{
			"panic record with breadcrumbs",
			[]Record{{AgentID: "id", PodName: "p", Role: "ROLE_LIAISON", Rec: &fodcv1.StreamCrashDiagnosticsRequest{
				FetchedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))),
				PanicRecord: &fodcv1.CrashPanicRecord{
					Component:   "c",
					PanicValue:  "v",
					Breadcrumbs: []*fodcv1.CrashBreadcrumb{{Stage: "s"}, {Stage: "t", Component: "k", Fields: map[string]string{"b": "2", "a": "1"}, Time: timestamppb.New(base)}},
				},
			}}},
			`[{"fetched_at":"2026-01-02T02:04:05.0000006Z","panic_record":{"component":"c","panic_value":"v","occurred_at":"0001-01-01T00:00:00Z",` +
				`"breadcrumbs":[{"occurred_at":"0001-01-01T00:00:00Z","stage":"s"},{"occurred_at":"2026-11-26T20:00:00Z","fields":{"a":"1","b":"2"},"stage":"t","component":"k"}],` +
				`"recovered":false},"agent_id":"id","pod_name":"p","role":"ROLE_LIAISON","source_endpoint":"","artifact_dir":""}]` + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, WriteJSON(&buf, tc.recs))
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
	_, err = New(withDefaults(Options{Registry: reg, Streams: table, Window: -1}), logger, prom)
	require.ErrorContains(t, err, "must be positive")
	_, err = New(withDefaults(Options{Registry: reg, Streams: table}), nil, nil)
	require.ErrorContains(t, err, "logger and registerer are required")
	c, err := New(withDefaults(Options{Registry: reg, Streams: table}), logger, prom)
	require.NoError(t, err)
	require.Equal(t, time.Second, c.window)
}

// Records over the size limits never stay: one over MaxRecordBytes is
// dropped on arrival, the total stays within MaxBytes by evicting the
// oldest crashes, and a record nobody asked for is dropped.
func TestRecordSizeLimits(t *testing.T) {
	reg, err := registry.New(registry.Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Hour, MaxAgents: 10},
		slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	a, err := reg.Register(registry.Identity{RoleName: "ROLE_DATA", PodName: "data-0"})
	require.NoError(t, err)
	one := proto.Size(crashRec("d0", "x", base))
	prom := prometheus.NewRegistry()
	c, err := New(withDefaults(Options{Registry: reg, Streams: streams.NewTable(streams.Limits{}),
		MaxRecordBytes: one + 100, MaxBytes: 3*one + 10}), slog.New(slog.DiscardHandler), prom)
	require.NoError(t, err)

	big := crashRec("big", strings.Repeat("x", 200), base)
	offer(c, a.ID, big)
	require.Equal(t, 1.0, testutil.ToFloat64(c.metrics.rejected.WithLabelValues(RejectSize)))

	for i := range 5 { // d0 is the oldest crash, d4 the newest
		offer(c, a.ID, crashRec(fmt.Sprintf("d%d", i), "x", base.Add(time.Duration(i)*time.Minute)))
	}
	got := c.cached(map[string]bool{"data-0": true})
	require.Len(t, got, 3, "three records fit in MaxBytes")
	require.Equal(t, "d2", got[0].Rec.GetArtifactDir())
	require.LessOrEqual(t, testutil.ToFloat64(c.metrics.bytes), float64(3*one+10))
	require.Equal(t, 2.0, testutil.ToFloat64(c.metrics.evicted.WithLabelValues(EvictCapacity)))

	c.mu.Lock() // the last request was an hour ago
	c.asked[a.ID] = c.now().Add(-time.Hour)
	c.mu.Unlock()
	c.OnRecord(a.ID, crashRec("unasked", "x", base.Add(time.Hour)))
	require.Equal(t, 1.0, testutil.ToFloat64(c.metrics.rejected.WithLabelValues(RejectUnsolicited)))
	for _, r := range c.cached(map[string]bool{"data-0": true}) {
		require.NotEqual(t, "unasked", r.Rec.GetArtifactDir())
	}
}
