package lifecycle

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
)

func group(name, catalog string, shards uint32, errs ...string) *fodcv1.GroupLifecycleInfo {
	return &fodcv1.GroupLifecycleInfo{
		Name: name, Catalog: catalog, Errors: errs,
		ResourceOpts: &commonv1.ResourceOpts{ShardNum: shards},
	}
}

func TestMergeGroups(t *testing.T) {
	reports := []AgentReport{
		agent("data-a", false,
			group("g1", "CATALOG_STREAM", 1, "e1", "e3"),
			group("g2", "CATALOG_MEASURE", 2),
			group("g2", "CATALOG_MEASURE", 99), // second copy in one reply: ignored
		),
		agent("z-liaison", true, group("g1", "CATALOG_MEASURE", 7, "e2", "e1")),
		agent("data-b", false,
			group("g2", "CATALOG_MEASURE", 3, "e4"),
			group("g3", "CATALOG_TRACE", 4),
			nil,
		),
		fpReport("data-c", fpGroup("g3", fp{"stream", "s", "n", 1, 1})),
		{AgentID: "id-empty", PodName: "empty"}, // no reply content
	}
	before := proto.CloneOf(reports[0].Reply)

	want := []*fodcv1.GroupLifecycleInfo{
		// The liaison's copy wins although its pod name sorts last.
		{Name: "g1", Catalog: "CATALOG_MEASURE", ResourceOpts: &commonv1.ResourceOpts{ShardNum: 7}, Errors: []string{"e1", "e2", "e3"}},
		// Then the lowest pod name.
		{Name: "g2", Catalog: "CATALOG_MEASURE", ResourceOpts: &commonv1.ResourceOpts{ShardNum: 2}, Errors: []string{"e4"}},
		// The agents' partial schema_consistency is dropped.
		{Name: "g3", Catalog: "CATALOG_TRACE", ResourceOpts: &commonv1.ResourceOpts{ShardNum: 4}, Errors: []string{}},
	}
	n := 0
	permuteReports(reports, 0, func(p []AgentReport) {
		n++
		got := MergeGroups(p)
		require.Len(t, got, len(want))
		for i := range want {
			require.True(t, proto.Equal(want[i], got[i]), "permutation %d group %d: got %v", n, i, got[i])
			require.NotNil(t, got[i].Errors)
		}
	})
	require.Equal(t, 120, n)

	// Inputs are untouched and not shared.
	got := MergeGroups(reports)
	got[0].Errors = append(got[0].Errors, "x")
	got[0].ResourceOpts.ShardNum = 1000
	for _, r := range reports {
		for _, g := range r.Reply.GetLifecycleData().GetGroups() {
			require.NotEqual(t, uint32(1000), g.GetResourceOpts().GetShardNum())
		}
	}
	require.True(t, proto.Equal(before, reports[0].Reply))
	require.Empty(t, MergeGroups(nil))
}

func fpReport(pod string, groups ...*fodcv1.GroupLifecycleInfo) AgentReport {
	return agent(pod, false, groups...)
}

func TestApply(t *testing.T) {
	verdict := &fodcv1.SchemaConsistency{Status: StatusConsistent}
	tests := []struct {
		name     string
		reg      Registry
		wantErrs map[string][]string
	}{
		{
			name:     "registry read",
			reg:      Registry{Available: true, Groups: map[string]*fodcv1.SchemaRegistryGroup{"g1": {Group: "g1", Error: "boom"}, "g2": {Group: "g2"}}},
			wantErrs: map[string][]string{"g1": {"e0", "registry read failed: boom"}, "g2": {}},
		},
		{
			name:     "every liaison failed",
			reg:      Registry{Available: true, Err: errors.New("timed out")},
			wantErrs: map[string][]string{"g1": {"e0", "registry unavailable: timed out"}, "g2": {"registry unavailable: timed out"}},
		},
		{
			name:     "no liaison",
			reg:      Registry{},
			wantErrs: map[string][]string{"g1": {"e0"}, "g2": {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups := MergeGroups([]AgentReport{agent("a", false, group("g1", "C", 1, "e0"), group("g2", "C", 1))})
			Apply(groups, map[string]*fodcv1.SchemaConsistency{"g1": verdict}, tt.reg)
			require.Same(t, verdict, groups[0].GetSchemaConsistency())
			require.Nil(t, groups[1].GetSchemaConsistency())
			for _, g := range groups {
				require.Equal(t, tt.wantErrs[g.GetName()], g.GetErrors(), g.GetName())
			}
		})
	}
}

func TestMergeRegistryChunks(t *testing.T) {
	obj := func(kind, name string, f uint64) *fodcv1.SchemaObjectFingerprint {
		return &fodcv1.SchemaObjectFingerprint{Kind: kind, Name: name, Fingerprint: f}
	}
	chunk := func(g string, errText string, objs ...*fodcv1.SchemaObjectFingerprint) *fodcv1.StreamSchemaRegistryRequest {
		return &fodcv1.StreamSchemaRegistryRequest{Group: &fodcv1.SchemaRegistryGroup{Group: g, Error: errText, Objects: objs}}
	}
	done := &fodcv1.StreamSchemaRegistryRequest{Done: true}

	t.Run("merge", func(t *testing.T) {
		chunks := []*fodcv1.StreamSchemaRegistryRequest{
			chunk("g1", "", obj("group", "g1", 1), obj("stream", "a", 2)),
			chunk("g2", "first"),
			chunk("g1", "", obj("stream", "b", 3)),
			chunk("g2", ""),
			chunk("g2", "second"),
			chunk("g3", ""),
			chunk("", ""), // nameless without error: ignored
			nil,
			done,
		}
		got, err := MergeRegistryChunks(chunks)
		require.NoError(t, err)
		require.Len(t, got, 3)
		require.True(t, proto.Equal(&fodcv1.SchemaRegistryGroup{Group: "g1", Objects: []*fodcv1.SchemaObjectFingerprint{
			obj("group", "g1", 1), obj("stream", "a", 2), obj("stream", "b", 3),
		}}, got["g1"]))
		require.True(t, proto.Equal(&fodcv1.SchemaRegistryGroup{Group: "g2", Error: "second"}, got["g2"]))
		require.True(t, proto.Equal(&fodcv1.SchemaRegistryGroup{Group: "g3"}, got["g3"]))
		got["g1"].Objects[0].Fingerprint = 42
		require.Equal(t, uint64(1), chunks[0].GetGroup().GetObjects()[0].GetFingerprint())
	})

	t.Run("fatal chunk", func(t *testing.T) {
		got, err := MergeRegistryChunks([]*fodcv1.StreamSchemaRegistryRequest{
			chunk("g1", "", obj("stream", "a", 2)), chunk("", "etcd down"), done,
		})
		require.ErrorIs(t, err, ErrRegistryRead)
		require.ErrorContains(t, err, "etcd down")
		require.Nil(t, got)
	})

	t.Run("recorded liaison", func(t *testing.T) {
		rec, err := fixture.Load("head-agent-liaison-fake")
		require.NoError(t, err)
		frames := rec.Frames(fixture.MethodStreamSchemaRegistry, fixture.AgentToProxy)
		require.Len(t, frames, 2)
		var chunks []*fodcv1.StreamSchemaRegistryRequest
		for _, f := range frames {
			m, err := f.Message()
			require.NoError(t, err)
			chunks = append(chunks, m.(*fodcv1.StreamSchemaRegistryRequest))
		}
		require.True(t, chunks[1].GetDone())
		got, err := MergeRegistryChunks(chunks)
		require.ErrorIs(t, err, ErrRegistryRead)
		require.ErrorContains(t, err, "code = Unimplemented")
		require.ErrorContains(t, err, "GroupRegistryService")
		require.Nil(t, got)
	})

	t.Run("empty", func(t *testing.T) {
		got, err := MergeRegistryChunks([]*fodcv1.StreamSchemaRegistryRequest{done})
		require.NoError(t, err)
		require.Empty(t, got)
	})
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		s    Summary
		want string
	}{
		{Summary{}, "FODC unavailable: no agents registered"},
		{Summary{Total: 3}, "FODC unavailable: 0/3 registered agents support the lifecycle stream"},
		{Summary{Total: 3, Requested: 2, NotResponded: 2}, "FODC unavailable: 0/2 requested agents responded"},
		{Summary{Total: 3, Requested: 2, Responded: 1, NotResponded: 1}, ""},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, ErrorText(tt.s), "%+v", tt.s)
	}
}

// recordedReport returns the first lifecycle reply in a recording.
func recordedReport(t *testing.T, name, agentID string, liaison bool) AgentReport {
	t.Helper()
	rec, err := fixture.Load(name)
	require.NoError(t, err)
	frames := rec.Frames(fixture.MethodStreamLifecycle, fixture.AgentToProxy)
	require.NotEmpty(t, frames)
	m, err := frames[0].Message()
	require.NoError(t, err)
	reply := m.(*fodcv1.StreamLifecycleRequest)
	return AgentReport{AgentID: agentID, PodName: reply.GetPodName(), Liaison: liaison, Reply: reply}
}

func TestWriteJSONRecorded(t *testing.T) {
	dir, err := fixture.Dir()
	require.NoError(t, err)
	collected := time.Date(2026, 11, 26, 20, 8, 56, 123456789, time.UTC)
	for _, tt := range []struct {
		name    string
		liaison bool
		reports bool
	}{
		{name: "head-agent-data-node", reports: true},
		{name: "v0.10.3-agent-data-node", reports: true},
		{name: "head-agent-liaison-fake", liaison: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reports := []AgentReport{recordedReport(t, tt.name, "id-1", tt.liaison)}
			groups := MergeGroups(reports)
			Apply(groups, NewChecker().Check(groups, reports, Registry{}, false), Registry{})
			sum := Summary{Total: 1, Requested: 1, Responded: 1}
			r := Result{Groups: groups, Statuses: PodStatuses(reports), Summary: sum, Error: ErrorText(sum), CollectedAt: collected}
			var buf bytes.Buffer
			require.NoError(t, WriteJSON(&buf, r))
			require.True(t, json.Valid(buf.Bytes()))

			var body struct {
				Groups   []json.RawMessage `json:"groups"`
				Statuses []struct {
					PodName string `json:"pod_name"`
					Reports []struct {
						Filename   string `json:"filename"`
						ReportJSON string `json:"report_json"`
					} `json:"reports"`
				} `json:"lifecycle_statuses"`
				Summary     map[string]int `json:"agent_summary"`
				Error       *string        `json:"error"`
				CollectedAt string         `json:"collected_at"`
			}
			require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
			require.NotNil(t, body.Groups)
			require.Empty(t, body.Groups)
			require.Nil(t, body.Error)
			require.Equal(t, "2026-11-26T20:08:56.123456789Z", body.CollectedAt)
			require.Equal(t, map[string]int{"total": 1, "requested": 1, "responded": 1, "not_responded": 0}, body.Summary)
			if tt.reports {
				require.Len(t, body.Statuses, 1)
				require.Equal(t, "banyand-data-0", body.Statuses[0].PodName)
				require.Len(t, body.Statuses[0].Reports, 1)
				rep := body.Statuses[0].Reports[0]
				require.Equal(t, "20260101_000000.json", rep.Filename)
				var doc map[string]any
				require.NoError(t, json.Unmarshal([]byte(rep.ReportJSON), &doc))
				require.Equal(t, "2.1", doc["report_version"])
			} else {
				require.NotNil(t, body.Statuses)
				require.Empty(t, body.Statuses)
			}

			// Apart from collected_at, the body equals the upstream proxy's.
			var ours map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &ours))
			delete(ours, "collected_at")
			b, err := json.Marshal(ours)
			require.NoError(t, err)
			upstream, err := os.ReadFile(filepath.Join(dir, tt.name+".http", "cluster_lifecycle.txt"))
			require.NoError(t, err)
			require.JSONEq(t, string(upstream), string(b))
		})
	}
}

func TestWriteJSONShapes(t *testing.T) {
	g := &fodcv1.GroupLifecycleInfo{
		Name:    "sw_metric",
		Catalog: "CATALOG_MEASURE",
		DataInfo: []*databasev1.DataInfo{{
			Node:          &databasev1.Node{Metadata: &commonv1.Metadata{Name: "n1"}, Roles: []databasev1.Role{databasev1.Role_ROLE_DATA}, CreatedAt: timestamppb.New(time.Unix(1795723715, 5).UTC())},
			DataSizeBytes: 1 << 40,
		}},
		SchemaConsistency: &fodcv1.SchemaConsistency{
			Status:  StatusInconsistent,
			Objects: []*fodcv1.ObjectConsistency{{Kind: "measure", Name: "m", RegistryFingerprint: 18446744073709551615}},
			Issues:  []*fodcv1.SchemaIssue{{Kind: "measure", Name: "m", Node: "n1", Type: IssueCacheStale}},
		},
	}
	r := Result{
		Groups: []*fodcv1.GroupLifecycleInfo{g, nil, {Name: "empty"}},
		Statuses: []PodReports{
			{PodName: "no-reports"},
			{PodName: "p", Reports: []*fodcv1.LifecycleReport{{Filename: "a.json", ReportJson: `{"x":"<&>"}`}}},
		},
		Summary:     Summary{Total: 2, Requested: 2, NotResponded: 2},
		Error:       ErrorText(Summary{Total: 2, Requested: 2, NotResponded: 2}),
		CollectedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, r))
	var a, b bytes.Buffer
	require.NoError(t, WriteJSON(&a, r))
	require.NoError(t, WriteJSON(&b, r))
	require.Equal(t, a.String(), b.String(), "output must be stable")

	require.JSONEq(t, `{
	"groups":[
		{"name":"sw_metric","catalog":"CATALOG_MEASURE","resource_opts":null,
		 "data_info":[{"node":{"metadata":{"group":"","name":"n1","id":0,"create_revision":"0","mod_revision":"0"},
		   "roles":["ROLE_DATA"],"grpc_address":"","http_address":"","created_at":"2026-11-26T20:08:35.000000005Z","labels":{},
		   "property_repair_gossip_grpc_address":"","property_schema_grpc_address":"","property_schema_gossip_grpc_address":""},
		   "segment_info":[],"data_size_bytes":"1099511627776"}],
		 "errors":[],
		 "schema_consistency":{"status":"CONSISTENCY_STATUS_INCONSISTENT",
		   "objects":[{"kind":"measure","name":"m","registry_fingerprint":"18446744073709551615","node_fingerprints":[]}],
		   "issues":[{"kind":"measure","name":"m","node":"n1","type":"SCHEMA_ISSUE_TYPE_CACHE_STALE"}]}},
		{"name":"empty","catalog":"","resource_opts":null,"data_info":[],"errors":[],"schema_consistency":null}
	],
	"lifecycle_statuses":[{"pod_name":"p","reports":[{"filename":"a.json","report_json":"{\"x\":\"<&>\"}"}]}],
	"agent_summary":{"total":2,"requested":2,"responded":0,"not_responded":2},
	"error":"FODC unavailable: 0/2 requested agents responded",
	"collected_at":"2026-01-02T03:04:05Z"}`, buf.String())
}

func TestPodStatuses(t *testing.T) {
	rep := func(name string) []*fodcv1.LifecycleReport {
		return []*fodcv1.LifecycleReport{{Filename: name}}
	}
	with := func(id, pod, replyPod string, reports []*fodcv1.LifecycleReport) AgentReport {
		return AgentReport{AgentID: id, PodName: pod, Reply: &fodcv1.StreamLifecycleRequest{PodName: replyPod, LifecycleData: &fodcv1.LifecycleData{Reports: reports}}}
	}
	got := PodStatuses([]AgentReport{
		with("2", "b", "b", rep("b2")),
		with("1", "b", "b", rep("b1")),
		with("3", "", "a-from-reply", rep("a")),
		with("4", "c", "c", nil),
		{AgentID: "5", PodName: "d"},
	})
	require.Equal(t, []PodReports{
		{PodName: "a-from-reply", Reports: rep("a")},
		{PodName: "b", Reports: rep("b1")},
		{PodName: "b", Reports: rep("b2")},
	}, got)
}
