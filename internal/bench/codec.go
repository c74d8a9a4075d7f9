package bench

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	// Registers the "proto" codec that rawCodec delegates to.
	_ "google.golang.org/grpc/encoding/proto"
)

// rawMessage is a message marshalled ahead of time. Its bytes are shared
// and never modified.
type rawMessage struct{ b []byte }

// rawCodec is the gRPC codec of the simulated metrics streams: it sends a
// *rawMessage as it is, so that a reply is marshalled once per run instead
// of once per scrape, and hands everything else to the proto codec. Its
// name is "proto", so the proxy sees an ordinary protobuf stream.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() (rawCodec, error) {
	c := encoding.GetCodecV2("proto")
	if c == nil {
		return rawCodec{}, fmt.Errorf("grpc proto codec not registered")
	}
	return rawCodec{proto: c}, nil
}

// Marshal returns m's bytes for a *rawMessage; gRPC only reads them.
func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	}
	return c.proto.Marshal(v)
}

// Unmarshal decodes protobuf messages.
func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the content-subtype the codec speaks.
func (rawCodec) Name() string { return "proto" }
