package lifecycle

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// TestMain checks for leaked goroutines (the concurrency test starts some).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fp is one node's fingerprints of one object.
type fp struct {
	kind, name, node string
	cache, runtime   uint64
}

// fpGroup is a group as an agent reports it, with the partial
// schema_consistency holding its node's fingerprints.
func fpGroup(name string, fps ...fp) *fodcv1.GroupLifecycleInfo {
	sc := &fodcv1.SchemaConsistency{}
	for _, f := range fps {
		sc.Objects = append(sc.Objects, &fodcv1.ObjectConsistency{
			Kind: f.kind, Name: f.name,
			NodeFingerprints: []*fodcv1.NodeFingerprint{{Node: f.node, CacheFingerprint: f.cache, RuntimeFingerprint: f.runtime}},
		})
	}
	return &fodcv1.GroupLifecycleInfo{Name: name, Catalog: "CATALOG_STREAM", SchemaConsistency: sc}
}

func agent(pod string, liaison bool, groups ...*fodcv1.GroupLifecycleInfo) AgentReport {
	return AgentReport{
		AgentID: "id-" + pod, PodName: pod, Liaison: liaison,
		Reply: &fodcv1.StreamLifecycleRequest{PodName: pod, LifecycleData: &fodcv1.LifecycleData{Groups: groups}},
	}
}

// truth is one registry object.
type truth struct {
	kind, name string
	fp         uint64
}

func registry(groups map[string][]truth) Registry {
	r := Registry{Available: true, Groups: map[string]*fodcv1.SchemaRegistryGroup{}}
	for name, objs := range groups {
		g := &fodcv1.SchemaRegistryGroup{Group: name}
		for _, o := range objs {
			g.Objects = append(g.Objects, &fodcv1.SchemaObjectFingerprint{Kind: o.kind, Name: o.name, Fingerprint: o.fp})
		}
		r.Groups[name] = g
	}
	return r
}

// issue is an expected issue.
type issue struct {
	kind, name, node string
	typ              fodcv1.SchemaIssueType
}

// verdict is an expected verdict.
type verdict struct {
	status fodcv1.ConsistencyStatus
	issues []issue
}

type round struct {
	reports   []AgentReport
	reg       Registry
	shortfall bool
	want      map[string]verdict // groups absent here must have no verdict
}

var (
	okReg = registry(map[string][]truth{"g": {{"stream", "s", 10}}})
	okRep = []AgentReport{agent("data-0", false, fpGroup("g", fp{"stream", "s", "n1", 10, 10}))}
	// badRep has a stale cache on n1.
	badRep = []AgentReport{agent("data-0", false, fpGroup("g", fp{"stream", "s", "n1", 11, 11}))}
	stale  = issue{"stream", "s", "n1", IssueCacheStale}
)

func consistent() map[string]verdict { return map[string]verdict{"g": {status: StatusConsistent}} }
func unknown() map[string]verdict    { return map[string]verdict{"g": {status: StatusUnknown}} }
func inconsistent(is ...issue) map[string]verdict {
	return map[string]verdict{"g": {status: StatusInconsistent, issues: is}}
}

func TestChecker(t *testing.T) {
	everyKindReg := registry(map[string][]truth{"g": {
		{"stream", "a", 1}, {"stream", "b", 2}, {"measure", "c", 3},
	}})
	everyKind := []AgentReport{
		agent("data-0", false, fpGroup("g",
			fp{"stream", "a", "n1", 1, 1},
			fp{"stream", "b", "n1", 9, 9}, // stale
			// measure c missing on n1
			fp{"trace", "d", "n1", 5, 5}, // orphan
		)),
		agent("data-1", false, fpGroup("g",
			fp{"stream", "a", "n2", 1, 7}, // runtime not applied
			fp{"stream", "b", "n2", 2, 2},
			fp{"measure", "c", "n2", 3, 3},
		)),
	}
	everyKindFixed := []AgentReport{
		agent("data-0", false, fpGroup("g", fp{"stream", "a", "n1", 1, 1}, fp{"stream", "b", "n1", 2, 2}, fp{"measure", "c", "n1", 3, 3})),
		agent("data-1", false, fpGroup("g", fp{"stream", "a", "n2", 1, 1}, fp{"stream", "b", "n2", 2, 2}, fp{"measure", "c", "n2", 3, 3})),
	}
	allIssues := []issue{
		{"measure", "c", "n1", IssueMissingInCache},
		{"stream", "a", "n2", IssueRuntimeNotApplied},
		{"stream", "b", "n1", IssueCacheStale},
		{"trace", "d", "n1", IssueOrphan},
	}
	twoGroups := func(g1Bad, g2Bad bool) []AgentReport {
		f := func(bad bool) uint64 {
			if bad {
				return 99
			}
			return 10
		}
		var gs []*fodcv1.GroupLifecycleInfo
		gs = append(gs, fpGroup("g1", fp{"stream", "s", "n1", f(g1Bad), f(g1Bad)}))
		gs = append(gs, fpGroup("g2", fp{"stream", "s", "n1", f(g2Bad), f(g2Bad)}))
		return []AgentReport{agent("data-0", false, gs...)}
	}
	twoReg := registry(map[string][]truth{"g1": {{"stream", "s", 10}}, "g2": {{"stream", "s", 10}}})
	only := func(reports []AgentReport, group string) []AgentReport {
		out := make([]AgentReport, 0, len(reports))
		for _, r := range reports {
			kept := agent(r.PodName, r.Liaison)
			for _, g := range r.Reply.GetLifecycleData().GetGroups() {
				if g.GetName() == group {
					kept.Reply.LifecycleData.Groups = append(kept.Reply.LifecycleData.Groups, g)
				}
			}
			out = append(out, kept)
		}
		return out
	}

	tests := []struct {
		name   string
		rounds []round
	}{
		{
			name: "consistent",
			rounds: []round{
				{reports: okRep, reg: okReg, want: consistent()},
				{reports: okRep, reg: okReg, want: consistent()},
			},
		},
		{
			name: "every issue kind, reported on the second round, gone when fixed",
			rounds: []round{
				{reports: everyKind, reg: everyKindReg, want: unknown()},
				{reports: everyKind, reg: everyKindReg, want: inconsistent(allIssues...)},
				{reports: everyKind, reg: everyKindReg, want: inconsistent(allIssues...)},
				{reports: everyKindFixed, reg: everyKindReg, want: consistent()},
				// A streak that was broken starts again.
				{reports: everyKind, reg: everyKindReg, want: unknown()},
			},
		},
		{
			name: "flapping issue is never reported",
			rounds: []round{
				{reports: badRep, reg: okReg, want: unknown()},
				{reports: okRep, reg: okReg, want: consistent()},
				{reports: badRep, reg: okReg, want: unknown()},
				{reports: okRep, reg: okReg, want: consistent()},
				{reports: badRep, reg: okReg, want: unknown()},
			},
		},
		{
			name: "a change of issue type keeps the streak",
			rounds: []round{
				{reports: badRep, reg: okReg, want: unknown()},
				{
					reports: []AgentReport{agent("data-0", false, fpGroup("g", fp{"stream", "s", "n1", 10, 3}))},
					reg:     okReg,
					want:    inconsistent(issue{"stream", "s", "n1", IssueRuntimeNotApplied}),
				},
			},
		},
		{
			name: "shortfall makes a clean group unknown but not a reported issue",
			rounds: []round{
				{reports: okRep, reg: okReg, shortfall: true, want: unknown()},
				{reports: badRep, reg: okReg, shortfall: true, want: unknown()},
				{reports: badRep, reg: okReg, shortfall: true, want: inconsistent(stale)},
				{reports: okRep, reg: okReg, want: consistent()},
			},
		},
		{
			name: "no registry truth",
			rounds: []round{
				{reports: badRep, reg: Registry{}, want: unknown()},
				{reports: badRep, reg: Registry{}, want: unknown()},
				{reports: badRep, reg: Registry{Available: true, Err: errors.New("every liaison failed")}, want: unknown()},
				{reports: badRep, reg: Registry{Available: true, Groups: map[string]*fodcv1.SchemaRegistryGroup{
					"g": {Group: "g", Error: "read failed", Objects: []*fodcv1.SchemaObjectFingerprint{{Kind: "stream", Name: "s", Fingerprint: 10}}},
				}}, want: unknown()},
				{reports: badRep, reg: registry(map[string][]truth{"other": {{"stream", "s", 10}}}), want: unknown()},
				// Issues were never tracked without truth: the first round
				// with truth only suppresses.
				{reports: badRep, reg: okReg, want: unknown()},
				{reports: badRep, reg: okReg, want: inconsistent(stale)},
				// A round without truth forgets the streak.
				{reports: badRep, reg: Registry{}, want: unknown()},
				{reports: badRep, reg: okReg, want: unknown()},
			},
		},
		{
			name: "no nodes",
			rounds: []round{
				{reports: []AgentReport{agent("data-0", false, fpGroup("g"))}, reg: okReg, want: unknown()},
				{reports: []AgentReport{agent("data-0", false, fpGroup("g", fp{"stream", "s", "", 1, 1}))}, reg: okReg, want: unknown()},
			},
		},
		{
			name: "no fingerprints, no verdict",
			rounds: []round{
				{reports: []AgentReport{agent("data-0", false, &fodcv1.GroupLifecycleInfo{Name: "g"})}, reg: okReg, want: map[string]verdict{}},
				{reports: []AgentReport{agent("data-0", false, &fodcv1.GroupLifecycleInfo{Name: "g"}), agent("data-1", false, fpGroup("g", fp{"stream", "s", "n2", 10, 10}))}, reg: okReg, want: consistent()},
			},
		},
		{
			name: "streaks are pruned globally",
			rounds: []round{
				{reports: twoGroups(true, true), reg: twoReg, want: map[string]verdict{"g1": {status: StatusUnknown}, "g2": {status: StatusUnknown}}},
				// g2 is not reported this round: its streak is forgotten.
				{reports: only(twoGroups(true, true), "g1"), reg: twoReg, want: map[string]verdict{
					"g1": {status: StatusInconsistent, issues: []issue{{"stream", "s", "n1", IssueCacheStale}}},
				}},
				{reports: twoGroups(true, true), reg: twoReg, want: map[string]verdict{
					"g1": {status: StatusInconsistent, issues: []issue{{"stream", "s", "n1", IssueCacheStale}}},
					"g2": {status: StatusUnknown},
				}},
				{reports: twoGroups(false, true), reg: twoReg, want: map[string]verdict{
					"g1": {status: StatusConsistent},
					"g2": {status: StatusInconsistent, issues: []issue{{"stream", "s", "n1", IssueCacheStale}}},
				}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewChecker()
			for i, r := range tt.rounds {
				got := c.Check(MergeGroups(r.reports), r.reports, r.reg, r.shortfall)
				require.Len(t, got, len(r.want), "round %d: %v", i, got)
				wantStatuses := map[string]fodcv1.ConsistencyStatus{}
				for g, w := range r.want {
					v := got[g]
					require.NotNil(t, v, "round %d group %s", i, g)
					require.Equal(t, w.status, v.GetStatus(), "round %d group %s", i, g)
					var issues []issue
					for _, is := range v.GetIssues() {
						issues = append(issues, issue{is.GetKind(), is.GetName(), is.GetNode(), is.GetType()})
					}
					require.Equal(t, w.issues, issues, "round %d group %s", i, g)
					wantStatuses[g] = w.status
				}
				require.Equal(t, wantStatuses, c.Statuses(), "round %d", i)
			}
		})
	}
}

func TestCheckerObjects(t *testing.T) {
	reg := registry(map[string][]truth{"g": {
		{"stream", "b", 2}, {"measure", "z", 3}, {"stream", "a", 1}, {"stream", "a", 999}, // duplicate: first wins
	}})
	reports := []AgentReport{
		agent("data-1", false, fpGroup("g", fp{"stream", "a", "n2", 1, 1}, fp{"stream", "b", "n2", 2, 2}, fp{"measure", "z", "n2", 3, 3})),
		agent("data-0", false, fpGroup("g", fp{"stream", "b", "n1", 2, 2}, fp{"stream", "a", "n1", 1, 1}, fp{"index", "x", "n1", 4, 4}, fp{"measure", "z", "n1", 3, 3})),
		// A second registration of data-0 reports a conflicting copy of n1:
		// the first in pod name, agent id order wins.
		{AgentID: "id-data-0-z", PodName: "data-0", Reply: agent("data-0", false, fpGroup("g", fp{"stream", "a", "n1", 77, 77})).Reply},
	}
	want := &fodcv1.SchemaConsistency{
		Status: StatusUnknown, // the orphan is suppressed on the first round
		Objects: []*fodcv1.ObjectConsistency{
			{Kind: "index", Name: "x", RegistryFingerprint: 0, NodeFingerprints: []*fodcv1.NodeFingerprint{{Node: "n1", CacheFingerprint: 4, RuntimeFingerprint: 4}}},
			{Kind: "measure", Name: "z", RegistryFingerprint: 3, NodeFingerprints: []*fodcv1.NodeFingerprint{
				{Node: "n1", CacheFingerprint: 3, RuntimeFingerprint: 3}, {Node: "n2", CacheFingerprint: 3, RuntimeFingerprint: 3},
			}},
			{Kind: "stream", Name: "a", RegistryFingerprint: 1, NodeFingerprints: []*fodcv1.NodeFingerprint{
				{Node: "n1", CacheFingerprint: 1, RuntimeFingerprint: 1}, {Node: "n2", CacheFingerprint: 1, RuntimeFingerprint: 1},
			}},
			{Kind: "stream", Name: "b", RegistryFingerprint: 2, NodeFingerprints: []*fodcv1.NodeFingerprint{
				{Node: "n1", CacheFingerprint: 2, RuntimeFingerprint: 2}, {Node: "n2", CacheFingerprint: 2, RuntimeFingerprint: 2},
			}},
		},
	}
	var first map[string]*fodcv1.SchemaConsistency
	permuteReports(reports, 0, func(p []AgentReport) {
		got := NewChecker().Check(MergeGroups(p), p, reg, false)
		require.True(t, proto.Equal(want, got["g"]), "got %v", got["g"])
		if first == nil {
			first = got
		}
	})
	require.NotNil(t, first)

	// Second round: the orphan is reported.
	c := NewChecker()
	c.Check(MergeGroups(reports), reports, reg, false)
	got := c.Check(MergeGroups(reports), reports, reg, false)["g"]
	require.Equal(t, StatusInconsistent, got.GetStatus())
	require.Len(t, got.GetIssues(), 1)
	require.True(t, proto.Equal(&fodcv1.SchemaIssue{Kind: "index", Name: "x", Node: "n1", Type: IssueOrphan}, got.GetIssues()[0]))
	require.Len(t, c.streaks, 1)
	c.Check(nil, nil, reg, false)
	require.Empty(t, c.streaks, "streaks must be pruned when nothing is seen")
	require.Empty(t, c.Statuses())
}

func TestCheckerConcurrent(t *testing.T) {
	c := NewChecker()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				c.Check(MergeGroups(badRep), badRep, okReg, false)
				_ = c.Statuses()
			}
		})
	}
	wg.Wait()
	require.Equal(t, map[string]fodcv1.ConsistencyStatus{"g": StatusInconsistent}, c.Statuses())
}

func permuteReports(a []AgentReport, k int, f func([]AgentReport)) {
	if k == len(a) {
		f(a)
		return
	}
	for i := k; i < len(a); i++ {
		a[k], a[i] = a[i], a[k]
		permuteReports(a, k+1, f)
		a[k], a[i] = a[i], a[k]
	}
}
