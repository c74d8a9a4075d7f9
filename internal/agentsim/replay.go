package agentsim

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
)

// FromRecording builds a Config that replays the agent side of a recorded
// upstream session. ProxyAddr is left empty for the caller to fill in.
//
//   - Register is the first recorded RegisterAgentRequest.
//   - Release, NoLifecycle and NoPressureProfiles follow the set of streams
//     the recorded agent opened.
//   - Metrics answers a latest command with the recorded reply to the first
//     latest command and a window command with the recorded reply to the
//     first window command; when one kind was never recorded, the other
//     kind's reply is used. Without any recorded metrics reply, Metrics is
//     nil and the agent uses its synthetic generator.
//   - Topology and Lifecycle return the first recorded reply. A lifecycle
//     command that was recorded without a reply replays as no reply.
//   - SchemaRegistry returns the chunks of the first recorded answer.
//   - Crash returns the records of the last recorded answer: the upstream
//     agent re-sends every record it knows on each request.
//   - PressureRecords returns the records of the first completed list, and
//     PressureFile the recorded download of a profile and type (or its
//     recorded error).
//
// Callbacks left nil behave as described on Config. The returned messages
// are shared between calls; callers must not modify them.
func FromRecording(rec *fixture.Recording) (Config, error) {
	if rec == nil {
		return Config{}, errors.New("recording is nil")
	}
	r := replay{opened: map[string]bool{}, streams: map[int]*replayStream{}}
	for i := range rec.Records {
		if err := r.add(&rec.Records[i]); err != nil {
			return Config{}, fmt.Errorf("recording %s: %w", rec.Name, err)
		}
	}
	return r.config(rec.Name)
}

// replayStream is the ordered traffic of one recorded stream.
type replayStream struct {
	method string
	msgs   []replayMsg
}

type replayMsg struct {
	toAgent bool // a proxy command
	msg     proto.Message
}

// replay collects the recorded streams in order of their first record.
type replay struct {
	opened  map[string]bool // methods the agent opened
	streams map[int]*replayStream
	order   []int
}

func (r *replay) add(rec *fixture.Record) error {
	if rec.Event == "open" && rec.Dir == fixture.AgentToProxy {
		r.opened[rec.Method] = true
	}
	if !rec.IsFrame() {
		return nil
	}
	m, err := rec.Message()
	if err != nil {
		return err
	}
	st := r.streams[rec.Stream]
	if st == nil {
		st = &replayStream{method: rec.Method}
		r.streams[rec.Stream] = st
		r.order = append(r.order, rec.Stream)
	}
	st.msgs = append(st.msgs, replayMsg{toAgent: rec.Dir == fixture.ProxyToAgent, msg: m})
	return nil
}

// each calls fn for every recorded stream of method, in recorded order.
func (r *replay) each(method string, fn func(st *replayStream)) {
	for _, id := range r.order {
		if st := r.streams[id]; st.method == method {
			fn(st)
		}
	}
}

func (r *replay) config(name string) (Config, error) {
	var cfg Config
	r.each(fixture.MethodRegisterAgent, func(st *replayStream) {
		for _, m := range st.msgs {
			if req, ok := m.msg.(*fodcv1.RegisterAgentRequest); ok && cfg.Register == nil {
				cfg.Register = req
			}
		}
	})
	if cfg.Register == nil {
		return Config{}, fmt.Errorf("recording %s has no RegisterAgentRequest", name)
	}

	switch {
	case r.opened[fixture.MethodStreamCrashDiagnostics] || r.opened[fixture.MethodStreamPressureProfiles] ||
		r.opened[fixture.MethodStreamSchemaRegistry]:
		cfg.Release = protocol.ReleaseHEAD
		cfg.NoLifecycle = !r.opened[fixture.MethodStreamLifecycle]
		cfg.NoPressureProfiles = !r.opened[fixture.MethodStreamPressureProfiles]
	case r.opened[fixture.MethodStreamLifecycle]:
		cfg.Release = protocol.ReleaseV0103
	default:
		cfg.Release = protocol.ReleaseV0100
	}

	cfg.Metrics = r.metrics()
	if topo := firstReply[*fodcv1.StreamClusterTopologyRequest](r, fixture.MethodStreamClusterTopology); topo != nil {
		cfg.Topology = func() *fodcv1.StreamClusterTopologyRequest { return topo }
	}
	cfg.Lifecycle = r.lifecycle()
	if chunks, ok := r.schemaRegistry(); ok {
		cfg.SchemaRegistry = func() []*fodcv1.StreamSchemaRegistryRequest { return slices.Clone(chunks) }
	}
	if crash, ok := r.crash(); ok {
		cfg.Crash = func() []*fodcv1.StreamCrashDiagnosticsRequest { return slices.Clone(crash) }
	}
	r.pressure(&cfg)
	return cfg, nil
}

// firstReply returns the first agent message of type T on method, or nil.
func firstReply[T proto.Message](r *replay, method string) T {
	var out T
	found := false
	r.each(method, func(st *replayStream) {
		for _, m := range st.msgs {
			if v, ok := m.msg.(T); ok && !m.toAgent && !found {
				out, found = v, true
			}
		}
	})
	return out
}

// metrics pairs every recorded metrics command with its reply (one reply per
// command, in order) and replays the first pair of each kind.
func (r *replay) metrics() func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
	var latest, window *fodcv1.StreamMetricsRequest
	r.each(fixture.MethodStreamMetrics, func(st *replayStream) {
		var pending []*fodcv1.StreamMetricsResponse
		for _, m := range st.msgs {
			switch v := m.msg.(type) {
			case *fodcv1.StreamMetricsResponse:
				pending = append(pending, v)
			case *fodcv1.StreamMetricsRequest:
				if len(pending) == 0 {
					continue // a reply without a recorded command
				}
				cmd := pending[0]
				pending = pending[1:]
				if isWindow(cmd) {
					if window == nil {
						window = v
					}
				} else if latest == nil {
					latest = v
				}
			}
		}
	})
	if latest == nil {
		latest = window
	}
	if window == nil {
		window = latest
	}
	if latest == nil {
		return nil // nothing recorded: New falls back to the synthetic generator
	}
	return func(cmd *fodcv1.StreamMetricsResponse) *fodcv1.StreamMetricsRequest {
		if isWindow(cmd) {
			return window
		}
		return latest
	}
}

func isWindow(cmd *fodcv1.StreamMetricsResponse) bool {
	return cmd.GetStartTime() != nil || cmd.GetEndTime() != nil
}

// lifecycle replays the first lifecycle reply; a recorded command that got
// no reply replays as the upstream failure mode (no reply).
func (r *replay) lifecycle() func() *fodcv1.StreamLifecycleRequest {
	commands := 0
	var reply *fodcv1.StreamLifecycleRequest
	r.each(fixture.MethodStreamLifecycle, func(st *replayStream) {
		for _, m := range st.msgs {
			switch v := m.msg.(type) {
			case *fodcv1.StreamLifecycleResponse:
				commands++
			case *fodcv1.StreamLifecycleRequest:
				if reply == nil {
					reply = v
				}
			}
		}
	})
	switch {
	case reply != nil:
		return func() *fodcv1.StreamLifecycleRequest { return reply }
	case commands > 0:
		return func() *fodcv1.StreamLifecycleRequest { return nil }
	}
	return nil
}

// schemaRegistry returns the chunks of the first answer, without its done
// message.
func (r *replay) schemaRegistry() ([]*fodcv1.StreamSchemaRegistryRequest, bool) {
	var chunks []*fodcv1.StreamSchemaRegistryRequest
	found, complete := false, false
	r.each(fixture.MethodStreamSchemaRegistry, func(st *replayStream) {
		for _, m := range st.msgs {
			if complete {
				return
			}
			switch v := m.msg.(type) {
			case *fodcv1.StreamSchemaRegistryResponse:
				found = true
			case *fodcv1.StreamSchemaRegistryRequest:
				if v.GetDone() {
					complete = true
					continue
				}
				chunks = append(chunks, v)
			}
		}
	})
	return chunks, found
}

// crash returns the records sent for the last recorded request.
func (r *replay) crash() ([]*fodcv1.StreamCrashDiagnosticsRequest, bool) {
	var round []*fodcv1.StreamCrashDiagnosticsRequest
	found := false
	r.each(fixture.MethodStreamCrashDiagnostics, func(st *replayStream) {
		for _, m := range st.msgs {
			switch v := m.msg.(type) {
			case *fodcv1.StreamCrashDiagnosticsResponse:
				found = true
				round = nil
			case *fodcv1.StreamCrashDiagnosticsRequest:
				round = append(round, v)
			}
		}
	})
	return round, found
}

// pressure sets PressureRecords from the first completed list and
// PressureFile from the recorded downloads.
func (r *replay) pressure(cfg *Config) {
	type download struct {
		data []byte
		err  string
	}
	var records []*fodcv1.PressureProfileRecord
	listed := false
	downloads := map[string]*download{}
	inflight := map[string]*download{} // by request id
	key := func(profileID, typ string) string { return profileID + "\x00" + typ }
	r.each(fixture.MethodStreamPressureProfiles, func(st *replayStream) {
		var round []*fodcv1.PressureProfileRecord
		for _, m := range st.msgs {
			req, ok := m.msg.(*fodcv1.StreamPressureProfilesRequest)
			if !ok {
				continue
			}
			switch p := req.GetPayload().(type) {
			case *fodcv1.StreamPressureProfilesRequest_Record:
				round = append(round, p.Record)
			case *fodcv1.StreamPressureProfilesRequest_ListComplete:
				if !listed {
					records, listed = round, true
				}
				round = nil
			case *fodcv1.StreamPressureProfilesRequest_Chunk:
				// Chunks are collected per request; the first finished
				// download of a profile and type is kept.
				c := p.Chunk
				d := inflight[c.GetRequestId()]
				if d == nil {
					d = &download{}
					inflight[c.GetRequestId()] = d
				}
				d.data = append(d.data, c.GetData()...)
				if c.GetError() != "" {
					d.err = c.GetError()
				}
				if c.GetLast() {
					delete(inflight, c.GetRequestId())
					if k := key(c.GetProfileId(), c.GetType()); downloads[k] == nil {
						downloads[k] = d
					}
				}
			}
		}
	})
	if listed {
		cfg.PressureRecords = func() []*fodcv1.PressureProfileRecord { return slices.Clone(records) }
	}
	if len(downloads) > 0 {
		cfg.PressureFile = func(profileID, typ string) ([]byte, error) {
			d := downloads[key(profileID, typ)]
			switch {
			case d == nil:
				return nil, fmt.Errorf("profile %s/%s was not recorded", profileID, typ)
			case d.err != "":
				return nil, errors.New(d.err)
			}
			return slices.Clone(d.data), nil
		}
	}
}
