package protocol

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

func TestAcceptRegistration(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resp     *fodcv1.RegisterAgentResponse
		id       string
		interval time.Duration
		err      string
	}{
		{"proxy interval", &fodcv1.RegisterAgentResponse{Success: true, AgentId: "a", HeartbeatIntervalSeconds: 2}, "a", 2 * time.Second, ""},
		{"no interval keeps own", &fodcv1.RegisterAgentResponse{Success: true, AgentId: "a"}, "a", 7 * time.Second, ""},
		{"negative interval keeps own", &fodcv1.RegisterAgentResponse{Success: true, AgentId: "a", HeartbeatIntervalSeconds: -1}, "a", 7 * time.Second, ""},
		{"rejected", &fodcv1.RegisterAgentResponse{Message: "pod name cannot be empty"}, "", 0, "registration failed: pod name cannot be empty"},
		{"no id", &fodcv1.RegisterAgentResponse{Success: true}, "", 0, ErrMissingAgentID.Error()},
		{"nil", nil, "", 0, "registration failed: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, interval, err := AcceptRegistration(tc.resp, 7*time.Second)
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.id, id)
			require.Equal(t, tc.interval, interval)
		})
	}
}
