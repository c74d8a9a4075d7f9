package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// trackedBody is a response body that records how much was read and whether
// it was closed.
type trackedBody struct {
	r      io.Reader
	read   atomic.Int64
	closed atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *trackedBody) Close() error { b.closed.Store(true); return nil }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// fakeClock advances by step on every call.
func fakeClock(start time.Time, step time.Duration) func() time.Time {
	var n atomic.Int64
	return func() time.Time { return start.Add(time.Duration(n.Add(1)-1) * step) }
}

func TestScrape(t *testing.T) {
	start := time.UnixMilli(scrapeMs)
	textBody := string(readTestdata(t, "text.prom"))
	omBody := string(readTestdata(t, "openmetrics.txt"))

	tests := []struct {
		name       string
		status     int
		ct         string
		body       string
		limits     Limits
		transport  error
		wantErr    error // matched with errors.Is when set
		wantErrSub string
		reason     string
		samples    int
	}{
		{name: "text", status: 200, ct: textCT, body: textBody, samples: 16},
		{name: "openmetrics answered anyway", status: 200, ct: omCT, body: omBody, samples: 10},
		{name: "no content type", status: 200, body: "up 1\n", samples: 1},
		{name: "not found", status: 404, ct: "text/plain", body: strings.Repeat("x", 10_000), wantErrSub: "404", reason: reasonStatus},
		{name: "server error", status: 503, ct: textCT, body: "up 1\n", wantErrSub: "503", reason: reasonStatus},
		{
			name: "body too large", status: 200, ct: textCT, body: textBody, limits: Limits{MaxBodyBytes: 100},
			wantErr: ErrBodyTooLarge, wantErrSub: FlagMaxBodyBytes, reason: reasonBodyTooLarge,
		},
		{
			name: "too many samples", status: 200, ct: textCT, body: textBody, limits: Limits{MaxSamples: 5},
			wantErr: ErrTooManySamples, wantErrSub: FlagMaxSamples, reason: reasonTooManySamples,
		},
		{name: "parse error", status: 200, ct: textCT, body: "up{ 1\n", wantErrSub: "parse text exposition", reason: reasonParse},
		{name: "transport error", transport: errors.New("connection refused"), wantErrSub: "connection refused", reason: reasonRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body *trackedBody
			var gotAccept string
			client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				gotAccept = r.Header.Get("Accept")
				if tc.transport != nil {
					return nil, tc.transport
				}
				body = &trackedBody{r: strings.NewReader(tc.body)}
				h := http.Header{}
				if tc.ct != "" {
					h.Set("Content-Type", tc.ct)
				}
				return &http.Response{StatusCode: tc.status, Status: fmt.Sprintf("%d %s", tc.status, http.StatusText(tc.status)), Header: h, Body: body, Request: r}, nil
			})}
			reg := prometheus.NewRegistry()
			s := New(client, tc.limits, fakeClock(start, 5*time.Millisecond), reg)
			target := Target{URL: "http://node:2121/metrics", Name: "data"}

			fams, err := s.Scrape(context.Background(), target)

			require.True(t, strings.HasPrefix(gotAccept, "text/plain;version=0.0.4"), gotAccept)
			if body != nil {
				require.True(t, body.closed.Load(), "body closed")
				require.Equal(t, int64(len(tc.body)), body.read.Load(), "body drained")
			}
			health := s.Health()
			require.Len(t, health, 1)
			h := health[0]
			require.Equal(t, target.URL, h.URL)
			require.Equal(t, target.Name, h.Name)
			require.Equal(t, start, h.LastScrape)
			require.Equal(t, 5*time.Millisecond, h.Duration)
			require.Equal(t, 1, testutil.CollectAndCount(reg, "fodc_agent_scrape_duration_seconds"))

			if tc.reason != "" {
				require.Error(t, err)
				require.Nil(t, fams)
				if tc.wantErr != nil {
					require.ErrorIs(t, err, tc.wantErr)
				}
				require.Contains(t, err.Error(), tc.wantErrSub)
				require.False(t, h.Up)
				require.Equal(t, err.Error(), h.LastError)
				require.Zero(t, h.Samples)
				require.InDelta(t, 1, testutil.ToFloat64(s.m.failures.WithLabelValues(tc.reason)), 0)
				require.InDelta(t, 0, testutil.ToFloat64(s.m.samples), 0)
				return
			}
			require.NoError(t, err)
			n := 0
			for _, f := range fams {
				n += len(f.Samples)
			}
			require.Equal(t, tc.samples, n)
			require.True(t, h.Up)
			require.Empty(t, h.LastError)
			require.Equal(t, tc.samples, h.Samples)
			require.InDelta(t, float64(tc.samples), testutil.ToFloat64(s.m.samples), 0)
		})
	}
}

func TestScrapeHTTP(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", textCT)
		_, _ = io.WriteString(w, "# HELP up Target up.\n# TYPE up gauge\nup{job=\"banyand\"} 1\n")
	}))
	t.Cleanup(srv.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(down.Close)

	s := New(srv.Client(), Limits{}, nil, prometheus.NewRegistry())
	for range 2 {
		fams, err := s.Scrape(context.Background(), Target{URL: srv.URL + "/metrics", Name: "a"})
		require.NoError(t, err)
		require.Len(t, fams, 1)
		require.Equal(t, "up", fams[0].Name)
		require.Equal(t, "Target up.", fams[0].Help)
		require.Equal(t, ls("job", "banyand"), fams[0].Samples[0].Labels)
	}
	_, err := s.Scrape(context.Background(), Target{URL: down.URL + "/metrics", Name: "b"})
	require.Error(t, err)
	require.EqualValues(t, 2, hits.Load())

	health := s.Health()
	require.Len(t, health, 2)
	up := map[string]bool{}
	for _, h := range health {
		up[h.Name] = h.Up
	}
	require.Equal(t, map[string]bool{"a": true, "b": false}, up)
}

func TestScrapeContextCanceled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := New(srv.Client(), Limits{}, nil, nil)
	_, err := s.Scrape(ctx, Target{URL: srv.URL})
	require.ErrorIs(t, err, context.Canceled)
}
