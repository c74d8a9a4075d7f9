package ondemand

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestURL(t *testing.T) {
	p := &Profiler{Addr: "127.0.0.1:6060"}
	u, err := p.URL("cpu", 0)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:6060/debug/pprof/profile?seconds=5", u)
	u, err = p.URL("heap", 9)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:6060/debug/pprof/heap", u)
	_, err = p.URL("trace", MaxSeconds+1)
	require.ErrorContains(t, err, "maximum")
	_, err = p.URL("bogus", 1)
	require.ErrorContains(t, err, "unknown profile type")
	_, err = (&Profiler{}).URL("heap", 0)
	require.ErrorContains(t, err, "no pprof address")
}

// A profile is accepted, then sent in chunks of the node's answer, the
// last one marked.
func TestAnswerStreamsChunks(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	p := &Profiler{Addr: strings.TrimPrefix(srv.URL, "http://")}
	var got []*fodcv1.ExtProfileRequest
	p.Answer(context.Background(), &fodcv1.ExtProfileCommand{RequestId: "r1", Type: "goroutine"}, func(m *fodcv1.ExtProfileRequest) error {
		got = append(got, m)
		return nil
	})
	require.GreaterOrEqual(t, len(got), 2)
	require.True(t, got[0].GetAccepted())
	require.True(t, got[len(got)-1].GetLast())
	var n int
	for _, m := range got {
		require.Equal(t, "r1", m.GetRequestId())
		require.Empty(t, m.GetError())
		n += len(m.GetData())
	}
	require.Positive(t, n)

	got = nil
	p.Answer(context.Background(), &fodcv1.ExtProfileCommand{RequestId: "r2", Type: "mutex"}, func(m *fodcv1.ExtProfileRequest) error {
		got = append(got, m)
		return nil
	})
	require.True(t, got[0].GetAccepted())
	require.GreaterOrEqual(t, len(got), 2)
	require.True(t, got[len(got)-1].GetLast())
}
