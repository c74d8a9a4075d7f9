package schemaregistry

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"testing"

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

// normalize orders a reply sequence (groups and objects come in an
// unspecified order) so that two sequences compare.
func normalize(msgs []*fodcv1.StreamSchemaRegistryRequest) []*fodcv1.StreamSchemaRegistryRequest {
	out := make([]*fodcv1.StreamSchemaRegistryRequest, 0, len(msgs))
	for _, m := range msgs {
		m = proto.Clone(m).(*fodcv1.StreamSchemaRegistryRequest)
		slices.SortFunc(m.GetGroup().GetObjects(), func(a, b *fodcv1.SchemaObjectFingerprint) int {
			return cmp.Or(strings.Compare(a.GetKind(), b.GetKind()), strings.Compare(a.GetName(), b.GetName()))
		})
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b *fodcv1.StreamSchemaRegistryRequest) int {
		if a.GetDone() != b.GetDone() {
			if a.GetDone() {
				return 1
			}
			return -1
		}
		return strings.Compare(a.GetGroup().GetGroup(), b.GetGroup().GetGroup())
	})
	return out
}

// Against the recorded liaison client port, the read produces the reply
// sequence the upstream liaison agent sent (up to order), so every
// fingerprint equals the test vectors of AGENT-NODE.md §7.4.
func TestReadMatchesRecording(t *testing.T) {
	node := fakenode.Start(t, "cluster.liaison-client")
	r := &Reader{Addr: node.Addr()}
	groups, err := r.Read(context.Background())
	require.NoError(t, err)
	got := normalize(Messages(groups, nil))

	rec, err := fixture.LoadNode("cluster.proxy")
	require.NoError(t, err)
	var want []*fodcv1.StreamSchemaRegistryRequest
	for _, f := range rec.Frames(fixture.MethodStreamSchemaRegistry, fixture.AgentToProxy) {
		m, err := f.Message()
		require.NoError(t, err)
		want = append(want, m.(*fodcv1.StreamSchemaRegistryRequest))
		if m.(*fodcv1.StreamSchemaRegistryRequest).GetDone() {
			break // the first round
		}
	}
	want = normalize(want)
	require.Len(t, got, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], got[i]), "message %d: got\n%s\nwant\n%s", i, prototext.Format(got[i]), prototext.Format(want[i]))
	}

	vectors := map[string]uint64{
		"group sw_metric": 17526624325021968790, "group sw_stream": 1344293582935261146,
		"group _property_gossip": 7605610433030595634, "group _deletion_task": 17184817977018113290,
		"indexRule sw_metric/service_name": 8179188176356247717, "indexRule sw_stream/trace_id": 13026461085390711814,
		"measure sw_metric/service_cpm_minute": 15940119489095802250, "measure sw_metric/_top_n_result": 17997885802807346965,
		"stream sw_stream/segment": 7809108659524124416, "stream _property_gossip/_property_gossip_trace_stream": 1225037292760195636,
	}
	for _, g := range groups {
		for _, o := range g.GetObjects() {
			k := o.GetKind() + " " + g.GetGroup() + "/" + o.GetName()
			if o.GetKind() == "group" {
				k = "group " + o.GetName()
			}
			v, ok := vectors[k]
			require.True(t, ok, "unexpected object %s", k)
			require.Equal(t, v, o.GetFingerprint(), k)
			delete(vectors, k)
		}
	}
	require.Empty(t, vectors, "objects not read")
}

// The group list failing is fatal: one message with an empty group name
// and the error, then done. A failing per-group call marks only its group.
func TestFailures(t *testing.T) {
	node := fakenode.Start(t, "cluster.liaison-client")
	r := &Reader{Addr: node.Addr()}

	node.Fail("/banyandb.database.v1.GroupRegistryService/List", status.Error(codes.Unimplemented, "not here"))
	groups, err := r.Read(context.Background())
	require.Error(t, err)
	msgs := Messages(groups, err)
	require.Len(t, msgs, 2)
	require.Equal(t, "", msgs[0].GetGroup().GetGroup())
	require.Contains(t, msgs[0].GetGroup().GetError(), "list groups on "+node.Addr())
	require.True(t, msgs[1].GetDone())

	node.Fail("/banyandb.database.v1.GroupRegistryService/List", nil)
	node.Fail("/banyandb.database.v1.MeasureRegistryService/List", status.Error(codes.Internal, "measures down"))
	groups, err = r.Read(context.Background())
	require.NoError(t, err)
	require.Len(t, groups, 4)
	for _, g := range groups {
		if g.GetGroup() == "sw_metric" {
			require.Contains(t, g.GetError(), "measures down")
			require.Empty(t, g.GetObjects())
		} else {
			require.Empty(t, g.GetError())
			require.NotEmpty(t, g.GetObjects())
		}
	}

	_, err = (&Reader{}).Read(context.Background())
	require.EqualError(t, err, "no schema-registry address configured")
}

// Large groups are split into messages of at most 50 objects; an empty
// group is one message.
func TestMessagesChunking(t *testing.T) {
	objs := make([]*fodcv1.SchemaObjectFingerprint, 120)
	for i := range objs {
		objs[i] = &fodcv1.SchemaObjectFingerprint{Kind: "stream", Name: "s"}
	}
	msgs := Messages([]*fodcv1.SchemaRegistryGroup{{Group: "big", Objects: objs}, {Group: "empty"}}, nil)
	require.Len(t, msgs, 5)
	require.Len(t, msgs[0].GetGroup().GetObjects(), 50)
	require.Len(t, msgs[2].GetGroup().GetObjects(), 20)
	require.Equal(t, "empty", msgs[3].GetGroup().GetGroup())
	require.Empty(t, msgs[3].GetGroup().GetObjects())
	require.True(t, msgs[4].GetDone())
}
