package decode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// A reply over any limit is refused whole, with the limit it broke; a reply
// at every limit passes untouched.
func TestLimitsRefuseTheWholeReply(t *testing.T) {
	lim := Limits{MaxSeries: 3, MaxLabels: 2, MaxLabelNameLen: 8, MaxLabelValueLen: 16, MaxNameLen: 12}
	metric := func(name string, labels map[string]string) *fodcv1.Metric {
		return &fodcv1.Metric{Name: name, Labels: labels, Value: 1}
	}
	atLimit := []*fodcv1.Metric{
		metric("abcdefghijkl", map[string]string{"abcdefgh": strings.Repeat("v", 16), "b": "x"}),
		metric("m", nil),
		metric("n", map[string]string{"a": "1"}),
	}
	tests := []struct {
		name    string
		metrics []*fodcv1.Metric
		reason  string
	}{
		{"at every limit", atLimit, ""},
		{"too many series", append(append([]*fodcv1.Metric{}, atLimit...), metric("o", nil)), ReasonSeriesPerReply},
		{"too many labels", []*fodcv1.Metric{metric("m", map[string]string{"a": "1", "b": "2", "c": "3"})}, ReasonLabelsPerSeries},
		{"label name too long", []*fodcv1.Metric{metric("m", map[string]string{"abcdefghi": "1"})}, ReasonLabelNameLength},
		{"label value too long", []*fodcv1.Metric{metric("m", map[string]string{"a": strings.Repeat("v", 17)})}, ReasonLabelValueLength},
		{"metric name too long", []*fodcv1.Metric{metric("abcdefghijklm", nil)}, ReasonMetricNameLength},
		{"bad series after good ones", []*fodcv1.Metric{metric("m", nil), metric("abcdefghijklm", nil)}, ReasonMetricNameLength},
	}
	for _, tc := range tests {
		for _, window := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				raw, err := proto.Marshal(&fodcv1.StreamMetricsRequest{Metrics: tc.metrics})
				require.NoError(t, err)
				info := NodeInfo{Node: series.Node{PodName: "p"}}
				b, err := lim.Batch(info, raw, time.Unix(1, 0), window)
				if tc.reason == "" {
					require.NoError(t, err)
					require.Len(t, b.Series, len(tc.metrics))
					unlimited, err := Batch(info, raw, time.Unix(1, 0), window)
					require.NoError(t, err)
					require.Equal(t, unlimited, b, "limits never change an accepted reply")
					return
				}
				var le *LimitError
				require.True(t, errors.As(err, &le), "%v", err)
				require.Equal(t, tc.reason, le.Reason)
				require.Greater(t, le.Got, le.Limit)
				require.Empty(t, b.Series, "nothing of a refused reply is kept")
			})
		}
	}
}
