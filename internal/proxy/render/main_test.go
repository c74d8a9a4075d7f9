package render

import (
	"testing"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/decode"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

// TestMain checks for leaked goroutines (the promtool test runs a process).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// decodeMessage builds the batch the proxy builds for reply: encoded as
// the agent sends it, then decoded as the scraper decodes it.
func decodeMessage(tb testing.TB, info decode.NodeInfo, reply *fodcv1.StreamMetricsRequest, received time.Time, window bool) series.Batch {
	tb.Helper()
	raw, err := proto.Marshal(reply)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := decode.Batch(info, raw, received, window)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
