package lifecycle

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/testutil/fakenode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	inspectAll  = "/banyandb.fodc.v1.GroupLifecycleService/InspectAll"
	schemaState = "/banyandb.database.v1.NodeSchemaStateService/StreamGroupSchemaState"
)

// recordedLifecycle returns the lifecycle replies the upstream agent with
// pod podPrefix* sent in a proxy-side recording, in order.
func recordedLifecycle(t *testing.T, name string, pick func(*fodcv1.StreamLifecycleRequest) bool) []*fodcv1.StreamLifecycleRequest {
	t.Helper()
	rec, err := fixture.LoadNode(name)
	require.NoError(t, err)
	var out []*fodcv1.StreamLifecycleRequest
	for _, f := range rec.Frames(fixture.MethodStreamLifecycle, fixture.AgentToProxy) {
		m, err := f.Message()
		require.NoError(t, err)
		if r := m.(*fodcv1.StreamLifecycleRequest); pick(r) {
			out = append(out, r)
		}
	}
	return out
}

func requireProtoEqual(t *testing.T, want, got proto.Message) {
	t.Helper()
	require.True(t, proto.Equal(want, got), "got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
}

func reportDir(t *testing.T) string {
	t.Helper()
	d, err := fixture.NodeDir()
	require.NoError(t, err)
	return filepath.Join(d, "standalone.files", "lifecycle-report-dir")
}

// On the liaison's internal port the collection reproduces the recorded
// reply of the upstream liaison agent exactly: InspectAll's groups with the
// node's schema state folded in, fingerprints equal to the test vectors.
func TestLiaisonMatchesRecording(t *testing.T) {
	node := fakenode.Start(t, "cluster.liaison-internal")
	c := &Collector{ReportDir: t.TempDir(), Addr: node.Addr(), CacheTTL: time.Minute}
	got, err := c.Collect(context.Background())
	require.NoError(t, err)
	want := recordedLifecycle(t, "cluster.proxy", func(r *fodcv1.StreamLifecycleRequest) bool { return r.GetPodName() == "banyand-liaison-0" })
	require.NotEmpty(t, want)
	requireProtoEqual(t, want[0].GetLifecycleData(), got)
	// The test vectors of AGENT-NODE.md §7.4, node side.
	fps := map[string]uint64{}
	for _, g := range got.GetGroups() {
		for _, o := range g.GetSchemaConsistency().GetObjects() {
			fps[o.GetKind()+" "+g.GetName()+"/"+o.GetName()] = o.GetNodeFingerprints()[0].GetCacheFingerprint()
		}
	}
	require.Equal(t, uint64(17526624325021968790), fps["group sw_metric/sw_metric"])
	require.Equal(t, uint64(15940119489095802250), fps["measure sw_metric/service_cpm_minute"])
	require.Equal(t, uint64(7809108659524124416), fps["stream sw_stream/segment"])
	require.Equal(t, uint64(1225037292760195636), fps["stream _property_gossip/_property_gossip_trace_stream"])
}

// A data node answers InspectAll with Unimplemented: reports only, as the
// recorded data agent's reply, and InspectAll is never asked again.
func TestUnimplementedReportsOnlyForever(t *testing.T) {
	node := fakenode.Start(t, "cluster.data-node")
	c := &Collector{ReportDir: reportDir(t), Addr: node.Addr()} // no cache
	for range 3 {
		got, err := c.Collect(context.Background())
		require.NoError(t, err)
		require.Empty(t, got.GetGroups())
		want := recordedLifecycle(t, "standalone.proxy", func(*fodcv1.StreamLifecycleRequest) bool { return true })
		require.NotEmpty(t, want)
		requireProtoEqual(t, want[0].GetLifecycleData(), got)
	}
	require.Equal(t, 1, node.Count(inspectAll))
	require.Zero(t, node.Count(schemaState))
}

// The recorded data agent's reply has lifecycle_data even when empty.
func TestEmptyDataNodeReply(t *testing.T) {
	node := fakenode.Start(t, "cluster.data-node")
	c := &Collector{ReportDir: filepath.Join(t.TempDir(), "missing"), Addr: node.Addr()}
	got, err := c.Collect(context.Background())
	require.NoError(t, err)
	want := recordedLifecycle(t, "cluster.proxy", func(r *fodcv1.StreamLifecycleRequest) bool { return r.GetPodName() == "banyand-data-0" })
	requireProtoEqual(t, want[0].GetLifecycleData(), got)
}

// Node absent (the recorded Unavailable, and a closed port): the
// collection fails and nothing is cached; the node is asked again next
// time.
func TestNodeAbsentFails(t *testing.T) {
	node := fakenode.Start(t, "node-absent.node")
	c := &Collector{ReportDir: reportDir(t), Addr: node.Addr(), CacheTTL: time.Hour}
	_, err := c.Collect(context.Background())
	require.Equal(t, codes.Unavailable, status.Code(errorsUnwrap(err)), "%v", err)
	_, err = c.Collect(context.Background())
	require.Error(t, err)
	require.Equal(t, 2, node.Count(inspectAll))

	closed := &Collector{Addr: "127.0.0.1:1", Timeout: 5 * time.Second}
	_, err = closed.Collect(context.Background())
	require.Error(t, err)
}

func errorsUnwrap(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		if _, isStatus := status.FromError(err); isStatus {
			return err
		}
		err = u.Unwrap()
	}
}

// Schema state Unimplemented: groups without schema state and no error;
// another failure: every group carries the error, the collection succeeds.
func TestSchemaStateFailures(t *testing.T) {
	node := fakenode.Start(t, "cluster.liaison-internal")
	node.Fail(schemaState, status.Error(codes.Unimplemented, "no"))
	c := &Collector{Addr: node.Addr()}
	got, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.Len(t, got.GetGroups(), 4)
	for _, g := range got.GetGroups() {
		require.Nil(t, g.GetSchemaConsistency())
		require.Empty(t, g.GetErrors())
	}
	node.Fail(schemaState, status.Error(codes.Internal, "boom"))
	got, err = c.Collect(context.Background())
	require.NoError(t, err)
	for _, g := range got.GetGroups() {
		require.Nil(t, g.GetSchemaConsistency())
		require.Len(t, g.GetErrors(), 1)
		require.Contains(t, g.GetErrors()[0], "node schema state: ")
		require.Contains(t, g.GetErrors()[0], "boom")
	}
}

// The cache serves a fresh collection without touching the node, until
// the TTL has passed on the injected clock.
func TestCacheTTL(t *testing.T) {
	node := fakenode.Start(t, "cluster.liaison-internal")
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	c := &Collector{Addr: node.Addr(), CacheTTL: 10 * time.Minute, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	first, err := c.Collect(context.Background())
	require.NoError(t, err)
	mu.Lock()
	now = now.Add(9 * time.Minute)
	mu.Unlock()
	second, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.Same(t, first, second)
	require.Equal(t, 1, node.Count(inspectAll))
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	_, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2, node.Count(inspectAll))
}

// Report selection: the five lexically greatest *.json names, greatest
// first, large and non-JSON files left out.
func TestReadReports(t *testing.T) {
	d := t.TempDir()
	for _, n := range []string{"1.json", "2.json", "3.json", "4.json", "5.json", "6.json", "7.txt", "8.JSON"} {
		require.NoError(t, os.WriteFile(filepath.Join(d, n), []byte(`{"n":"`+n+`"}`), 0o600))
	}
	require.NoError(t, os.WriteFile(filepath.Join(d, "5.json"), make([]byte, MaxReportBytes+1), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(d, "9.json"), 0o755))
	var names []string
	for _, r := range ReadReports(d) {
		names = append(names, r.GetFilename())
	}
	require.Equal(t, []string{"6.json", "4.json", "3.json", "2.json"}, names)
}
