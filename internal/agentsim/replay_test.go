package agentsim

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
)

// recordedMetrics returns the recorded replies to the first latest and the
// first window metrics command (nil when that kind was never sent), pairing
// commands and replies by position: the agent sends exactly one reply per
// command.
func recordedMetrics(t *testing.T, rec *fixture.Recording) (latest, window *fodcv1.StreamMetricsRequest) {
	t.Helper()
	cmds := rec.Frames(fixture.MethodStreamMetrics, fixture.ProxyToAgent)
	replies := rec.Frames(fixture.MethodStreamMetrics, fixture.AgentToProxy)
	require.Len(t, replies, len(cmds))
	for i := range cmds {
		raw, err := cmds[i].Bytes()
		require.NoError(t, err)
		m, err := replies[i].Message()
		require.NoError(t, err)
		reply := m.(*fodcv1.StreamMetricsRequest)
		if len(raw) == 0 && latest == nil {
			latest = reply
		}
		if len(raw) > 0 && window == nil {
			window = reply
		}
	}
	return latest, window
}

// checkReplayedMetrics checks that cfg.Metrics answers a latest and a window
// command with the recorded replies to the same kind of command.
func checkReplayedMetrics(t *testing.T, rec *fixture.Recording, cfg Config, wantMetrics, wantWindow bool) {
	t.Helper()
	latest, window := recordedMetrics(t, rec)
	require.Equal(t, wantMetrics, latest != nil)
	require.Equal(t, wantWindow, window != nil)
	if latest == nil {
		require.Nil(t, cfg.Metrics, "no recorded metrics: the synthetic generator")
		return
	}
	if window == nil {
		window = latest // the fallback
	} else {
		require.False(t, proto.Equal(latest, window), "the recording tells the kinds apart")
		require.NotNil(t, window.GetMetrics()[0].GetTimestamp())
		require.Nil(t, latest.GetMetrics()[0].GetTimestamp())
	}
	gotLatest := cfg.Metrics(&fodcv1.StreamMetricsResponse{})
	require.True(t, proto.Equal(latest, gotLatest), "latest reply differs from the recording")
	gotWindow := cfg.Metrics(&fodcv1.StreamMetricsResponse{
		StartTime: &timestamppb.Timestamp{Seconds: 1}, EndTime: &timestamppb.Timestamp{Seconds: 2},
	})
	require.True(t, proto.Equal(window, gotWindow), "window reply differs from the recording")
}

func TestFromRecording(t *testing.T) {
	tests := []struct {
		name               string
		version            protocol.Release
		noLifecycle        bool
		wantMetrics        bool
		wantWindow         bool
		wantLifecycle      bool
		wantSchemaChunks   int // -1: no SchemaRegistry callback
		wantCrash          int // -1: no Crash callback
		wantPressure       int // -1: no PressureRecords callback
		wantProfileBytes   int // >0: a recorded download of the first record's first profile
		wantRegisterLabels map[string]string
	}{
		{
			name: "head-agent-data-node", version: protocol.ReleaseHEAD, wantMetrics: true, wantWindow: true, wantLifecycle: true,
			wantSchemaChunks: -1, wantCrash: 0, wantPressure: 0,
		},
		{
			name: "head-agent-liaison-fake", version: protocol.ReleaseHEAD, wantMetrics: true, wantWindow: true, wantLifecycle: true,
			wantSchemaChunks: 1, wantCrash: 0, wantPressure: 1, wantProfileBytes: 7640,
			wantRegisterLabels: map[string]string{"type": "hot", "zone": "z1"},
		},
		{
			name: "v0.10.3-agent-data-node", version: protocol.ReleaseV0103, wantMetrics: true, wantWindow: true, wantLifecycle: true,
			wantSchemaChunks: -1, wantCrash: -1, wantPressure: -1,
		},
		{
			name: "head-agent-crash-diagnostics", version: protocol.ReleaseHEAD,
			wantSchemaChunks: -1, wantCrash: 2, wantPressure: -1,
		},
		{
			name: "head-agent-proxy-restart", version: protocol.ReleaseHEAD, noLifecycle: true, wantMetrics: true,
			wantSchemaChunks: -1, wantCrash: -1, wantPressure: -1,
			wantRegisterLabels: map[string]string{"type": "warm"},
		},
	}
	names, err := fixture.Names()
	require.NoError(t, err)
	require.Len(t, names, len(tests), "every recording has a case")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := fixture.Load(tc.name)
			require.NoError(t, err)
			cfg, err := FromRecording(rec)
			require.NoError(t, err)

			regFrames := rec.Frames(fixture.MethodRegisterAgent, fixture.AgentToProxy)
			require.NotEmpty(t, regFrames)
			wantReg, err := regFrames[0].Message()
			require.NoError(t, err)
			require.True(t, proto.Equal(wantReg, cfg.Register), "register: %v", cfg.Register)
			require.Equal(t, tc.wantRegisterLabels, cfg.Register.GetLabels())
			require.Equal(t, tc.version, cfg.Release)
			require.Equal(t, tc.noLifecycle, cfg.NoLifecycle)
			require.False(t, cfg.NoPressureProfiles)

			checkReplayedMetrics(t, rec, cfg, tc.wantMetrics, tc.wantWindow)
			topo := rec.Frames(fixture.MethodStreamClusterTopology, fixture.AgentToProxy)
			require.Equal(t, len(topo) > 0, cfg.Topology != nil)
			if len(topo) > 0 {
				want, err := topo[0].Message()
				require.NoError(t, err)
				require.True(t, proto.Equal(want, cfg.Topology()))
			}
			require.Equal(t, tc.wantLifecycle, cfg.Lifecycle != nil && cfg.Lifecycle() != nil)
			if tc.wantSchemaChunks < 0 {
				require.Nil(t, cfg.SchemaRegistry)
			} else {
				require.Len(t, cfg.SchemaRegistry(), tc.wantSchemaChunks)
			}
			if tc.wantCrash < 0 {
				require.Nil(t, cfg.Crash)
			} else {
				crash := cfg.Crash()
				require.Len(t, crash, tc.wantCrash)
				for _, c := range crash {
					require.NotNil(t, c.GetPanicRecord())
				}
			}
			if tc.wantPressure < 0 {
				require.Nil(t, cfg.PressureRecords)
			} else {
				require.Len(t, cfg.PressureRecords(), tc.wantPressure)
			}
			if tc.wantProfileBytes > 0 {
				r := cfg.PressureRecords()[0]
				prof := r.GetProfiles()[0]
				data, err := cfg.PressureFile(r.GetProfileId(), prof.GetType())
				require.NoError(t, err)
				require.Len(t, data, tc.wantProfileBytes)
				_, err = cfg.PressureFile(r.GetProfileId(), "no-such-type")
				require.Error(t, err)
			} else {
				require.Nil(t, cfg.PressureFile)
			}
		})
	}
}

// TestReplayOverTheWire runs the liaison recording as an agent against the
// fake proxy and checks that what arrives equals what was recorded.
func TestReplayOverTheWire(t *testing.T) {
	rec, err := fixture.Load("head-agent-liaison-fake")
	require.NoError(t, err)
	cfg, err := FromRecording(rec)
	require.NoError(t, err)
	latest, window := recordedMetrics(t, rec)
	p := startProxy(t, &fakeProxy{hbSeconds: 1})
	cfg.ProxyAddr = p.addr
	a, err := New(cfg)
	require.NoError(t, err)
	runAgent(t, a)

	rs := next(t, p.regs)
	require.True(t, proto.Equal(cfg.Register, rs.req))
	s := p.streamsOf(t, rs.agentID, 6)
	ms := s[fixture.MethodStreamMetrics]
	ms.out <- &fodcv1.StreamMetricsResponse{StartTime: timestamppb.Now(), EndTime: timestamppb.Now()}
	ms.out <- &fodcv1.StreamMetricsResponse{}
	require.True(t, proto.Equal(window, nextMsg[*fodcv1.StreamMetricsRequest](t, ms)))
	require.True(t, proto.Equal(latest, nextMsg[*fodcv1.StreamMetricsRequest](t, ms)))

	// The recorded download arrives as it was recorded: one data chunk and
	// an empty last chunk.
	var wantChunks []*fodcv1.PressureProfileChunk
	for _, f := range rec.Frames(fixture.MethodStreamPressureProfiles, fixture.AgentToProxy) {
		m, err := f.Message()
		require.NoError(t, err)
		if c := m.(*fodcv1.StreamPressureProfilesRequest).GetChunk(); c != nil {
			wantChunks = append(wantChunks, c)
		}
	}
	require.Len(t, wantChunks, 2)
	ps := s[fixture.MethodStreamPressureProfiles]
	ps.out <- &fodcv1.StreamPressureProfilesResponse{Command: &fodcv1.StreamPressureProfilesResponse_FetchProfile{
		FetchProfile: &fodcv1.FetchPressureProfile{
			RequestId: wantChunks[0].GetRequestId(), ProfileId: wantChunks[0].GetProfileId(), Type: wantChunks[0].GetType(),
		},
	}}
	for _, want := range wantChunks {
		got := nextMsg[*fodcv1.StreamPressureProfilesRequest](t, ps).GetChunk()
		require.True(t, proto.Equal(want, got), "chunk: %v", got)
	}
}

func TestFromRecordingErrors(t *testing.T) {
	_, err := FromRecording(nil)
	require.EqualError(t, err, "recording is nil")
	_, err = FromRecording(&fixture.Recording{Name: "empty"})
	require.EqualError(t, err, "recording empty has no RegisterAgentRequest")
}
