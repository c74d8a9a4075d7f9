package agentsvc

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// MetricsServer is the server side of a StreamMetrics stream that receives
// the agent's replies undecoded.
type MetricsServer = grpc.BidiStreamingServer[series.RawMetrics, fodcv1.StreamMetricsResponse]

// codec is the standard protobuf codec, except that a *series.RawMetrics
// receives the message bytes instead of being decoded.
type codec struct {
	encoding.CodecV2
}

// rawMessage is what the metrics stream receives into: the message bytes
// in one buffer of gRPC's size-classed pool, instead of a fresh copy per
// reply (a scrape of 100 agents of 10,000 series received 200 MB into new
// memory every time). The buffer goes back to the pool when the reply's
// last reader releases it (series.RawMetrics).
type rawMessage struct{ *series.RawMetrics }

// replyBuffers lends the buffers replies are received into, in powers of
// two from 4 KiB to 64 MiB: a buffer is never more than twice its reply.
// (gRPC's default pool jumps from 32 KiB to 1 MiB, so a 200 KiB reply, an
// agent's 1,000 series, held 1 MiB: 1 GB for 1,000 agents answering.)
// Larger replies get buffers of their own size.
var replyBuffers = func() mem.BufferPool {
	var exponents []uint8
	for e := uint8(12); e <= 26; e++ {
		exponents = append(exponents, e)
	}
	p, err := mem.NewBinaryTieredBufferPool(exponents...)
	if err != nil {
		panic(err) // only invalid exponents fail
	}
	return p
}()

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawMessage); ok {
		// gRPC frees data when Unmarshal returns: take a contiguous copy
		// from the pool.
		buf := data.MaterializeToBuffer(replyBuffers)
		r.RawMetrics = series.NewPooledRaw(buf.ReadOnlyData(), buf.Free)
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// ServerCodec returns the gRPC server option that a server registered with
// Register needs: the standard protobuf codec (so every other message and
// every client stays as it is) that leaves metrics replies undecoded. It
// only affects the server it is given to.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(protocodec.Name)})
}

// Sizes of a connection's transport buffers (TransportOptions).
const (
	readBufferSize  = 4 << 10
	writeBufferSize = 4 << 10
)

// TransportOptions returns the gRPC server options that size every agent
// connection's buffers for its traffic, which is heartbeats, small
// commands and the occasional large reply.
//
// grpc-go's defaults give each connection a 32 KiB read buffer and a 32
// KiB write buffer for as long as it is open; an upstream agent keeps one
// connection open, so that is 64 KiB per idle agent. The read buffer only
// batches small frames (a frame larger than the buffer is read straight
// into its own buffer, and a large reply is made of such frames), so 4
// KiB does (BenchmarkMetricsReply: a 10,000-series reply is received as
// fast as with 32 KiB). Commands are a few bytes, so a 4 KiB write buffer
// does; grpc-go takes it from a pool for each write and gives it back
// after the flush (its shared write buffer, on by default).
func TransportOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ReadBufferSize(readBufferSize),
		grpc.WriteBufferSize(writeBufferSize),
	}
}

// Register registers s as banyandb.fodc.v1.FODCService on srv, which must
// have been built with ServerCodec. The service and method names are the
// generated ones, so agents see no difference; only StreamMetrics is served
// by a handler of its own that receives series.RawMetrics.
func Register(srv *grpc.Server, s *Service) {
	desc := fodcv1.FODCService_ServiceDesc
	desc.Streams = append([]grpc.StreamDesc(nil), desc.Streams...)
	found := false
	for i := range desc.Streams {
		if desc.Streams[i].StreamName == "StreamMetrics" {
			desc.Streams[i].Handler = streamMetricsHandler
			found = true
		}
	}
	if !found {
		panic("agentsvc: FODCService has no StreamMetrics method")
	}
	srv.RegisterService(&desc, s)
}

func streamMetricsHandler(srv any, stream grpc.ServerStream) error {
	return srv.(*Service).StreamMetricsRaw(rawStream{stream})
}

// rawStream is a MetricsServer that receives every reply into a pooled
// buffer (rawMessage).
type rawStream struct{ grpc.ServerStream }

func (s rawStream) Recv() (*series.RawMetrics, error) {
	var m rawMessage
	if err := s.RecvMsg(&m); err != nil {
		return nil, err
	}
	return m.RawMetrics, nil
}

func (s rawStream) Send(m *fodcv1.StreamMetricsResponse) error { return s.SendMsg(m) }

// StreamMetrics serves a StreamMetrics stream registered through the
// generated fodcv1.RegisterFODCServiceServer, which decodes every reply:
// each one is encoded again and served as by StreamMetricsRaw. Register
// avoids that round trip.
func (s *Service) StreamMetrics(stream fodcv1.FODCService_StreamMetricsServer) error {
	return s.StreamMetricsRaw(reencoder{stream})
}

// reencoder turns a decoding StreamMetrics stream into a MetricsServer.
type reencoder struct {
	fodcv1.FODCService_StreamMetricsServer
}

func (r reencoder) Recv() (*series.RawMetrics, error) {
	m, err := r.FODCService_StreamMetricsServer.Recv()
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &series.RawMetrics{Bytes: b}, nil
}
