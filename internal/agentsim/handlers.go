package agentsim

import (
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// pressureChunkSize is the slice size in which the upstream agent reads a
// profile file for a fetch.
const pressureChunkSize = 1 << 20

// errNoPressureFile is sent when Config.PressureFile is nil.
var errNoPressureFile = errors.New("pressure profile not available")

// handleMetrics sends exactly one reply per command, also when empty.
func (a *Agent) handleMetrics(cmd *fodcv1.StreamMetricsResponse, send func(*fodcv1.StreamMetricsRequest) bool) {
	reply := a.cfg.Metrics(cmd)
	if reply == nil {
		reply = &fodcv1.StreamMetricsRequest{Timestamp: timestamppb.Now()}
	}
	send(reply)
}

// handleTopology answers request_topology=true with one reply and ignores
// false.
func (a *Agent) handleTopology(cmd *fodcv1.StreamClusterTopologyResponse, send func(*fodcv1.StreamClusterTopologyRequest) bool) {
	if !cmd.GetRequestTopology() {
		return
	}
	var reply *fodcv1.StreamClusterTopologyRequest
	if a.cfg.Topology != nil {
		reply = a.cfg.Topology()
	}
	if reply == nil {
		reply = &fodcv1.StreamClusterTopologyRequest{Timestamp: timestamppb.Now(), Topology: &fodcv1.Topology{}}
	}
	send(reply)
}

// handleLifecycle answers request_lifecycle=true with zero or one reply.
func (a *Agent) handleLifecycle(cmd *fodcv1.StreamLifecycleResponse, send func(*fodcv1.StreamLifecycleRequest) bool) {
	if !cmd.GetRequestLifecycle() {
		return
	}
	if a.cfg.Lifecycle == nil {
		send(&fodcv1.StreamLifecycleRequest{
			Timestamp:     timestamppb.Now(),
			PodName:       a.cfg.Register.GetPodName(),
			LifecycleData: &fodcv1.LifecycleData{},
		})
		return
	}
	if reply := a.cfg.Lifecycle(); reply != nil {
		send(reply)
	}
}

// handleSchemaRegistry sends the chunks and then {done: true}.
func (a *Agent) handleSchemaRegistry(cmd *fodcv1.StreamSchemaRegistryResponse, send func(*fodcv1.StreamSchemaRegistryRequest) bool) {
	if !cmd.GetRequestRegistry() {
		return
	}
	if a.cfg.SchemaRegistry != nil {
		for _, chunk := range a.cfg.SchemaRegistry() {
			if !send(chunk) {
				return
			}
		}
	}
	send(&fodcv1.StreamSchemaRegistryRequest{Done: true})
}

// handleCrash sends one message per record and no terminator.
func (a *Agent) handleCrash(cmd *fodcv1.StreamCrashDiagnosticsResponse, send func(*fodcv1.StreamCrashDiagnosticsRequest) bool) {
	if !cmd.GetRequestDiagnostics() || a.cfg.Crash == nil {
		return
	}
	for _, rec := range a.cfg.Crash() {
		if !send(rec) {
			return
		}
	}
}

// handlePressure answers a list with the records then list_complete, and a
// fetch with 1 MiB data chunks then a last=true chunk (or a single error
// chunk with last=true).
func (a *Agent) handlePressure(cmd *fodcv1.StreamPressureProfilesResponse, send func(*fodcv1.StreamPressureProfilesRequest) bool) {
	switch c := cmd.GetCommand().(type) {
	case *fodcv1.StreamPressureProfilesResponse_ListProfiles:
		if a.cfg.PressureRecords != nil {
			for _, rec := range a.cfg.PressureRecords() {
				if !send(&fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_Record{Record: rec}}) {
					return
				}
			}
		}
		send(&fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_ListComplete{
			ListComplete: &fodcv1.ListComplete{RequestId: c.ListProfiles.GetRequestId()},
		}})
	case *fodcv1.StreamPressureProfilesResponse_FetchProfile:
		f := c.FetchProfile
		chunk := func(data []byte, last bool, errText string) *fodcv1.StreamPressureProfilesRequest {
			return &fodcv1.StreamPressureProfilesRequest{Payload: &fodcv1.StreamPressureProfilesRequest_Chunk{
				Chunk: &fodcv1.PressureProfileChunk{
					RequestId: f.GetRequestId(),
					ProfileId: f.GetProfileId(),
					Type:      f.GetType(),
					Data:      data,
					Last:      last,
					Error:     errText,
				},
			}}
		}
		data, err := []byte(nil), errNoPressureFile
		if a.cfg.PressureFile != nil {
			data, err = a.cfg.PressureFile(f.GetProfileId(), f.GetType())
		}
		if err != nil {
			send(chunk(nil, true, err.Error()))
			return
		}
		for off := 0; off < len(data); off += pressureChunkSize {
			end := min(off+pressureChunkSize, len(data))
			if !send(chunk(data[off:end], false, "")) {
				return
			}
		}
		send(chunk(nil, true, ""))
	}
}
