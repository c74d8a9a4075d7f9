// Package registry keeps the proxy's table of registered agents (DESIGN.md
// §1.1): who each agent is, when it last sent a heartbeat, and whether it is
// online. A health sweep marks silent agents unconnected and later removes
// them.
//
// Unlike the upstream proxy (PROTOCOL.md §7 W5), a node that registers again
// supersedes its previous entry at once, so reconnect storms neither leave
// stale duplicates nor use up --max-agents. Removed ids are remembered for a
// while so that callers can tell an agent why its id is no longer valid.
package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fodc-go/fodc/internal/roles"
)

// Errors returned by the registry. They are wrapped with detail; compare
// with errors.Is.
var (
	// ErrNotFound means the agent id is not registered (any more).
	ErrNotFound = errors.New("agent not found")
	// ErrTooManyAgents means the registry is full of live agents.
	ErrTooManyAgents = errors.New("too many agents")
	// ErrInvalidRegistration means a registration lacks required identity.
	ErrInvalidRegistration = errors.New("invalid registration")
	// ErrSuperseded means the agent id was replaced by a newer registration
	// of the same node.
	ErrSuperseded = errors.New("agent superseded")
	// ErrClosed means the registry was closed because the proxy is
	// shutting down.
	ErrClosed = errors.New("registry closed")
)

// tombstoneCap is how many removed ids Forgotten remembers.
const tombstoneCap = 4096

// Status is an agent's liveness as seen by the health sweep.
type Status string

// The agent statuses.
const (
	// StatusOnline means a heartbeat arrived within the heartbeat timeout.
	StatusOnline Status = "online"
	// StatusUnconnected means no heartbeat arrived within the heartbeat
	// timeout; the entry is removed after the cleanup timeout.
	StatusUnconnected Status = "unconnected"
)

// Reason says why an entry left the registry.
type Reason string

// The removal reasons.
const (
	// ReasonSuperseded means the same node registered again.
	ReasonSuperseded Reason = "superseded"
	// ReasonExpired means no heartbeat arrived within the cleanup timeout.
	ReasonExpired Reason = "expired"
	// ReasonDisconnected means the agent's registration stream ended.
	ReasonDisconnected Reason = "disconnected"
	// ReasonEvicted means the registry was full and this was the unconnected
	// entry that had been silent longest.
	ReasonEvicted Reason = "evicted"
	// ReasonShutdown means the proxy is shutting down.
	ReasonShutdown Reason = "shutdown"
	// ReasonUnregistered means an explicit request removed the entry.
	ReasonUnregistered Reason = "unregistered"
)

// allReasons lists every Reason, to initialise the removal counters.
var allReasons = []Reason{ReasonSuperseded, ReasonExpired, ReasonDisconnected, ReasonEvicted, ReasonShutdown, ReasonUnregistered}

// Address is a network endpoint of a node.
type Address struct {
	IP   string
	Port int
}

// String returns "ip:port" (IPv6 in brackets), or "" when IP is empty.
func (a Address) String() string {
	if a.IP == "" {
		return ""
	}
	return net.JoinHostPort(a.IP, strconv.Itoa(a.Port))
}

// Identity is what an agent says about its node when it registers or sends
// a heartbeat.
type Identity struct {
	// RoleName is the role exactly as the agent sent it, such as "ROLE_DATA"
	// or "datanode-hot".
	RoleName string
	// Role is RoleName parsed and completed with the tier label. Register
	// and Heartbeat set it; callers leave it zero.
	Role roles.Role
	// PodName is the Kubernetes pod (or host) the node runs in.
	PodName string
	// ContainerNames are the containers the agent watches in that pod.
	ContainerNames []string
	// Primary is the node's main address; upstream agents leave it empty.
	Primary Address
	// Secondary holds further named addresses, such as "gossip" or "http".
	Secondary map[string]Address
	// Labels are the node's own labels, such as type=hot.
	Labels map[string]string
}

// Agent is a snapshot of one registry entry. Its maps and slices are copies,
// so it is safe to keep and read without locking; changing it does not
// change the registry.
type Agent struct {
	// ID is the agent id the proxy issued at registration.
	ID string
	Identity
	// RegisteredAt is when the agent registered.
	RegisteredAt time.Time
	// LastHeartbeat is when the last registration or heartbeat arrived.
	LastHeartbeat time.Time
	// Status is the agent's liveness at the last sweep or heartbeat.
	Status Status
}

// Options configures a Registry.
type Options struct {
	// HeartbeatTimeout is how long an agent may stay silent before it is
	// marked unconnected (--agent-heartbeat-timeout). It must be positive.
	HeartbeatTimeout time.Duration
	// CleanupTimeout is how long an agent may stay silent before it is
	// removed (--agent-cleanup-timeout). It must exceed HeartbeatTimeout.
	CleanupTimeout time.Duration
	// MaxAgents caps the number of entries (--max-agents). It must be
	// positive.
	MaxAgents int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// NewID returns a fresh agent id; nil means a random UUID v4.
	NewID func() string
	// Logger receives lifecycle events; nil discards them.
	Logger *slog.Logger
	// Registerer receives the registry's metrics; nil means no metrics.
	Registerer prometheus.Registerer
}

// Validate reports every problem with o, naming the flag that fixes it.
func (o Options) Validate() error {
	var errs []error
	if o.HeartbeatTimeout <= 0 {
		errs = append(errs, fmt.Errorf("agent heartbeat timeout must be positive, got %v; set --agent-heartbeat-timeout", o.HeartbeatTimeout))
	}
	if o.CleanupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("agent cleanup timeout must be positive, got %v; set --agent-cleanup-timeout", o.CleanupTimeout))
	}
	if o.HeartbeatTimeout > 0 && o.CleanupTimeout > 0 && o.CleanupTimeout <= o.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("--agent-cleanup-timeout (%v) must be greater than --agent-heartbeat-timeout (%v)", o.CleanupTimeout, o.HeartbeatTimeout))
	}
	if o.MaxAgents <= 0 {
		errs = append(errs, fmt.Errorf("maximum number of agents must be positive, got %d; set --max-agents", o.MaxAgents))
	}
	return errors.Join(errs...)
}

// Registry is the table of registered agents. It is safe for concurrent
// use; all state is guarded by one mutex. The zero value is not usable;
// call New. It starts no goroutines: Run sweeps on the caller's goroutine.
type Registry struct {
	heartbeatTimeout time.Duration
	cleanupTimeout   time.Duration
	maxAgents        int
	now              func() time.Time
	newID            func() string
	logger           *slog.Logger
	metrics          *metrics

	mu     sync.Mutex        // guards the fields below
	agents map[string]*entry // by agent id
	byKey  map[string]*entry // by identity key; one live entry per node
	tombs  tombstones
	closed bool
}

// entry is the registry's own record of an agent. Its fields change only
// under Registry.mu and only while the entry is in the registry.
type entry struct {
	agent   Agent
	key     string
	removed chan struct{} // closed when the entry leaves the registry
}

// tombstone remembers why an id left the registry.
type tombstone struct {
	reason  Reason
	podName string
	key     string
}

// tombstones is a bounded FIFO memory of removed ids.
type tombstones struct {
	byID  map[string]tombstone
	order []string // ring of ids in removal order
	next  int      // slot in order that the next id takes
}

// New validates opts and returns an empty registry. It starts no
// goroutines; call Run to sweep periodically.
func New(opts Options) (*Registry, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		heartbeatTimeout: opts.HeartbeatTimeout,
		cleanupTimeout:   opts.CleanupTimeout,
		maxAgents:        opts.MaxAgents,
		now:              opts.Now,
		newID:            opts.NewID,
		logger:           opts.Logger,
		agents:           make(map[string]*entry),
		byKey:            make(map[string]*entry),
		tombs:            tombstones{byID: make(map[string]tombstone), order: make([]string, 0, tombstoneCap)},
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.newID == nil {
		r.newID = uuid.NewString
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	r.logger = r.logger.With("component", "registry")
	m, err := newMetrics(opts.Registerer, r)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	return r, nil
}

// identityKey names the node behind an identity: the pod and its container
// set, or the primary address when there is no pod name. Two registrations
// with the same key are the same node registering again.
func identityKey(id Identity) string {
	if id.PodName == "" {
		return "addr/" + id.Primary.String()
	}
	names := slices.Clone(id.ContainerNames)
	slices.Sort(names)
	return "pod/" + strings.ToLower(id.PodName) + "/" + strings.Join(names, ",")
}

// Register adds an agent under a fresh id, with status online. A previous
// entry of the same node (same pod and containers, or same primary address
// without a pod name) is removed as superseded. At capacity, the unconnected
// entry that has been silent longest is evicted; if every entry is online,
// Register fails with ErrTooManyAgents.
func (r *Registry) Register(id Identity) (Agent, error) {
	a, removed, err := r.register(id)
	r.logRemovals(removed)
	if err != nil {
		r.metrics.rejected.Inc()
		return Agent{}, err
	}
	r.metrics.accepted.Inc()
	r.logger.Info("Agent registered", "agent_id", a.ID, "pod_name", a.PodName, "role", a.Role.String(),
		"role_name", a.RoleName, "address", a.Primary.String())
	return a, nil
}

func (r *Registry) register(id Identity) (Agent, []removal, error) {
	if strings.TrimSpace(id.RoleName) == "" {
		return Agent{}, nil, fmt.Errorf("%w: node role cannot be empty", ErrInvalidRegistration)
	}
	role, err := roles.FromRegistration(id.RoleName, id.Labels)
	if err != nil {
		return Agent{}, nil, fmt.Errorf("%w: node role: %w", ErrInvalidRegistration, err)
	}
	if id.PodName == "" && id.Primary.IP == "" {
		return Agent{}, nil, fmt.Errorf("%w: pod name cannot be empty when no primary address is given", ErrInvalidRegistration)
	}
	key := identityKey(id)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Agent{}, nil, fmt.Errorf("%w: the proxy is shutting down; register with it again after it restarts", ErrClosed)
	}
	var removed []removal
	if old, ok := r.byKey[key]; ok {
		removed = append(removed, r.removeLocked(old, ReasonSuperseded))
		r.metrics.supersessions.Inc()
	} else if len(r.agents) >= r.maxAgents {
		victim := r.oldestUnconnectedLocked()
		if victim == nil {
			return Agent{}, nil, fmt.Errorf("%w: maximum number of agents (%d) reached and all are online; raise --max-agents", ErrTooManyAgents, r.maxAgents)
		}
		removed = append(removed, r.removeLocked(victim, ReasonEvicted))
	}
	agentID := r.newID()
	if _, dup := r.agents[agentID]; dup || agentID == "" {
		return Agent{}, removed, fmt.Errorf("generate agent id: got %q, which is empty or already in use", agentID)
	}
	now := r.now()
	e := &entry{
		agent: Agent{
			ID:            agentID,
			Identity:      cloneIdentity(id),
			RegisteredAt:  now,
			LastHeartbeat: now,
			Status:        StatusOnline,
		},
		key:     key,
		removed: make(chan struct{}),
	}
	e.agent.Role = role
	r.agents[agentID] = e
	r.byKey[key] = e
	return snapshot(e.agent), removed, nil
}

// oldestUnconnectedLocked returns the unconnected entry with the oldest
// heartbeat (ties broken by id), or nil if every entry is online.
func (r *Registry) oldestUnconnectedLocked() *entry {
	var victim *entry
	for _, e := range r.agents {
		if e.agent.Status != StatusUnconnected {
			continue
		}
		if victim == nil || e.agent.LastHeartbeat.Before(victim.agent.LastHeartbeat) ||
			(e.agent.LastHeartbeat.Equal(victim.agent.LastHeartbeat) && e.agent.ID < victim.agent.ID) {
			victim = e
		}
	}
	return victim
}

// Heartbeat records a heartbeat from agentID and marks it online. A
// non-empty, valid, specified hb.RoleName replaces the stored role; the
// labels are always replaced by hb.Labels (PROTOCOL.md §7 W15), and the tier
// is recomputed from them. Pod name, containers and addresses are fixed at
// registration and ignored here. An unknown id yields ErrNotFound, or
// ErrSuperseded when a newer registration of the same node replaced it.
func (r *Registry) Heartbeat(agentID string, hb Identity) (Agent, error) {
	r.mu.Lock()
	e, ok := r.agents[agentID]
	if !ok {
		err := r.goneErrLocked(agentID)
		r.mu.Unlock()
		return Agent{}, err
	}
	a := &e.agent
	if hb.RoleName != "" {
		if nr, err := roles.Parse(hb.RoleName); err == nil && nr.Kind != roles.KindUnspecified {
			a.RoleName = hb.RoleName
		}
	}
	a.Labels = cloneLabels(hb.Labels)
	// RoleName parsed at registration or just now, so this cannot fail.
	if role, err := roles.FromRegistration(a.RoleName, a.Labels); err == nil {
		a.Role = role
	}
	a.LastHeartbeat = r.now()
	revived := a.Status != StatusOnline
	a.Status = StatusOnline
	out := snapshot(*a)
	r.mu.Unlock()
	if revived {
		r.logger.Info("Agent online again", "agent_id", out.ID, "pod_name", out.PodName, "role", out.Role.String())
	}
	return out, nil
}

// goneErrLocked explains why agentID is not in the registry.
func (r *Registry) goneErrLocked(agentID string) error {
	t, ok := r.tombs.byID[agentID]
	switch {
	case !ok:
		return fmt.Errorf("%w: agent %s is not registered; register again", ErrNotFound, agentID)
	case t.reason == ReasonSuperseded:
		node := t.podName
		if node == "" {
			node = t.key
		}
		return fmt.Errorf("%w: agent %s was replaced by a newer registration of pod %q; use the newer agent id", ErrSuperseded, agentID, node)
	default:
		return fmt.Errorf("%w: agent %s was removed (%s); register again", ErrNotFound, agentID, t.reason)
	}
}

// Unregister removes agentID for the given reason and reports whether it
// was registered.
func (r *Registry) Unregister(agentID string, reason Reason) bool {
	r.mu.Lock()
	e, ok := r.agents[agentID]
	var rm removal
	if ok {
		rm = r.removeLocked(e, reason)
	}
	r.mu.Unlock()
	if ok {
		r.logRemovals([]removal{rm})
	}
	return ok
}

// Get returns a snapshot of agentID's entry.
func (r *Registry) Get(agentID string) (Agent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[agentID]
	if !ok {
		return Agent{}, false
	}
	return snapshot(e.agent), true
}

// Removed returns a channel that is closed when agentID leaves the registry
// for any reason. ok is false, and the channel nil, if agentID is not
// registered now.
func (r *Registry) Removed(agentID string) (<-chan struct{}, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[agentID]
	if !ok {
		return nil, false
	}
	return e.removed, true
}

// Forgotten reports why a recently removed agentID left the registry. Only
// the last few thousand removals are remembered; ok is false for older,
// unknown or still registered ids.
func (r *Registry) Forgotten(agentID string) (Reason, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tombs.byID[agentID]
	return t.reason, ok
}

// Filter selects agents for List. Zero fields select everything.
type Filter struct {
	// Role selects agents whose role matches it (roles.Role.Match) when
	// HasRole is set.
	Role    roles.Role
	HasRole bool
	// Address selects agents by primary address: "ip" matches any port,
	// "ip:port" (or "[ipv6]:port") one port.
	Address string
	// PodName selects agents by pod name, ignoring case.
	PodName string
	// AgentID selects one agent id.
	AgentID string
}

// List returns snapshots of the agents that f selects, sorted by pod name
// and then id.
func (r *Registry) List(f Filter) []Agent {
	wantIP, wantPort, hasPort := splitAddress(f.Address)
	r.mu.Lock()
	out := make([]Agent, 0, len(r.agents))
	for _, e := range r.agents {
		a := &e.agent
		if f.AgentID != "" && a.ID != f.AgentID {
			continue
		}
		if f.HasRole && !a.Role.Match(f.Role) {
			continue
		}
		if f.PodName != "" && !strings.EqualFold(a.PodName, f.PodName) {
			continue
		}
		if f.Address != "" && (!sameIP(a.Primary.IP, wantIP) || (hasPort && a.Primary.Port != wantPort)) {
			continue
		}
		out = append(out, snapshot(*a))
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(x, y Agent) int {
		return cmp.Or(cmp.Compare(x.PodName, y.PodName), cmp.Compare(x.ID, y.ID))
	})
	return out
}

// ByIdentity returns the agents whose primary address is ip:port, whose
// role matches role (roles.Role.Match), and whose labels include every
// key-value pair of labels. Online agents come first, then the rest, each
// sorted by pod name and id.
func (r *Registry) ByIdentity(ip string, port int, role roles.Role, labels map[string]string) []Agent {
	r.mu.Lock()
	var out []Agent
	for _, e := range r.agents {
		a := &e.agent
		if !sameIP(a.Primary.IP, ip) || a.Primary.Port != port || !a.Role.Match(role) || !hasLabels(a.Labels, labels) {
			continue
		}
		out = append(out, snapshot(*a))
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(x, y Agent) int {
		return cmp.Or(statusRank(x.Status)-statusRank(y.Status), cmp.Compare(x.PodName, y.PodName), cmp.Compare(x.ID, y.ID))
	})
	return out
}

func statusRank(s Status) int {
	if s == StatusOnline {
		return 0
	}
	return 1
}

// hasLabels reports whether have contains every pair of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// splitAddress splits an address filter into IP and optional port. A bare
// IPv6 address has no port.
func splitAddress(s string) (ip string, port int, hasPort bool) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return s, 0, false
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return s, 0, false
	}
	return host, n, true
}

// sameIP compares two IPs by value when both parse (so "::1" equals
// "0:0::1"), else as case-insensitive strings (host names).
func sameIP(a, b string) bool {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return pa.Unmap() == pb.Unmap()
	}
	return strings.EqualFold(a, b)
}

// Counts returns the number of online agents and of all agents.
func (r *Registry) Counts() (online, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.countsLocked()
}

func (r *Registry) countsLocked() (online, total int) {
	for _, e := range r.agents {
		if e.agent.Status == StatusOnline {
			online++
		}
	}
	return online, len(r.agents)
}

// Sweep runs one health pass at the current time: agents silent for longer
// than the heartbeat timeout become unconnected, and agents silent for
// longer than the cleanup timeout are removed.
func (r *Registry) Sweep() {
	r.mu.Lock()
	now := r.now()
	var removed []removal
	var offline []Agent
	for _, e := range r.agents {
		silent := now.Sub(e.agent.LastHeartbeat)
		switch {
		case silent > r.cleanupTimeout:
			removed = append(removed, r.removeLocked(e, ReasonExpired))
		case silent > r.heartbeatTimeout && e.agent.Status == StatusOnline:
			e.agent.Status = StatusUnconnected
			offline = append(offline, e.agent) // fields read only for logging
		}
	}
	r.mu.Unlock()
	for _, a := range offline {
		r.logger.Info("Agent unconnected", "agent_id", a.ID, "pod_name", a.PodName, "role", a.Role.String(),
			"last_heartbeat", a.LastHeartbeat)
	}
	r.logRemovals(removed)
}

// Run sweeps every HeartbeatTimeout/2 until ctx is done, then returns nil.
// It is meant to be an actor of the proxy's run.Group.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(max(r.heartbeatTimeout/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Sweep()
		}
	}
}

// Close removes every agent with ReasonShutdown and makes later
// registrations fail with ErrClosed. It is idempotent.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	removed := make([]removal, 0, len(r.agents))
	for _, e := range r.agents {
		removed = append(removed, r.removeLocked(e, ReasonShutdown))
	}
	r.mu.Unlock()
	r.logRemovals(removed)
}

// removal is an entry that left the registry, kept for logging after the
// lock is released. The entry is no longer reachable, so nothing changes it.
type removal struct {
	e      *entry
	reason Reason
}

// removeLocked takes e out of the registry, closes its Removed channel,
// remembers the reason and counts it.
func (r *Registry) removeLocked(e *entry, reason Reason) removal {
	delete(r.agents, e.agent.ID)
	if r.byKey[e.key] == e {
		delete(r.byKey, e.key)
	}
	close(e.removed)
	r.tombs.add(e.agent.ID, tombstone{reason: reason, podName: e.agent.PodName, key: e.key})
	r.metrics.removals.WithLabelValues(string(reason)).Inc()
	return removal{e: e, reason: reason}
}

func (r *Registry) logRemovals(rms []removal) {
	for _, rm := range rms {
		a := &rm.e.agent
		r.logger.Info("Agent removed", "agent_id", a.ID, "pod_name", a.PodName, "role", a.Role.String(), "reason", string(rm.reason))
	}
}

// add remembers id, forgetting the oldest id when full.
func (t *tombstones) add(id string, ts tombstone) {
	if len(t.order) < tombstoneCap {
		t.order = append(t.order, id)
	} else {
		delete(t.byID, t.order[t.next])
		t.order[t.next] = id
		t.next = (t.next + 1) % tombstoneCap
	}
	t.byID[id] = ts
}

// snapshot deep-copies a so the caller cannot reach registry state.
func snapshot(a Agent) Agent {
	a.Identity = cloneIdentity(a.Identity)
	return a
}

func cloneIdentity(id Identity) Identity {
	id.ContainerNames = slices.Clone(id.ContainerNames)
	id.Secondary = maps.Clone(id.Secondary)
	id.Labels = cloneLabels(id.Labels)
	return id
}

// cloneLabels copies labels; the result is never nil.
func cloneLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	maps.Copy(out, labels)
	return out
}
