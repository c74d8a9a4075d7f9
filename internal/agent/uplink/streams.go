package uplink

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/schemaregistry"
	"github.com/fodc-go/fodc/internal/agentconn"
	"github.com/fodc-go/fodc/internal/protocol"
)

// PressureSource serves the StreamPressureProfiles stream: the capture
// events on disk and their files.
type PressureSource interface {
	// Records lists the complete capture events.
	Records() []*fodcv1.PressureProfileRecord
	// Dir is the profile directory; fetches outside it are refused.
	Dir() string
}

// ChunkSize is the size of one profile chunk, the upstream agent's read
// size.
const ChunkSize = 1 << 20

// upstreamStreams returns the streams of Options.Lifecycle,
// SchemaRegistry, Crash and Pressure that are set, in the upstream
// agent's opening order.
func (c *Client) upstreamStreams() []agentconn.Stream {
	var out []agentconn.Stream
	if c.opts.Lifecycle != nil {
		out = append(out, agentconn.Lifecycle(reply(c, protocol.KindLifecycle, c.answerLifecycle)))
	}
	if c.opts.SchemaRegistry != nil {
		out = append(out, agentconn.SchemaRegistry(multi(c, protocol.KindSchemaRegistry, c.answerRegistry)))
	}
	if c.opts.Crash != nil {
		out = append(out, agentconn.Crash(multi(c, protocol.KindCrash, c.answerCrash)))
	}
	if c.opts.Pressure != nil {
		out = append(out, agentconn.Pressure(multi(c, protocol.KindPressure, c.answerPressure)))
	}
	return out
}

// multi adapts answer, which sends any number of replies, to agentconn,
// counting failed sends.
func multi[Cmd, Reply any](c *Client, kind protocol.Kind, answer func(context.Context, *Cmd, func(*Reply) error)) agentconn.Handler[Cmd, Reply] {
	return func(ctx context.Context, cmd *Cmd, send func(*Reply) error) {
		answer(ctx, cmd, func(r *Reply) error {
			err := send(r)
			if err != nil && !errors.Is(err, agentconn.ErrClosing) {
				c.m.replyErrors.WithLabelValues(kind.String()).Inc()
				c.logger.Debug("Sending reply", "stream", kind, "err", err)
			}
			return err
		})
	}
}

// answerLifecycle sends the lifecycle data, or nothing when the
// collection failed (the proxy then times out, as with upstream agents).
func (c *Client) answerLifecycle(ctx context.Context, cmd *fodcv1.StreamLifecycleResponse) (*fodcv1.StreamLifecycleRequest, bool) {
	if !cmd.GetRequestLifecycle() {
		return nil, false
	}
	data, err := c.opts.Lifecycle(ctx)
	if err != nil {
		c.logger.Warn("Lifecycle collection failed, not answering", "err", err)
		return nil, false
	}
	if data == nil {
		data = &fodcv1.LifecycleData{}
	}
	return &fodcv1.StreamLifecycleRequest{
		Timestamp:     timestamppb.New(c.opts.Now()),
		PodName:       c.opts.Identity().PodName,
		LifecycleData: data,
	}, true
}

// answerRegistry sends the registry read in chunks of at most 50 objects
// and then done.
func (c *Client) answerRegistry(ctx context.Context, cmd *fodcv1.StreamSchemaRegistryResponse, send func(*fodcv1.StreamSchemaRegistryRequest) error) {
	if !cmd.GetRequestRegistry() {
		return
	}
	groups, err := c.opts.SchemaRegistry(ctx)
	if err != nil {
		c.logger.Warn("Schema registry read failed", "err", err)
	}
	for _, m := range schemaregistry.Messages(groups, err) {
		if send(m) != nil {
			return
		}
	}
}

// answerCrash sends every crash record held, one message each.
func (c *Client) answerCrash(_ context.Context, cmd *fodcv1.StreamCrashDiagnosticsResponse, send func(*fodcv1.StreamCrashDiagnosticsRequest) error) {
	if !cmd.GetRequestDiagnostics() {
		return
	}
	for _, r := range c.opts.Crash() {
		if send(r) != nil {
			return
		}
	}
}

// answerPressure lists the capture events (then list_complete) or streams
// one profile file in chunks (the last one with last=true).
func (c *Client) answerPressure(_ context.Context, cmd *fodcv1.StreamPressureProfilesResponse, send func(*fodcv1.StreamPressureProfilesRequest) error) {
	switch x := cmd.GetCommand().(type) {
	case *fodcv1.StreamPressureProfilesResponse_ListProfiles:
		for _, r := range c.opts.Pressure.Records() {
			if send(&fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_Record{Record: r}}) != nil {
				return
			}
		}
		_ = send(&fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_ListComplete{
			ListComplete: &fodcv1.ListComplete{RequestId: x.ListProfiles.GetRequestId()},
		}})
	case *fodcv1.StreamPressureProfilesResponse_FetchProfile:
		f := x.FetchProfile
		chunk := func(data []byte, last bool, errText string) error {
			return send(&fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_Chunk{Chunk: &fodcv1.PressureProfileChunk{
				RequestId: f.GetRequestId(), ProfileId: f.GetProfileId(), Type: f.GetType(), Data: data, Last: last, Error: errText,
			}}})
		}
		rc, err := openInside(c.opts.Pressure.Dir(), f.GetFilepath())
		if err != nil {
			_ = chunk(nil, true, err.Error())
			return
		}
		defer rc.Close()
		SendChunks(rc, func(data []byte, last bool, errText string) error { return chunk(data, last, errText) })
	}
}

// SendChunks reads r in ChunkSize reads and sends each non-empty read,
// then a final empty chunk with last=true; a read error ends with a chunk
// carrying the error and last=true.
func SendChunks(r io.Reader, chunk func(data []byte, last bool, errText string) error) {
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if chunk(append([]byte(nil), buf[:n]...), false, "") != nil {
				return
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			_ = chunk(nil, true, "")
		default:
			_ = chunk(nil, true, err.Error())
		}
		return
	}
}

// openInside opens path when, cleaned, it is dir or below it.
func openInside(dir, path string) (io.ReadCloser, error) {
	clean := filepath.Clean(path)
	base := filepath.Clean(dir)
	if clean != base && !strings.HasPrefix(clean, base+string(filepath.Separator)) {
		return nil, errors.New("profile path outside the profile directory")
	}
	return os.Open(clean)
}
