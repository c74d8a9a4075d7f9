package agentsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/series"
	"github.com/fodc-go/fodc/internal/proxy/streams"
)

// An agent that stops reading fills its stream's flow-control window, and
// the stream's sender blocks in Send. Closing the stream (as eviction,
// a stuck command or shutdown do) must still end it: the handler, which
// sits in Recv, returns, and the sender with it.
func TestClosingEndsAStreamWhoseAgentStopsReading(t *testing.T) {
	h := newHarness(t, testOpts{TCP: true, ServerOptions: TransportOptions()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, id := h.register(t, ctx, "data-0")
	st, err := h.client.StreamPressureProfiles(withID(ctx, id))
	require.NoError(t, err)
	var p *streams.Pressure
	require.Eventually(t, func() bool { p, _ = h.table.Pressure(id); return p != nil }, 10*time.Second, time.Millisecond)

	// Two commands of 256 KiB each: more than the stream's window and its
	// write quota, so the second Send cannot complete while the agent
	// does not read.
	big := strings.Repeat("x", 256<<10)
	fetched := make(chan error, 2)
	for i := range 2 {
		go func() {
			fetched <- p.Fetch(ctx, fmt.Sprint(i), "cpu", big, func([]byte) error { return nil })
		}()
	}
	evicted := errors.New("evicted")
	p.Close(evicted)
	for range 2 {
		require.ErrorIs(t, <-fetched, evicted)
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.svc.metrics.streamsOpen.WithLabelValues(protocol.KindPressure.String())) == 0
	}, 10*time.Second, time.Millisecond, "the handler returned")
	_, ok := h.table.Pressure(id)
	require.False(t, ok)

	// The agent sees the stream end once it reads again.
	for {
		_, err := st.Recv()
		if err != nil {
			require.Equal(t, codes.Unknown, status.Code(err))
			require.Contains(t, status.Convert(err).Message(), "evicted")
			break
		}
	}
}

// BenchmarkMetricsReply is one metrics command and its 10,000-series reply
// over loopback TCP: what the transport buffers cost a large reply.
func BenchmarkMetricsReply(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []grpc.ServerOption
	}{
		{"grpc-defaults", nil},
		{"TransportOptions", TransportOptions()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, testOpts{TCP: true, ServerOptions: bc.opts})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, id := h.register(b, ctx, "data-0")
			// The agent sends the reply pre-encoded, so that the benchmark
			// measures the proxy's receiving and not the agent's encoding.
			st, err := h.client.StreamMetrics(withID(ctx, id), grpc.ForceCodecV2(rawSender{codec{encoding.GetCodecV2(protocodec.Name)}}))
			require.NoError(b, err)
			reply := &fodcv1.StreamMetricsRequest{}
			for i := range 10000 {
				reply.Metrics = append(reply.Metrics, &fodcv1.Metric{
					Name:   fmt.Sprintf("family_%d_total", i%50),
					Labels: map[string]string{"a": fmt.Sprint(i % 10), "b": fmt.Sprint(i % 7), "c": fmt.Sprint(i), "d": "value"},
					Value:  float64(i),
				})
			}
			raw, err := proto.Marshal(reply)
			require.NoError(b, err)
			size := len(raw)
			agentDone := make(chan struct{})
			go func() { // the agent: one reply per command
				defer close(agentDone)
				for {
					if _, err := st.Recv(); err != nil {
						return
					}
					if err := st.SendMsg(&series.RawMetrics{Bytes: raw}); err != nil {
						return
					}
				}
			}()
			var m *streams.Metrics
			require.Eventually(b, func() bool { m, _ = h.table.Metrics(id); return m != nil }, 10*time.Second, time.Millisecond)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r, err := m.Request(ctx, series.Window{})
				require.NoError(b, err)
				require.Len(b, r.Bytes, size)
				r.Release() // back to the pool, as the scraper does
			}
			cancel()
			<-agentDone
		})
	}
}

// rawSender is the proxy's codec that also sends a *series.RawMetrics as
// the bytes it holds.
type rawSender struct{ codec }

func (c rawSender) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*series.RawMetrics); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.Bytes)}, nil
	}
	return c.codec.Marshal(v)
}
