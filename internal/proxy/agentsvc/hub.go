package agentsvc

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hub is the table of live streams: agent id -> stream kind -> the
// session's handle. A handle is removed by the handler that attached it and
// only if it is still the one stored (no stale pointers, W17).
type hub struct {
	mu      sync.RWMutex // guards streams
	streams map[string]map[string]any
}

func newHub() *hub {
	return &hub{streams: make(map[string]map[string]any)}
}

// attach stores v as the agent's stream of kind. A second live stream of
// the same kind for the same agent is refused (W7).
func (h *hub) attach(agentID, kind string, v any) (detach func(error), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kinds := h.streams[agentID]
	if kinds == nil {
		kinds = make(map[string]any)
		h.streams[agentID] = kinds
	}
	if _, dup := kinds[kind]; dup {
		return nil, status.Errorf(codes.AlreadyExists, "agent %s already has a live %s stream", agentID, kind)
	}
	kinds[kind] = v
	return func(error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if cur, ok := h.streams[agentID][kind]; ok && cur == v {
			delete(h.streams[agentID], kind)
			if len(h.streams[agentID]) == 0 {
				delete(h.streams, agentID)
			}
		}
	}, nil
}

func (h *hub) get(agentID, kind string) (any, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	v, ok := h.streams[agentID][kind]
	return v, ok
}
