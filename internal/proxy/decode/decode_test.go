package decode

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

var decodeInfo = NodeInfo{
	Node:   series.Node{AgentID: "id", PodName: "pod-0", Role: "ROLE_DATA", IP: "10.0.0.1", Port: 17913},
	Labels: map[string]string{"type": "hot", "zone": "z1", "pod_name": "x"},
}

// comparable is a Batch with values as bits, so that NaNs compare equal.
type comparableBatch struct {
	Node        series.Node
	Series      []comparableSeries
	CleanLabels bool
}

type comparableSeries struct {
	Name, Help string
	Type       fodcv1.MetricType
	Labels     series.Labels
	Points     [][2]uint64
}

func toComparable(b series.Batch) comparableBatch {
	out := comparableBatch{Node: b.Node, CleanLabels: b.CleanLabels}
	for _, s := range b.Series {
		cs := comparableSeries{Name: s.Name, Help: s.Help, Type: s.Type, Labels: s.Labels}
		for _, p := range s.Points {
			cs.Points = append(cs.Points, [2]uint64{uint64(p.TimestampMs), math.Float64bits(p.Value)})
		}
		out.Series = append(out.Series, cs)
	}
	return out
}

// requireSamePacked requires DecodeLatest to pack raw as series.Pack packs
// the reference's batch: the same series, label sets cleaned alike, the
// same pairs dropped, the same statistics.
func requireSamePacked(t testing.TB, want *series.Packed, info NodeInfo, raw []byte, valid TimeRange, wantSt Stats) {
	t.Helper()
	got, st, err := Limits{}.DecodeLatest(info, raw, received, valid)
	require.NoError(t, err)
	require.Equal(t, wantSt, st)
	require.Equal(t, toComparable(want.Batch()), toComparable(got.Batch()), "range %v", valid)
	require.Equal(t, want.DroppedLabels, got.DroppedLabels)
	require.Zero(t, got.Dropped)
	// Every string once.
	seen := map[string]bool{}
	for _, s := range got.Strings {
		require.False(t, seen[s], "%q twice", s)
		seen[s] = true
	}
}

// requireSameAsBatch decodes raw both ways and requires identical results
// (or failure of both when the message does not unmarshal).
func requireSameAsBatch(t testing.TB, info NodeInfo, raw []byte, window bool) (series.Batch, bool) {
	t.Helper()
	var reply fodcv1.StreamMetricsRequest
	uerr := proto.Unmarshal(raw, &reply)
	got, err := Batch(info, raw, received, window)
	if uerr != nil {
		require.Error(t, err, "proto.Unmarshal failed with %v", uerr)
		return got, false
	}
	require.NoError(t, err)
	want := fromMessage(info, &reply, received, window)
	require.Equal(t, toComparable(want), toComparable(got))
	// Label sets keep their nil-ness too.
	for i := range want.Series {
		require.Equal(t, want.Series[i].Labels == nil, got.Series[i].Labels == nil)
	}
	// Time ranges drop the same metrics: the one the scraper uses, and
	// one that splits the small times random replies carry.
	for _, valid := range []TimeRange{{}, SaneRange(received), {Min: time.Unix(2, 0), Max: time.Unix(5e9, 0)}, {Max: time.Unix(3, 0)}} {
		gotIn, st, err := Decode(info, raw, received, window, valid)
		require.NoError(t, err)
		wantIn, dropped := fromMessageIn(info, &reply, received, window, valid)
		require.Equal(t, toComparable(wantIn), toComparable(gotIn), "range %v", valid)
		require.Equal(t, dropped, st.OutOfRange, "range %v", valid)
		if !window {
			requireSamePacked(t, series.Pack(wantIn), info, raw, valid, st)
		}
	}
	return got, true
}

func TestDecodeBatchFixtures(t *testing.T) {
	names, err := fixture.Names()
	require.NoError(t, err)
	require.Len(t, names, 5)
	frames := 0
	for _, name := range names {
		rec, err := fixture.Load(name)
		require.NoError(t, err)
		// The container names the recorded agent registered, which its
		// series' container_name labels must be among.
		info := decodeInfo
		if regs := rec.Frames(fixture.MethodRegisterAgent, fixture.AgentToProxy); len(regs) > 0 {
			m, err := regs[0].Message()
			require.NoError(t, err)
			info.Containers = m.(*fodcv1.RegisterAgentRequest).GetContainerNames()
		}
		for i, f := range rec.Frames(fixture.MethodStreamMetrics, fixture.AgentToProxy) {
			raw, err := f.Bytes()
			require.NoError(t, err)
			for _, window := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%d/window=%v", name, i, window), func(t *testing.T) {
					b, ok := requireSameAsBatch(t, info, raw, window)
					require.True(t, ok)
					require.NotEmpty(t, b.Series)
				})
			}
			frames++
		}
	}
	require.Positive(t, frames)
}

func TestDecodeBatchRandomMessages(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 300 {
		reply := randomReply(rng)
		raw, err := proto.Marshal(reply)
		require.NoError(t, err)
		for _, window := range []bool{false, true} {
			_, ok := requireSameAsBatch(t, decodeInfo, raw, window)
			require.True(t, ok, "message %d", i)
		}
	}
}

// TestDecodeBatchWireQuirks covers encodings proto.Marshal never makes
// but a decoder must accept: duplicate label keys, repeated singular
// fields, unknown fields of every wire type, known fields of the wrong
// wire type, and field order.
func TestDecodeBatchWireQuirks(t *testing.T) {
	entry := func(k, v string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		return protowire.AppendString(b, v)
	}
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	tsMsg := func(sec, nanos uint64) []byte {
		var b []byte
		if sec != 0 {
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, sec)
		}
		if nanos != 0 {
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, nanos)
		}
		return b
	}
	unknowns := func(b []byte) []byte {
		b = protowire.AppendTag(b, 100, protowire.VarintType)
		b = protowire.AppendVarint(b, 7)
		b = protowire.AppendTag(b, 101, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 7)
		b = protowire.AppendTag(b, 102, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 7)
		b = field(b, 103, []byte("x"))
		b = protowire.AppendTag(b, 104, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		return protowire.AppendTag(b, 104, protowire.EndGroupType)
	}
	metric := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	name := func(s string) []byte { return field(nil, 1, []byte(s)) }
	label := func(k, v string) []byte { return field(nil, 2, entry(k, v)) }
	value := func(f float64) []byte {
		b := protowire.AppendTag(nil, 3, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(f))
	}
	typ := func(v uint64) []byte {
		b := protowire.AppendTag(nil, 6, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	tests := []struct {
		name    string
		metrics [][]byte
		tail    []byte // after the metrics
		want    func(t *testing.T, b series.Batch)
	}{
		{
			name:    "later duplicate label key wins",
			metrics: [][]byte{metric(name("m"), label("a", "1"), label("b", "2"), label("a", "3"))},
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, "3", b.Series[0].Labels.Get("a"))
			},
		},
		{
			name:    "later empty duplicate removes the label",
			metrics: [][]byte{metric(name("m"), label("a", "1"), label("a", ""))},
			want: func(t *testing.T, b series.Batch) {
				require.Empty(t, b.Series[0].Labels.Get("a"))
			},
		},
		{
			name: "duplicate key within one entry, entry without key or value",
			metrics: [][]byte{metric(name("m"),
				field(nil, 2, append(entry("a", "1"), entry("b", "2")...)),
				field(nil, 2, nil), field(nil, 2, entry("", "v")))},
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, "2", b.Series[0].Labels.Get("b"))
				require.Empty(t, b.Series[0].Labels.Get("a"))
			},
		},
		{
			name:    "repeated scalars: last wins; timestamps merge",
			metrics: [][]byte{metric(name("x"), value(1), name("m"), value(2), typ(2), typ(1), field(nil, 5, tsMsg(10, 0)), field(nil, 5, tsMsg(0, 7e8)))},
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, "m", b.Series[0].Name)
				require.Equal(t, series.Point{TimestampMs: 10700, Value: 2}, b.Series[0].Points[0])
				require.Equal(t, fodcv1.MetricType(1), b.Series[0].Type)
			},
		},
		{
			name:    "reply timestamp after the metrics applies to them",
			metrics: [][]byte{metric(name("m"))},
			tail:    field(nil, 2, tsMsg(5, 0)),
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, int64(5000), b.Series[0].Points[0].TimestampMs)
			},
		},
		{
			name:    "empty timestamp message is time zero",
			metrics: [][]byte{metric(name("m"), field(nil, 5, nil))},
			want: func(t *testing.T, b series.Batch) {
				require.Zero(t, b.Series[0].Points[0].TimestampMs)
			},
		},
		{
			name:    "unknown fields everywhere",
			metrics: [][]byte{metric(unknowns(nil), name("m"), field(nil, 2, unknowns(entry("k", "v"))), field(nil, 5, unknowns(tsMsg(3, 0))), unknowns(nil))},
			tail:    unknowns(nil),
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, "v", b.Series[0].Labels.Get("k"))
				require.Equal(t, int64(3000), b.Series[0].Points[0].TimestampMs)
			},
		},
		{
			name: "known fields with the wrong wire type are skipped",
			metrics: [][]byte{metric(name("m"),
				protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5),
				protowire.AppendFixed32(protowire.AppendTag(nil, 3, protowire.Fixed32Type), 5),
				field(nil, 6, []byte("x")), value(4))},
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, "m", b.Series[0].Name)
				require.Equal(t, 4.0, b.Series[0].Points[0].Value)
			},
		},
		{
			name:    "unknown enum value and negative enum",
			metrics: [][]byte{metric(name("a"), typ(99)), metric(name("b"), typ(math.MaxUint64))},
			want: func(t *testing.T, b series.Batch) {
				require.Equal(t, fodcv1.MetricType(99), b.Series[0].Type)
				require.Equal(t, fodcv1.MetricType(-1), b.Series[1].Type)
			},
		},
		{
			name:    "many labels and special values",
			metrics: [][]byte{manyLabels(40, label), metric(name("nan"), value(math.NaN())), metric(name("inf"), value(math.Inf(-1)))},
			want: func(t *testing.T, b series.Batch) {
				require.Len(t, b.Series, 3)
			},
		},
	}
	for _, tt := range tests {
		var raw []byte
		for _, m := range tt.metrics {
			raw = field(raw, 1, m)
		}
		raw = append(raw, tt.tail...)
		for _, window := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/window=%v", tt.name, window), func(t *testing.T) {
				b, ok := requireSameAsBatch(t, decodeInfo, raw, window)
				require.True(t, ok)
				tt.want(t, b)
			})
		}
	}
}

// TestDecodeBatchUnevenReply checks a reply whose first metric is unlike
// the others, which the label storage is sized after.
func TestDecodeBatchUnevenReply(t *testing.T) {
	first := &fodcv1.Metric{Name: "wide", Labels: map[string]string{}}
	for i := range 500 {
		first.Labels[fmt.Sprint("k", i)] = "v"
	}
	reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{first}}
	for range 2000 {
		reply.Metrics = append(reply.Metrics, &fodcv1.Metric{})
	}
	raw, err := proto.Marshal(reply)
	require.NoError(t, err)
	for _, window := range []bool{false, true} {
		b, ok := requireSameAsBatch(t, decodeInfo, raw, window)
		require.True(t, ok)
		require.Equal(t, "wide", b.Series[len(b.Series)-1].Name)
	}
}

func manyLabels(n int, label func(k, v string) []byte) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, "many")
	for i := range n {
		b = append(b, label(fmt.Sprintf("k%02d", (i*7)%n), fmt.Sprint(i))...)
	}
	return append(b, label("k03", "last")...)
}

func TestDecodeBatchRejectsMalformed(t *testing.T) {
	good, err := proto.Marshal(&fodcv1.StreamMetricsRequest{
		Metrics:   []*fodcv1.Metric{{Name: "m", Labels: map[string]string{"a": "b"}, Value: 1, Timestamp: ts(3)}},
		Timestamp: replyTS,
	})
	require.NoError(t, err)
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	nested := func(outer, inner []byte) []byte {
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		return protowire.AppendBytes(b, append(outer, inner...))
	}
	tests := []struct {
		name string
		raw  []byte
	}{
		{"truncated", good[:len(good)-1]},
		{"length past the end", append(tag(1, protowire.BytesType), 10, 1)},
		{"field number zero", []byte{0x02, 0x00}},
		{"field number too large", protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3)},
		{"wire type 6", []byte{0x0e}},
		{"wire type 7", []byte{0x0f}},
		{"stray end group", tag(9, protowire.EndGroupType)},
		{"unterminated group", append(tag(9, protowire.StartGroupType), 0x08, 0x01)},
		{"mismatched group end", append(tag(9, protowire.StartGroupType), tag(10, protowire.EndGroupType)...)},
		{"overlong varint", append(tag(9, protowire.VarintType), bytesOf(0xff, 10)...)},
		{"invalid UTF-8 name", nested(tag(1, protowire.BytesType), []byte{1, 0xff})},
		{"invalid UTF-8 description", nested(tag(4, protowire.BytesType), []byte{1, 0xc3})},
		{"invalid UTF-8 label key", nested(tag(2, protowire.BytesType), append([]byte{3}, append(tag(1, protowire.BytesType), 1, 0xff)...))},
		{"invalid UTF-8 label value", nested(tag(2, protowire.BytesType), append([]byte{3}, append(tag(2, protowire.BytesType), 1, 0xfe)...))},
		{"label entry field number too large", nested(tag(2, protowire.BytesType), append([]byte{6}, protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 0)...))},
		{"truncated metric timestamp", nested(tag(5, protowire.BytesType), []byte{2, 0x08, 0x80})},
		{"bad reply timestamp", append(tag(2, protowire.BytesType), 1, 0x0f)},
		{"end group inside a metric", nested(tag(9, protowire.EndGroupType), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, proto.Unmarshal(tt.raw, &fodcv1.StreamMetricsRequest{}), "the case must be malformed")
			for _, window := range []bool{false, true} {
				_, err := Batch(decodeInfo, tt.raw, received, window)
				require.Error(t, err)
			}
		})
	}
}

func bytesOf(c byte, n int) []byte { return []byte(strings.Repeat(string(c), n)) }

// TestDecodeBatchKeepsNoWireMemory checks that the result stays intact
// when the wire bytes are overwritten, long strings included.
func TestDecodeBatchKeepsNoWireMemory(t *testing.T) {
	long := strings.Repeat("v", maxBlockCopy+1)
	reply := &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
		{Name: "m", Labels: map[string]string{"long": long, "short": "s"}, Description: long + "help", Value: 1},
		{Name: "m", Labels: map[string]string{"long": long, "short": "t"}, Description: long + "help", Value: 2},
	}}
	raw, err := proto.Marshal(reply)
	require.NoError(t, err)
	for _, window := range []bool{false, true} {
		want := fromMessage(decodeInfo, reply, received, window)
		b, err := Batch(decodeInfo, raw, received, window)
		require.NoError(t, err)
		var p *series.Packed
		if !window {
			p, _, err = Limits{}.DecodeLatest(decodeInfo, raw, received, TimeRange{})
			require.NoError(t, err)
		}
		scratch := append([]byte(nil), raw...)
		clear(raw)
		require.Equal(t, toComparable(want), toComparable(b))
		if p != nil {
			require.Equal(t, toComparable(series.Pack(want).Batch()), toComparable(p.Batch()))
		}
		copy(raw, scratch)
	}
}

func FuzzBatch(f *testing.F) {
	names, err := fixture.Names()
	require.NoError(f, err)
	for _, name := range names {
		rec, err := fixture.Load(name)
		require.NoError(f, err)
		for _, fr := range rec.Frames(fixture.MethodStreamMetrics, fixture.AgentToProxy) {
			raw, err := fr.Bytes()
			require.NoError(f, err)
			if len(raw) < 4096 {
				f.Add(raw, false)
			}
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		raw, err := proto.Marshal(randomReply(rng))
		require.NoError(f, err)
		f.Add(raw, rng.IntN(2) == 0)
	}
	f.Fuzz(func(t *testing.T, raw []byte, window bool) {
		requireSameAsBatch(t, decodeInfo, raw, window)
	})
}

// randomReply makes a reply with collisions between series, node labels
// and times, empty strings, special values and unknown enum values.
func randomReply(rng *rand.Rand) *fodcv1.StreamMetricsRequest {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	reply := &fodcv1.StreamMetricsRequest{}
	if rng.IntN(2) == 0 {
		reply.Timestamp = ts(rng.Int64N(1e10))
		reply.Timestamp.Nanos = rng.Int32N(1e9)
	}
	n := rng.IntN(40)
	for range n {
		m := &fodcv1.Metric{
			Name:        pick("a", "b", "b_bucket", "", "ü"),
			Description: pick("", "", "help a", "help b"),
			Type:        fodcv1.MetricType(rng.IntN(6) - 1),
		}
		switch rng.IntN(6) {
		case 0:
			m.Value = math.NaN()
		case 1:
			m.Value = math.Inf(1)
		default:
			m.Value = float64(rng.IntN(100)) / 4
		}
		switch rng.IntN(12) {
		case 0: // garbage times: year 0, year 10000, overflowing seconds
			m.Timestamp = ts([]int64{-62167219200, 253402300800, math.MaxInt64, math.MinInt64, 1 << 53}[rng.IntN(5)])
			m.Timestamp.Nanos = rng.Int32() - rng.Int32()
		case 1, 2, 3:
		default:
			m.Timestamp = ts(rng.Int64N(5))
			m.Timestamp.Nanos = rng.Int32N(3) * 4e8
		}
		if k := rng.IntN(5); k > 0 {
			m.Labels = make(map[string]string)
			for range k {
				m.Labels[pick("x", "y", "", "pod_name", "node_role", "node_type", "le", "bad-name", "__reserved")] = pick("1", "2", "", "é", "0.5")
			}
		}
		reply.Metrics = append(reply.Metrics, m)
	}
	return reply
}

// tenK is a realistic 10k-series latest reply in wire form.
func tenK(tb testing.TB) (NodeInfo, []byte) {
	var ms []*fodcv1.Metric
	for i := range 10000 {
		ms = append(ms, &fodcv1.Metric{
			Name: fmt.Sprintf("banyandb_metric_%d", i/20),
			Labels: map[string]string{
				"group": fmt.Sprintf("g%d", i%20), "shard": fmt.Sprint(i % 4), "node_role": "ROLE_DATA",
				"pod_name": "banyand-data-0", "container_name": "data",
			},
			Value:       float64(i),
			Description: "Help of the family.",
			Type:        fodcv1.MetricType_METRIC_TYPE_GAUGE,
		})
	}
	raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: ms, Timestamp: replyTS})
	require.NoError(tb, err)
	info := NodeInfo{Node: series.Node{Role: "ROLE_DATA", PodName: "banyand-data-0", IP: "10.0.0.1", Port: 17913}, Containers: []string{"data"}}
	return info, raw
}

// BenchmarkDecode compares the decoder's two outputs, the Packed of the
// /metrics hot path and a series.Batch, with proto.Unmarshal plus the
// reference decoder on a 10k-series reply.
func BenchmarkDecode(b *testing.B) {
	info, raw := tenK(b)
	b.Run("DecodeLatest", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			p, _, err := Limits{}.DecodeLatest(info, raw, time.Time{}, TimeRange{})
			if err != nil || p.Len() != 10000 {
				b.Fatal(err, p.Len())
			}
			p.Recycle() // as the proxy does once the answer is written
		}
	})
	b.Run("Batch", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := Batch(info, raw, time.Time{}, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Unmarshal+Batch", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var reply fodcv1.StreamMetricsRequest
			if err := proto.Unmarshal(raw, &reply); err != nil {
				b.Fatal(err)
			}
			fromMessage(info, &reply, time.Time{}, false)
		}
	})
}

// Points whose time no agent can mean are dropped and counted: year 0,
// year 10000, seconds that overflow milliseconds (which Batch, unbounded,
// wraps to 1969), and more than a day ahead; a reply time outside the
// range takes the metrics that rely on it along.
func TestDecodeDropsTimesOutOfRange(t *testing.T) {
	at := func(sec int64, nanos int32) *timestamppb.Timestamp {
		return &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}
	}
	now := received.Unix()
	for _, tc := range []struct {
		name    string
		replyTS *timestamppb.Timestamp
		times   []*timestamppb.Timestamp
		keptMs  []int64
		dropped int
	}{
		{"year 0 and 10000", nil, []*timestamppb.Timestamp{at(-62167219200, 0), at(253402300800, 0), at(now, 0)}, []int64{now * 1000}, 2},
		{"overflowing seconds", nil, []*timestamppb.Timestamp{at(math.MaxInt64, 0), at(math.MaxInt64/1000+1, 0), at(math.MinInt64, -1)}, nil, 3},
		{"a day ahead is the limit", nil, []*timestamppb.Timestamp{at(now+86400, 0), at(now+86400, 1e6), at(946684800, 0), at(946684799, 999e6)},
			[]int64{946684800000, (now + 86400) * 1000}, 2},
		{"reply time out of range", at(1<<40, 0), []*timestamppb.Timestamp{nil, at(now, 5e8)}, []int64{now*1000 + 500}, 1},
		{"reply time in range", at(now-60, 0), []*timestamppb.Timestamp{nil}, []int64{(now - 60) * 1000}, 0},
		{"no times at all", nil, []*timestamppb.Timestamp{nil}, []int64{received.UnixMilli()}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := &fodcv1.StreamMetricsRequest{Timestamp: tc.replyTS}
			for i, ts := range tc.times {
				reply.Metrics = append(reply.Metrics, &fodcv1.Metric{Name: "m", Labels: map[string]string{"i": fmt.Sprint(i)}, Value: 1, Timestamp: ts})
			}
			raw, err := proto.Marshal(reply)
			require.NoError(t, err)
			b, st, err := Decode(decodeInfo, raw, received, true, SaneRange(received))
			require.NoError(t, err)
			require.Equal(t, tc.dropped, st.OutOfRange)
			var kept []int64
			for _, s := range b.Series {
				for _, p := range s.Points {
					kept = append(kept, p.TimestampMs)
				}
			}
			slices.Sort(kept)
			require.Equal(t, tc.keptMs, kept)
			requireSameAsBatch(t, decodeInfo, raw, true)
		})
	}
	// Unbounded, Batch keeps everything, as it always did.
	raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "m", Timestamp: at(-62167219200, 0)}}})
	require.NoError(t, err)
	b, err := Batch(decodeInfo, raw, received, false)
	require.NoError(t, err)
	require.Len(t, b.Series, 1)
}
