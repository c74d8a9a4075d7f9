// Package registry keeps the proxy's table of registered agents (DESIGN.md
// §1.1): who each agent is, when it was last seen, and whether it is still
// connected.
//
// An entry has one of three statuses:
//
//   - online: its registration stream is open and heartbeats arrive;
//   - unconnected: its registration stream is still open but no heartbeat
//     arrived within the heartbeat timeout (a heartbeat makes it online
//     again);
//   - offline: its registration stream ended (Disconnect), the proxy shut
//     down (Close), or the entry was loaded from the state file after a
//     proxy restart. The node stays listed, with its last-seen time and the
//     reason it went away, but its agent id is no longer usable.
//
// A heartbeat timeout alone never makes an entry offline: only the end of
// the stream does. The health sweep (Run, Sweep) removes an unconnected or
// offline entry once it has been silent for the cleanup timeout. List
// returns entries of every status unless its Filter says otherwise, so
// callers that talk to agents check Agent.Status.
//
// Unlike the upstream proxy (PROTOCOL.md §7 W5), a node that registers again
// supersedes its previous entry (in any status) at once, so reconnect storms
// neither leave stale duplicates nor use up --max-agents. When the table is
// full, the offline entry silent longest is evicted first, then the
// unconnected one; online entries are never evicted. Removed ids are
// remembered for a while so that callers can tell an agent why its id is no
// longer valid.
//
// With Options.StateFile set, the node identities (never collected data) are
// saved to a JSON file on membership changes (debounced by Run) and on
// Close, and loaded again by New as offline entries with the reason
// "proxy restart", so that nodes that do not come back after a restart stay
// visible until the cleanup timeout.
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
	"os"
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
	// ErrNotFound means the agent id is not registered (any more). An
	// offline id yields ErrOffline, which also matches ErrNotFound.
	ErrNotFound = errors.New("agent not found")
	// ErrOffline means the agent id belongs to an offline entry: its
	// registration stream ended, so the id is no longer usable. errors.Is
	// reports it as ErrNotFound too.
	ErrOffline error = offlineError{}
	// ErrTooManyAgents means the registry is full of online agents.
	ErrTooManyAgents = errors.New("too many agents")
	// ErrInvalidRegistration means a registration lacks required identity.
	ErrInvalidRegistration = errors.New("invalid registration")
	// ErrSuperseded means the agent id was replaced by a newer registration
	// of the same node.
	ErrSuperseded = errors.New("agent superseded")
	// ErrClosed means the registry was closed because the proxy is
	// shutting down.
	ErrClosed = errors.New("registry closed")
	// ErrForeignPrincipal means a live entry of the same node (or of the
	// same pod with overlapping containers) belongs to another principal.
	ErrForeignPrincipal = errors.New("node registered by another principal")
)

// offlineError is the type of ErrOffline; it matches ErrNotFound as well so
// that callers that only know ErrNotFound keep working.
type offlineError struct{}

func (offlineError) Error() string { return "agent offline" }

// Is reports ErrNotFound as equivalent.
func (offlineError) Is(target error) bool { return target == ErrNotFound }

// tombstoneCap is how many removed ids Forgotten remembers.
const tombstoneCap = 4096

// Status is an agent's liveness as seen by the health sweep.
type Status string

// The agent statuses.
const (
	// StatusOnline means a heartbeat arrived within the heartbeat timeout.
	StatusOnline Status = "online"
	// StatusUnconnected means the registration stream is still open but
	// no heartbeat arrived within the heartbeat timeout; the entry is
	// removed after the cleanup timeout.
	StatusUnconnected Status = "unconnected"
	// StatusOffline means the registration stream ended (or the proxy
	// restarted); the node stays listed until the cleanup timeout after it
	// was last seen, but its agent id is no longer usable.
	StatusOffline Status = "offline"
)

// allStatuses lists every Status, in display order.
var allStatuses = []Status{StatusOnline, StatusUnconnected, StatusOffline}

// Reason says why an entry went offline or left the registry.
type Reason string

// The reasons. Disconnect and Close take an entry offline; the others
// remove it.
const (
	// ReasonSuperseded means the same node registered again.
	ReasonSuperseded Reason = "superseded"
	// ReasonExpired means no heartbeat arrived within the cleanup timeout.
	ReasonExpired Reason = "expired"
	// ReasonDisconnected means the agent's registration stream ended.
	ReasonDisconnected Reason = "disconnected"
	// ReasonRestart means the entry was loaded from the state file when the
	// proxy started; the node has not registered with this proxy process.
	ReasonRestart Reason = "proxy_restart"
	// ReasonEvicted means the registry was full and this was the offline
	// entry (or, without one, the unconnected entry) silent longest.
	ReasonEvicted Reason = "evicted"
	// ReasonShutdown means the proxy is shutting down (Close takes every
	// entry offline with it).
	ReasonShutdown Reason = "shutdown"
	// ReasonUnregistered means an explicit request removed the entry.
	ReasonUnregistered Reason = "unregistered"
)

// allReasons lists the reasons an entry is removed for, to initialise the
// removal counters. ReasonRestart is not among them: it only takes entries
// offline.
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
	// Principal is who registered: an authenticated identity ("cert:...",
	// "token:...") or, for an unauthenticated agent, its transport
	// connection ("peer:ip:port"). Set at registration by the gRPC
	// service and ignored in heartbeats. Entries of different principals
	// never replace each other while the older one is live (see
	// Register); "" is a principal like any other.
	Principal string
	// Authenticated says Principal is a certificate or token identity.
	Authenticated bool
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
	// LastHeartbeat is when the last registration or heartbeat arrived. It
	// always equals LastSeen; it is kept for existing callers.
	LastHeartbeat time.Time
	// Status is the agent's liveness at the last sweep, heartbeat or
	// disconnection.
	Status Status
	// LastSeen is when the last registration or heartbeat arrived (for an
	// entry loaded from the state file, the saved time). The sweep removes
	// unconnected and offline entries CleanupTimeout after it.
	LastSeen time.Time
	// DisconnectedAt is when the entry went offline (for an entry loaded
	// from the state file, when it was loaded); zero unless Status is
	// StatusOffline.
	DisconnectedAt time.Time
	// DisconnectReason says why the entry went offline, such as
	// "stream ended: Unavailable", "proxy shutdown" or "proxy restart";
	// empty unless Status is StatusOffline.
	DisconnectReason string
	// PreviousID is the id of the entry of the same node that this
	// registration replaced (in any status), or "" if there was none.
	PreviousID string
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
	// StateFile, if set, is where the node identities are persisted: New
	// loads the file if it exists (its entries become offline with the
	// reason "proxy restart"; entries already silent for CleanupTimeout are
	// skipped) and fails, naming the file, if it is unreadable, corrupt, of
	// an unknown version or larger than 8 MiB. Run saves it, at most once a
	// second, after membership changes, and Close saves it one last time.
	// Writes are atomic: a temporary file in the same directory is synced
	// and renamed over it.
	StateFile string
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
	stateFile        string
	changed          chan struct{}                       // signals Run that the state file is stale
	rename           func(oldpath, newpath string) error // os.Rename; tests replace it

	saveMu sync.Mutex // serialises state file writes; taken before mu

	mu     sync.Mutex        // guards the fields below
	agents map[string]*entry // by agent id
	byKey  map[string]*entry // by identity key; one entry per node
	tombs  tombstones
	closed bool
	dirty  bool // membership changed since the last save
	seen   bool // a heartbeat arrived since the last save
}

// entry is the registry's own record of an agent. Its fields change only
// under Registry.mu and only while the entry is in the registry.
type entry struct {
	agent Agent
	key   string
	// gone is cancelled (markGone) when the id stops being usable: offline
	// or removed. A context rather than a bare channel, so that a stream
	// can react with context.AfterFunc instead of a waiting goroutine.
	gone     context.Context
	markGone context.CancelFunc
	reason   Reason // why the entry went offline; empty while usable
}

// newGone returns the context and cancel function of a new entry's gone.
func newGone() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// usable reports whether e's id may still be used for streams and
// heartbeats.
func (e *entry) usable() bool { return e.agent.Status != StatusOffline }

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

// New validates opts and returns a registry whose metrics go to reg and
// whose events go to logger, empty or, when
// opts.StateFile exists, holding its nodes as offline entries. It starts no
// goroutines; call Run to sweep periodically and save the state file.
func New(opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Registry, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if logger == nil || reg == nil {
		return nil, errors.New("registry: logger and registerer are required")
	}
	r := &Registry{
		heartbeatTimeout: opts.HeartbeatTimeout,
		cleanupTimeout:   opts.CleanupTimeout,
		maxAgents:        opts.MaxAgents,
		now:              opts.Now,
		newID:            opts.NewID,
		logger:           logger.With("component", "registry"),
		stateFile:        opts.StateFile,
		changed:          make(chan struct{}, 1),
		rename:           os.Rename,
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
	if r.stateFile != "" {
		st, err := readState(r.stateFile)
		if err != nil {
			return nil, err
		}
		if err := r.restore(st); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(reg, r)
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
// without a pod name), whatever its status, is removed as superseded and its
// id returned in Agent.PreviousID. At capacity, the offline entry that has
// been silent longest is evicted, else the unconnected one silent longest;
// if every entry is online, Register fails with ErrTooManyAgents.
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
	var previous string
	if c := r.conflictLocked(id, key); c != nil {
		r.metrics.foreign.Inc()
		return Agent{}, nil, fmt.Errorf("%w: pod %q is registered, live, by another connection or identity (agent %s); it can register again once that entry misses its heartbeats or its stream ends",
			ErrForeignPrincipal, id.PodName, c.agent.ID)
	}
	// Live entries of another principal of the same pod with overlapping
	// containers that this registration may replace (see mayReplace)
	// leave with the entry of the same node: two principals' registrations
	// of one pod and container never both feed /metrics.
	if id.PodName != "" {
		for _, e := range r.agents {
			if e.key != key && e.usable() && e.agent.Principal != id.Principal && strings.EqualFold(e.agent.PodName, id.PodName) && overlap(e.agent.ContainerNames, id.ContainerNames) {
				removed = append(removed, r.removeLocked(e, ReasonSuperseded))
				r.metrics.supersessions.Inc()
			}
		}
	}
	if old, ok := r.byKey[key]; ok {
		previous = old.agent.ID
		removed = append(removed, r.removeLocked(old, ReasonSuperseded))
		r.metrics.supersessions.Inc()
	} else if len(r.agents) >= r.maxAgents {
		victim := r.oldestLocked(StatusOffline)
		if victim == nil {
			victim = r.oldestLocked(StatusUnconnected)
		}
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
			LastSeen:      now,
			Status:        StatusOnline,
			PreviousID:    previous,
		},
		key: key,
	}
	e.gone, e.markGone = newGone()
	e.agent.Role = role
	r.agents[agentID] = e
	r.byKey[key] = e
	r.changedLocked()
	return snapshot(e.agent), removed, nil
}

// mayReplace reports whether a registration by id may take the place of
// e: e is offline (its registration stream ended), comes from the same
// principal, or is an unauthenticated entry that missed its heartbeats.
func mayReplace(e *entry, id Identity) bool {
	return !e.usable() || e.agent.Principal == id.Principal ||
		(!e.agent.Authenticated && e.agent.Status == StatusUnconnected)
}

// conflictLocked returns a live entry of another principal that id must
// not replace or stand beside: the entry of the same node, or one of the
// same pod whose containers overlap id's (no containers overlap all), so
// that two registrations of the same pod and container never both feed
// /metrics.
func (r *Registry) conflictLocked(id Identity, key string) *entry {
	if old, ok := r.byKey[key]; ok && !mayReplace(old, id) {
		return old
	}
	if id.PodName == "" {
		return nil
	}
	for _, e := range r.agents {
		if e.key == key || !strings.EqualFold(e.agent.PodName, id.PodName) || mayReplace(e, id) {
			continue
		}
		if overlap(e.agent.ContainerNames, id.ContainerNames) {
			return e
		}
	}
	return nil
}

// overlap reports whether two container sets share a name; an empty set
// stands for every container of the pod.
func overlap(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// oldestLocked returns the entry with status st that was seen longest ago
// (ties broken by id), or nil if there is none.
func (r *Registry) oldestLocked(st Status) *entry {
	var victim *entry
	for _, e := range r.agents {
		if e.agent.Status != st {
			continue
		}
		if victim == nil || e.agent.LastSeen.Before(victim.agent.LastSeen) ||
			(e.agent.LastSeen.Equal(victim.agent.LastSeen) && e.agent.ID < victim.agent.ID) {
			victim = e
		}
	}
	return victim
}

// changedLocked records a membership change so that Run saves the state
// file soon.
func (r *Registry) changedLocked() {
	if r.stateFile == "" {
		return
	}
	r.dirty = true
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Heartbeat records a heartbeat from agentID and marks it online. A
// non-empty, valid, specified hb.RoleName replaces the stored role; the
// labels are always replaced by hb.Labels (PROTOCOL.md §7 W15), and the tier
// is recomputed from them. Pod name, containers and addresses are fixed at
// registration and ignored here. An unknown id yields ErrNotFound, an
// offline one ErrOffline (which matches ErrNotFound too), and ErrSuperseded
// when a newer registration of the same node replaced it.
func (r *Registry) Heartbeat(agentID string, hb Identity) (Agent, error) {
	r.mu.Lock()
	e, ok := r.agents[agentID]
	if !ok || !e.usable() {
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
	now := r.now()
	a.LastHeartbeat, a.LastSeen = now, now
	revived := a.Status != StatusOnline
	a.Status = StatusOnline
	r.seen = true
	if revived {
		r.changedLocked()
	}
	out := snapshot(*a)
	r.mu.Unlock()
	if revived {
		r.logger.Info("Agent online again", "agent_id", out.ID, "pod_name", out.PodName, "role", out.Role.String())
	}
	return out, nil
}

// goneErrLocked explains why agentID is not usable.
func (r *Registry) goneErrLocked(agentID string) error {
	if e, ok := r.agents[agentID]; ok {
		return fmt.Errorf("%w: agent %s went offline (%s); register again", ErrOffline, agentID, e.agent.DisconnectReason)
	}
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

// Disconnect takes agentID offline: its registration stream ended. The
// entry stays listed with status StatusOffline, its LastSeen, and
// DisconnectReason set to detail (or to reason when detail is empty), until
// the sweep removes it CleanupTimeout after LastSeen or the same node
// registers again. Its Removed channel is closed, so streams that use the id
// end, and Heartbeat, Removed and new streams refuse the id; Forgotten
// reports reason. The gRPC service calls it, instead of Unregister, when a
// registration stream ends, with ReasonDisconnected and a short detail such
// as "stream ended: Unavailable". It reports whether agentID was usable; an
// unknown, removed or already offline id is left alone.
func (r *Registry) Disconnect(agentID string, reason Reason, detail string) bool {
	r.mu.Lock()
	e, ok := r.agents[agentID]
	if !ok || !e.usable() {
		r.mu.Unlock()
		return false
	}
	r.offlineLocked(e, reason, detail)
	out := e.agent
	r.mu.Unlock()
	r.logger.Info("Agent offline", "agent_id", out.ID, "pod_name", out.PodName, "role", out.Role.String(),
		"reason", string(reason), "detail", out.DisconnectReason, "last_seen", out.LastSeen)
	return true
}

// offlineLocked takes a usable entry offline and closes its channel.
func (r *Registry) offlineLocked(e *entry, reason Reason, detail string) {
	if detail == "" {
		detail = string(reason)
	}
	e.agent.Status = StatusOffline
	e.agent.DisconnectedAt = r.now()
	e.agent.DisconnectReason = detail
	e.reason = reason
	e.markGone()
	r.changedLocked()
}

// Unregister removes agentID, in any status, for the given reason and
// reports whether it was in the registry. Unlike Disconnect, the node
// disappears from List at once.
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

// Get returns a snapshot of agentID's entry, including an offline one (see
// Agent.Status).
func (r *Registry) Get(agentID string) (Agent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[agentID]
	if !ok {
		return Agent{}, false
	}
	return snapshot(e.agent), true
}

// Removed returns a channel that is closed when agentID stops being usable:
// when its entry goes offline or leaves the registry, for any reason. ok is
// false, and the channel nil, if agentID is not usable now (unknown,
// removed or offline), so callers also use it to admit new streams.
func (r *Registry) Removed(agentID string) (<-chan struct{}, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[agentID]
	if !ok || !e.usable() {
		return nil, false
	}
	return e.gone.Done(), true
}

// RemovedContext is Removed as a context, cancelled at the moment the
// channel Removed returns is closed. Callers use it with context.AfterFunc
// to react to the removal without a goroutine waiting for it.
func (r *Registry) RemovedContext(agentID string) (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.agents[agentID]
	if !ok || !e.usable() {
		return nil, false
	}
	return e.gone, true
}

// Forgotten reports why agentID is no longer usable: the reason its entry
// went offline (the entry is still listed), or the reason it was recently
// removed. Only the last few thousand removals are remembered; ok is false
// for older, unknown or usable ids.
func (r *Registry) Forgotten(agentID string) (Reason, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.agents[agentID]; ok {
		return e.reason, !e.usable()
	}
	t, ok := r.tombs.byID[agentID]
	return t.reason, ok
}

// Filter selects agents for List. Zero fields select everything, offline
// entries included: callers that talk to agents check Agent.Status (or set
// Status or ExcludeOffline).
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
	// Status selects agents with exactly this status; "" selects every
	// status.
	Status Status
	// ExcludeOffline drops offline entries, leaving the agents whose ids
	// are usable (online and unconnected).
	ExcludeOffline bool
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
		if (f.Status != "" && a.Status != f.Status) || (f.ExcludeOffline && a.Status == StatusOffline) {
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
// key-value pair of labels. Online agents come first, then unconnected, then
// offline ones, each sorted by pod name and id.
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
	switch s {
	case StatusOnline:
		return 0
	case StatusUnconnected:
		return 1
	default:
		return 2
	}
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

// Counts returns the number of online agents and of all entries, offline
// ones included. CountByStatus splits the rest by status.
func (r *Registry) Counts() (online, total int) {
	c := r.CountByStatus()
	return c.Online, c.Online + c.Unconnected + c.Offline
}

// StatusCounts is the number of entries per status.
type StatusCounts struct {
	Online, Unconnected, Offline int
}

// CountByStatus returns the number of entries per status, read at one
// instant so that they add up to the table size.
func (r *Registry) CountByStatus() StatusCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c StatusCounts
	for _, e := range r.agents {
		switch e.agent.Status {
		case StatusOnline:
			c.Online++
		case StatusUnconnected:
			c.Unconnected++
		default:
			c.Offline++
		}
	}
	return c
}

// roleStatus keys the per-role counts.
type roleStatus struct {
	role   string
	status Status
}

// countsByRole returns the number of entries per role (roles.Role.String)
// and status.
func (r *Registry) countsByRole() map[roleStatus]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[roleStatus]int)
	for _, e := range r.agents {
		out[roleStatus{role: e.agent.Role.String(), status: e.agent.Status}]++
	}
	return out
}

// Sweep runs one health pass at the current time: online agents silent for
// longer than the heartbeat timeout become unconnected (they stay so, not
// offline, while their stream is open), and entries of any status silent
// for longer than the cleanup timeout are removed as expired.
func (r *Registry) Sweep() {
	r.mu.Lock()
	now := r.now()
	var removed []removal
	var offline []Agent
	for _, e := range r.agents {
		silent := now.Sub(e.agent.LastSeen)
		switch {
		case silent > r.cleanupTimeout:
			removed = append(removed, r.removeLocked(e, ReasonExpired))
		case silent > r.heartbeatTimeout && e.agent.Status == StatusOnline:
			e.agent.Status = StatusUnconnected
			r.changedLocked()
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

// stateSaveDelay is how long Run waits after a membership change before it
// saves the state file, so that a burst of changes costs one write and the
// file is written at most once per delay.
const stateSaveDelay = time.Second

// Run sweeps every HeartbeatTimeout/2 until ctx is done, then returns nil.
// With a state file, it also saves the file stateSaveDelay after a
// membership change (coalescing the changes in between), after sweeps that
// follow heartbeats (so that saved last-seen times stay recent), and once
// more, if anything is unsaved, when ctx is done. Failed saves are logged
// and retried after the next sweep. It is meant to be an actor of the
// proxy's run.Group.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(max(r.heartbeatTimeout/2, time.Millisecond))
	defer t.Stop()
	var save *time.Timer
	var saveC <-chan time.Time
	arm := func() {
		if saveC == nil && r.stateFile != "" {
			save = time.NewTimer(stateSaveDelay)
			saveC = save.C
		}
	}
	defer func() {
		if save != nil {
			save.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			r.logSaveErr(r.saveState())
			return nil
		case <-t.C:
			r.Sweep()
			if r.unsaved() {
				arm()
			}
		case <-r.changed:
			arm()
		case <-saveC:
			saveC = nil
			r.logSaveErr(r.saveState())
		}
	}
}

// Close takes every usable entry offline with ReasonShutdown (closing its
// Removed channel so that its streams end), saves the state file, if any,
// and makes later registrations fail with ErrClosed. The entries stay in the
// table, and the file records the nodes with the status they had just
// before the shutdown, so the next proxy lists them again. It is
// idempotent; a failed save is logged.
func (r *Registry) Close() {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	var st *stateDoc
	if r.stateFile != "" {
		st = r.stateLocked()
		r.dirty, r.seen = false, false
	}
	n := 0
	for _, e := range r.agents {
		if e.usable() {
			r.offlineLocked(e, ReasonShutdown, "proxy shutdown")
			n++
		}
	}
	r.mu.Unlock()
	r.logger.Info("Registry closed", "agents_offline", n)
	if st != nil {
		r.logSaveErr(r.writeState(st))
	}
}

// removal is an entry that left the registry, kept for logging after the
// lock is released. The entry is no longer reachable, so nothing changes it.
type removal struct {
	e      *entry
	reason Reason
}

// removeLocked takes e out of the registry, closes its Removed channel
// unless it is offline (then it is closed already), remembers the reason
// and counts it.
func (r *Registry) removeLocked(e *entry, reason Reason) removal {
	delete(r.agents, e.agent.ID)
	if r.byKey[e.key] == e {
		delete(r.byKey, e.key)
	}
	if e.usable() {
		e.markGone()
	}
	r.changedLocked()
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
