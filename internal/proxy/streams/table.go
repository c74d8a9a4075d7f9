// Package streams is the proxy's table of open agent streams and the
// per-stream logic that the rest of the proxy talks to: one typed handle per
// stream kind (Metrics, Topology, Lifecycle, SchemaRegistry, Crash,
// Pressure, NodeConfig) that sends commands to one agent and matches its
// replies to them.
//
// The gRPC service (agentsvc) opens a handle when an agent opens a stream
// and attaches it to the stream (the handle then sends its commands, from a
// goroutine that runs only while some wait, and ends the stream when it is
// closed), hands every message the agent sends to the handle's Receive or
// Deliver, and closes the handle when the stream ends. Collectors only look handles up in the Table
// and call their request methods; they never see gRPC.
package streams

import (
	"fmt"
	"sync"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy/series"
)

// Limits bound what one stream holds.
type Limits struct {
	// SendQueueLen bounds the commands queued for one stream's sender.
	SendQueueLen int
	// MaxPending bounds the unanswered commands of one stream, abandoned
	// ones included; beyond it requests fail with ErrBusy.
	MaxPending int
	// MaxCommandAge is how long a command may stay unanswered before the
	// stream is closed as stuck (0: never).
	MaxCommandAge time.Duration
}

// Table is the set of open streams, by agent id and kind. A handle is
// removed by its own Close and only if it is still the one stored, so a
// stale handle never removes its successor (W17). It is safe for
// concurrent use.
type Table struct {
	limits Limits

	mu     sync.RWMutex // guards agents
	agents map[string]*agentStreams
}

// agentStreams are the open streams of one agent, one field per kind.
type agentStreams struct {
	metrics        *Metrics
	topology       *Topology
	lifecycle      *Lifecycle
	schemaRegistry *SchemaRegistry
	crash          *Crash
	pressure       *Pressure
	nodeConfig     *NodeConfig
	profiles       *Profiles
}

func (a *agentStreams) empty() bool { return *a == agentStreams{} }

// NewTable returns an empty table whose streams have the given limits.
// SendQueueLen is raised to MaxPending when smaller, and both to 1.
func NewTable(l Limits) *Table {
	l.MaxPending = max(l.MaxPending, 1)
	l.SendQueueLen = max(l.SendQueueLen, l.MaxPending)
	return &Table{limits: l, agents: make(map[string]*agentStreams)}
}

// open stores the handle that newHandle builds in the field that slot
// selects, unless the agent already has a live stream of that kind
// (ErrDuplicate, W7). The session is wired to remove the handle again
// when it closes.
func open[Cmd any, H any](t *Table, agentID string, kind protocol.Kind, slot func(*agentStreams) **H,
	newHandle func(*session[Cmd]) *H,
) (*H, error) {
	ss := newSession[Cmd](agentID, kind, t.limits.SendQueueLen)
	h := newHandle(ss)
	t.mu.Lock()
	defer t.mu.Unlock()
	as := t.agents[agentID]
	if as == nil {
		as = &agentStreams{}
		t.agents[agentID] = as
	}
	if *slot(as) != nil {
		if as.empty() {
			delete(t.agents, agentID)
		}
		return nil, fmt.Errorf("%w: agent %s, %s", ErrDuplicate, agentID, kind)
	}
	*slot(as) = h
	ss.detach = func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		as := t.agents[agentID]
		if as == nil || *slot(as) != h {
			return
		}
		*slot(as) = nil
		if as.empty() {
			delete(t.agents, agentID)
		}
	}
	return h, nil
}

func lookup[H any](t *Table, agentID string, slot func(*agentStreams) **H) (*H, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	as := t.agents[agentID]
	if as == nil {
		return nil, false
	}
	h := *slot(as)
	return h, h != nil
}

func metricsSlot(a *agentStreams) **Metrics               { return &a.metrics }
func topologySlot(a *agentStreams) **Topology             { return &a.topology }
func lifecycleSlot(a *agentStreams) **Lifecycle           { return &a.lifecycle }
func schemaRegistrySlot(a *agentStreams) **SchemaRegistry { return &a.schemaRegistry }
func crashSlot(a *agentStreams) **Crash                   { return &a.crash }
func pressureSlot(a *agentStreams) **Pressure             { return &a.pressure }
func nodeConfigSlot(a *agentStreams) **NodeConfig         { return &a.nodeConfig }
func profilesSlot(a *agentStreams) **Profiles             { return &a.profiles }

// OpenProfiles publishes a new on-demand profiling stream of the agent.
func (t *Table) OpenProfiles(agentID string) (*Profiles, error) {
	return open(t, agentID, protocol.KindProfiles, profilesSlot, newProfiles)
}

// Profiles returns the agent's live profiling stream; agents without the
// extension have none.
func (t *Table) Profiles(agentID string) (*Profiles, bool) { return lookup(t, agentID, profilesSlot) }

// OpenMetrics publishes a new metrics stream of the agent.
func (t *Table) OpenMetrics(agentID string) (*Metrics, error) {
	return open(t, agentID, protocol.KindMetrics, metricsSlot, func(ss *session[fodcv1.StreamMetricsResponse]) *Metrics {
		m := &Metrics{newOrdered[fodcv1.StreamMetricsResponse, series.RawMetrics](ss, t.limits)}
		m.queue.Share = (*series.RawMetrics).Share
		return m
	})
}

// OpenTopology publishes a new topology stream of the agent.
func (t *Table) OpenTopology(agentID string) (*Topology, error) {
	return open(t, agentID, protocol.KindTopology, topologySlot, func(ss *session[fodcv1.StreamClusterTopologyResponse]) *Topology {
		return &Topology{newOrdered[fodcv1.StreamClusterTopologyResponse, fodcv1.StreamClusterTopologyRequest](ss, t.limits)}
	})
}

// OpenLifecycle publishes a new lifecycle stream of the agent.
func (t *Table) OpenLifecycle(agentID string) (*Lifecycle, error) {
	return open(t, agentID, protocol.KindLifecycle, lifecycleSlot, newLifecycle)
}

// OpenSchemaRegistry publishes a new schema registry stream of the agent.
func (t *Table) OpenSchemaRegistry(agentID string) (*SchemaRegistry, error) {
	return open(t, agentID, protocol.KindSchemaRegistry, schemaRegistrySlot, func(ss *session[fodcv1.StreamSchemaRegistryResponse]) *SchemaRegistry {
		return &SchemaRegistry{ordered: newOrdered[fodcv1.StreamSchemaRegistryResponse, RegistryRound](ss, t.limits)}
	})
}

// OpenCrash publishes a new crash diagnostics stream of the agent.
func (t *Table) OpenCrash(agentID string) (*Crash, error) {
	return open(t, agentID, protocol.KindCrash, crashSlot, func(ss *session[fodcv1.StreamCrashDiagnosticsResponse]) *Crash {
		return &Crash{ss}
	})
}

// OpenPressure publishes a new pressure profiles stream of the agent.
func (t *Table) OpenPressure(agentID string) (*Pressure, error) {
	return open(t, agentID, protocol.KindPressure, pressureSlot, newPressure)
}

// OpenNodeConfig publishes a new configuration stream of the agent.
func (t *Table) OpenNodeConfig(agentID string) (*NodeConfig, error) {
	return open(t, agentID, protocol.KindNodeConfig, nodeConfigSlot, func(ss *session[fodcv1.ExtNodeConfigResponse]) *NodeConfig {
		return &NodeConfig{newOrdered[fodcv1.ExtNodeConfigResponse, fodcv1.ExtNodeConfigRequest](ss, t.limits)}
	})
}

// Metrics returns the agent's live metrics stream.
func (t *Table) Metrics(agentID string) (*Metrics, bool) { return lookup(t, agentID, metricsSlot) }

// Topology returns the agent's live topology stream.
func (t *Table) Topology(agentID string) (*Topology, bool) { return lookup(t, agentID, topologySlot) }

// Lifecycle returns the agent's live lifecycle stream.
func (t *Table) Lifecycle(agentID string) (*Lifecycle, bool) {
	return lookup(t, agentID, lifecycleSlot)
}

// SchemaRegistry returns the agent's live schema registry stream.
func (t *Table) SchemaRegistry(agentID string) (*SchemaRegistry, bool) {
	return lookup(t, agentID, schemaRegistrySlot)
}

// Crash returns the agent's live crash diagnostics stream.
func (t *Table) Crash(agentID string) (*Crash, bool) { return lookup(t, agentID, crashSlot) }

// Pressure returns the agent's live pressure profiles stream.
func (t *Table) Pressure(agentID string) (*Pressure, bool) { return lookup(t, agentID, pressureSlot) }

// NodeConfig returns the agent's live configuration stream; agents without
// the extension have none.
func (t *Table) NodeConfig(agentID string) (*NodeConfig, bool) {
	return lookup(t, agentID, nodeConfigSlot)
}

// Has reports whether the agent has a live stream of the kind.
func (t *Table) Has(agentID string, kind protocol.Kind) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	as := t.agents[agentID]
	if as == nil {
		return false
	}
	switch kind {
	case protocol.KindMetrics:
		return as.metrics != nil
	case protocol.KindTopology:
		return as.topology != nil
	case protocol.KindLifecycle:
		return as.lifecycle != nil
	case protocol.KindSchemaRegistry:
		return as.schemaRegistry != nil
	case protocol.KindCrash:
		return as.crash != nil
	case protocol.KindPressure:
		return as.pressure != nil
	case protocol.KindNodeConfig:
		return as.nodeConfig != nil
	case protocol.KindProfiles:
		return as.profiles != nil
	}
	return false
}
