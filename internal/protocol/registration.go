package protocol

import (
	"errors"
	"fmt"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// ErrMissingAgentID is returned for a successful response without an id.
var ErrMissingAgentID = errors.New("registration response missing agent ID")

// AcceptRegistration is the agent side's rule for a RegisterAgentResponse
// (PROTOCOL.md §2.3, §2.5), shared by our agent and by the simulated
// upstream agent so that both accept exactly what an upstream agent accepts.
// It checks a registration response: it must report success and carry
// an agent id. The heartbeat interval is the proxy's when it sent one
// (> 0 seconds), else fallback.
func AcceptRegistration(resp *fodcv1.RegisterAgentResponse, fallback time.Duration) (agentID string, interval time.Duration, err error) {
	if !resp.GetSuccess() {
		return "", 0, fmt.Errorf("registration failed: %s", resp.GetMessage())
	}
	if resp.GetAgentId() == "" {
		return "", 0, ErrMissingAgentID
	}
	interval = fallback
	if sec := resp.GetHeartbeatIntervalSeconds(); sec > 0 {
		interval = time.Duration(sec) * time.Second
	}
	return resp.GetAgentId(), interval, nil
}
