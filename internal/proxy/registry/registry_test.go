package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fodc-go/fodc/internal/roles"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	hbTimeout      = 30 * time.Second
	cleanupTimeout = 5 * time.Minute
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type harness struct {
	r     *Registry
	clock *fakeClock
	prom  *prometheus.Registry
	logs  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records decodes the JSON log lines.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(s.b.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		out = append(out, m)
	}
	return out
}

// newHarness builds a registry on a fake clock with sequential ids
// ("agent-1", "agent-2", ...) and a private metrics registry; mods adjust
// the options.
func newHarness(t *testing.T, maxAgents int, mods ...func(*Options)) *harness {
	t.Helper()
	return newHarnessAt(t, harnessStart, maxAgents, mods...)
}

// harnessStart is when the harness clock starts.
var harnessStart = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newHarnessAt is newHarness with the clock starting at start.
func newHarnessAt(t *testing.T, start time.Time, maxAgents int, mods ...func(*Options)) *harness {
	t.Helper()
	h := &harness{
		clock: &fakeClock{t: start},
		prom:  prometheus.NewRegistry(),
		logs:  &syncBuffer{},
	}
	var seq atomic.Int64
	opts := Options{
		HeartbeatTimeout: hbTimeout,
		CleanupTimeout:   cleanupTimeout,
		MaxAgents:        maxAgents,
		Now:              h.clock.Now,
		NewID:            func() string { return fmt.Sprintf("agent-%d", seq.Add(1)) },
	}
	for _, mod := range mods {
		mod(&opts)
	}
	r, err := New(opts, slog.New(slog.NewJSONHandler(h.logs, nil)), h.prom)
	require.NoError(t, err)
	h.r = r
	return h
}

func (h *harness) register(t *testing.T, id Identity) Agent {
	t.Helper()
	a, err := h.r.Register(id)
	require.NoError(t, err)
	return a
}

func pod(name string, containers ...string) Identity {
	return Identity{RoleName: "ROLE_DATA", PodName: name, ContainerNames: containers, Labels: map[string]string{"type": "hot"}}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		wantSubs []string
	}{
		{"zero", Options{}, []string{"--agent-heartbeat-timeout", "--agent-cleanup-timeout", "--max-agents"}},
		{"cleanup equals heartbeat", Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Minute, MaxAgents: 1},
			[]string{"--agent-cleanup-timeout (1m0s) must be greater than --agent-heartbeat-timeout (1m0s)"}},
		{"cleanup below heartbeat", Options{HeartbeatTimeout: time.Minute, CleanupTimeout: time.Second, MaxAgents: 1},
			[]string{"must be greater than"}},
		{"negative heartbeat", Options{HeartbeatTimeout: -1, CleanupTimeout: time.Second, MaxAgents: 1},
			[]string{"--agent-heartbeat-timeout"}},
		{"no agents", Options{HeartbeatTimeout: time.Second, CleanupTimeout: time.Minute, MaxAgents: 0},
			[]string{"--max-agents"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(tc.opts, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			require.Error(t, err)
			require.Nil(t, r)
			for _, s := range tc.wantSubs {
				require.ErrorContains(t, err, s)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	h := newHarness(t, 10)
	start := h.clock.Now()
	in := Identity{
		RoleName:       "ROLE_DATA",
		PodName:        "banyandb-data-hot-0",
		ContainerNames: []string{"data", "sidecar"},
		Primary:        Address{IP: "10.0.0.5", Port: 17912},
		Secondary:      map[string]Address{"gossip": {IP: "10.0.0.5", Port: 17932}},
		Labels:         map[string]string{"type": "Hot", "zone": "a"},
	}
	a := h.register(t, in)
	require.Equal(t, "agent-1", a.ID)
	require.Equal(t, StatusOnline, a.Status)
	require.Equal(t, start, a.RegisteredAt)
	require.Equal(t, start, a.LastHeartbeat)
	require.Equal(t, "ROLE_DATA", a.RoleName)
	require.Equal(t, roles.Role{Kind: roles.KindData, Tier: "hot"}, a.Role)
	require.Equal(t, "datanode-hot", a.Role.String())
	require.Equal(t, "banyandb-data-hot-0", a.PodName)
	require.Equal(t, []string{"data", "sidecar"}, a.ContainerNames)
	require.Equal(t, "10.0.0.5:17912", a.Primary.String())
	require.Equal(t, map[string]Address{"gossip": {IP: "10.0.0.5", Port: 17932}}, a.Secondary)
	require.Equal(t, map[string]string{"type": "Hot", "zone": "a"}, a.Labels)

	// Neither the caller's input nor a returned snapshot aliases registry state.
	in.Labels["zone"] = "b"
	in.ContainerNames[0] = "changed"
	in.Secondary["gossip"] = Address{}
	a.Labels["zone"] = "c"
	a.ContainerNames[1] = "changed"
	got, ok := h.r.Get(a.ID)
	require.True(t, ok)
	require.Equal(t, "a", got.Labels["zone"])
	require.Equal(t, []string{"data", "sidecar"}, got.ContainerNames)
	require.Equal(t, 17932, got.Secondary["gossip"].Port)

	_, ok = h.r.Get("nope")
	require.False(t, ok)

	online, total := h.r.Counts()
	require.Equal(t, 1, online)
	require.Equal(t, 1, total)
	require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.accepted))
}

func TestRegisterDefaultIDIsUUIDv4(t *testing.T) {
	r, err := New(Options{HeartbeatTimeout: time.Second, CleanupTimeout: time.Minute, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	a, err := r.Register(pod("p"))
	require.NoError(t, err)
	u, err := uuid.Parse(a.ID)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(4), u.Version())
	b, err := r.Register(pod("q"))
	require.NoError(t, err)
	require.NotEqual(t, a.ID, b.ID)
	require.Empty(t, a.Labels["absent"]) // labels map is usable even if nil in input
}

func TestRegisterRejects(t *testing.T) {
	tests := []struct {
		name    string
		id      Identity
		wantSub string
	}{
		{"empty role", Identity{PodName: "p"}, "node role cannot be empty"},
		{"blank role", Identity{RoleName: "  ", PodName: "p"}, "node role cannot be empty"},
		{"unknown role", Identity{RoleName: "ROLE_QUERY", PodName: "p"}, `unknown role "ROLE_QUERY"`},
		{"no pod and no address", Identity{RoleName: "ROLE_DATA"}, "pod name cannot be empty"},
		{"port without ip", Identity{RoleName: "ROLE_DATA", Primary: Address{Port: 1}}, "pod name cannot be empty"},
	}
	h := newHarness(t, 10)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.r.Register(tc.id)
			require.ErrorIs(t, err, ErrInvalidRegistration)
			require.ErrorContains(t, err, tc.wantSub)
			require.Equal(t, float64(i+1), testutil.ToFloat64(h.r.metrics.rejected))
		})
	}
	_, total := h.r.Counts()
	require.Zero(t, total)

	// An address alone identifies a design agent.
	a := h.register(t, Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 17912}})
	require.Equal(t, roles.Role{Kind: roles.KindLiaison}, a.Role)
	// ROLE_UNSPECIFIED is a valid (if uninformative) registration.
	a = h.register(t, Identity{RoleName: "ROLE_UNSPECIFIED", PodName: "p"})
	require.Equal(t, roles.KindUnspecified, a.Role.Kind)
}

func TestHeartbeatRefresh(t *testing.T) {
	tests := []struct {
		name         string
		hb           Identity
		wantRoleName string
		wantRole     roles.Role
		wantLabels   map[string]string
	}{
		{"same role, new labels (W15)", Identity{RoleName: "ROLE_DATA", Labels: map[string]string{"type": "warm", "x": "1"}},
			"ROLE_DATA", roles.Role{Kind: roles.KindData, Tier: "warm"}, map[string]string{"type": "warm", "x": "1"}},
		{"role change", Identity{RoleName: "ROLE_LIAISON", Labels: map[string]string{"type": "hot"}},
			"ROLE_LIAISON", roles.Role{Kind: roles.KindLiaison}, map[string]string{"type": "hot"}},
		{"design spelling", Identity{RoleName: "datanode-cold", Labels: map[string]string{"type": "hot"}},
			"datanode-cold", roles.Role{Kind: roles.KindData, Tier: "cold"}, map[string]string{"type": "hot"}},
		{"empty role keeps role, labels still replaced", Identity{Labels: map[string]string{"type": "cold"}},
			"ROLE_DATA", roles.Role{Kind: roles.KindData, Tier: "cold"}, map[string]string{"type": "cold"}},
		{"unspecified role ignored", Identity{RoleName: "ROLE_UNSPECIFIED", Labels: map[string]string{"type": "hot"}},
			"ROLE_DATA", roles.Role{Kind: roles.KindData, Tier: "hot"}, map[string]string{"type": "hot"}},
		{"invalid role ignored", Identity{RoleName: "bogus", Labels: map[string]string{"type": "hot"}},
			"ROLE_DATA", roles.Role{Kind: roles.KindData, Tier: "hot"}, map[string]string{"type": "hot"}},
		{"nil labels clear labels and tier", Identity{RoleName: "ROLE_DATA"},
			"ROLE_DATA", roles.Role{Kind: roles.KindData}, map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 10)
			a := h.register(t, pod("p", "c"))
			h.clock.Advance(7 * time.Second)
			hb := tc.hb
			hb.PodName, hb.ContainerNames = "other-pod", []string{"other"} // ignored
			hb.Primary = Address{IP: "1.2.3.4", Port: 5}                   // ignored
			got, err := h.r.Heartbeat(a.ID, hb)
			require.NoError(t, err)
			require.Equal(t, tc.wantRoleName, got.RoleName)
			require.Equal(t, tc.wantRole, got.Role)
			require.Equal(t, tc.wantLabels, got.Labels)
			require.Equal(t, "p", got.PodName)
			require.Equal(t, []string{"c"}, got.ContainerNames)
			require.Empty(t, got.Primary.IP)
			require.Equal(t, a.RegisteredAt, got.RegisteredAt)
			require.Equal(t, a.RegisteredAt.Add(7*time.Second), got.LastHeartbeat)
			stored, _ := h.r.Get(a.ID)
			require.Equal(t, got, stored)
		})
	}
}

func TestHeartbeatRevives(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("p"))
	h.clock.Advance(hbTimeout + time.Second)
	h.r.Sweep()
	got, _ := h.r.Get(a.ID)
	require.Equal(t, StatusUnconnected, got.Status)
	online, total := h.r.Counts()
	require.Equal(t, 0, online)
	require.Equal(t, 1, total)

	got, err := h.r.Heartbeat(a.ID, pod("p"))
	require.NoError(t, err)
	require.Equal(t, StatusOnline, got.Status)
	online, _ = h.r.Counts()
	require.Equal(t, 1, online)
}

func TestHeartbeatUnknown(t *testing.T) {
	h := newHarness(t, 10)
	_, err := h.r.Heartbeat("never", pod("p"))
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, "agent never is not registered")

	old := h.register(t, pod("banyandb-liaison-0"))
	h.register(t, pod("BanyanDB-Liaison-0"))
	_, err = h.r.Heartbeat(old.ID, pod("banyandb-liaison-0"))
	require.ErrorIs(t, err, ErrSuperseded)
	require.NotErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, `pod "banyandb-liaison-0"`)

	gone := h.register(t, pod("q"))
	h.clock.Advance(cleanupTimeout + time.Second)
	h.r.Sweep()
	_, err = h.r.Heartbeat(gone.ID, pod("q"))
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, "removed (expired)")

	addr := h.register(t, Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 1}})
	h.register(t, Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 1}})
	_, err = h.r.Heartbeat(addr.ID, Identity{})
	require.ErrorIs(t, err, ErrSuperseded)
	require.ErrorContains(t, err, "addr/10.0.0.1:1")
}

func TestSweepBoundaries(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("a"))
	b := h.register(t, pod("b"))
	status := func(id string) (Status, bool) {
		got, ok := h.r.Get(id)
		return got.Status, ok
	}

	h.clock.Advance(hbTimeout) // exactly the timeout: still online
	h.r.Sweep()
	s, _ := status(a.ID)
	require.Equal(t, StatusOnline, s)

	_, err := h.r.Heartbeat(b.ID, pod("b")) // b is now 30s younger than a
	require.NoError(t, err)

	h.clock.Advance(time.Nanosecond)
	h.r.Sweep()
	s, _ = status(a.ID)
	require.Equal(t, StatusUnconnected, s)
	s, _ = status(b.ID)
	require.Equal(t, StatusOnline, s)

	h.clock.Advance(cleanupTimeout - hbTimeout - time.Nanosecond) // a silent exactly cleanupTimeout
	h.r.Sweep()
	s, ok := status(a.ID)
	require.True(t, ok)
	require.Equal(t, StatusUnconnected, s)
	s, _ = status(b.ID)
	require.Equal(t, StatusUnconnected, s)

	removed, ok := h.r.Removed(a.ID)
	require.True(t, ok)
	h.clock.Advance(time.Nanosecond)
	h.r.Sweep()
	_, ok = status(a.ID)
	require.False(t, ok)
	require.True(t, isClosed(removed))
	reason, ok := h.r.Forgotten(a.ID)
	require.True(t, ok)
	require.Equal(t, ReasonExpired, reason)
	_, ok = status(b.ID)
	require.True(t, ok)

	h.clock.Advance(hbTimeout)
	h.r.Sweep()
	_, total := h.r.Counts()
	require.Zero(t, total)
	require.Equal(t, 2.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonExpired))))
}

func TestSupersessionStorm(t *testing.T) {
	h := newHarness(t, 10)
	h.register(t, pod("other")) // an unrelated agent must survive
	var prev []Agent
	for i := range 1000 {
		id := pod("banyandb-data-hot-0", "data", "liaison")
		if i%2 == 1 { // container order and pod-name case do not matter
			id = pod("BANYANDB-DATA-HOT-0", "liaison", "data")
		}
		a, err := h.r.Register(id)
		require.NoError(t, err, "registration %d", i)
		prev = append(prev, a)
		_, total := h.r.Counts()
		require.Equal(t, 2, total)
	}
	require.Len(t, h.r.List(Filter{PodName: "banyandb-data-hot-0"}), 1)
	last := prev[len(prev)-1]
	got := h.r.List(Filter{PodName: "banyandb-data-hot-0"})[0]
	require.Equal(t, last.ID, got.ID)

	for _, a := range prev[:len(prev)-1] {
		_, ok := h.r.Removed(a.ID)
		require.False(t, ok)
		reason, ok := h.r.Forgotten(a.ID)
		require.True(t, ok)
		require.Equal(t, ReasonSuperseded, reason)
	}
	require.Equal(t, 999.0, testutil.ToFloat64(h.r.metrics.supersessions))
	require.Equal(t, 999.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonSuperseded))))
	require.Equal(t, 1001.0, testutil.ToFloat64(h.r.metrics.accepted))
	require.Zero(t, testutil.ToFloat64(h.r.metrics.rejected))
	require.Zero(t, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonEvicted))))
}

func TestIdentityKeys(t *testing.T) {
	tests := []struct {
		name       string
		first, sec Identity
		supersedes bool
	}{
		{"two containers of one pod are distinct", pod("p", "c1"), pod("p", "c2"), false},
		{"container subset is distinct", pod("p", "c1"), pod("p", "c1", "c2"), false},
		{"same containers any order", pod("p", "c1", "c2"), pod("p", "c2", "c1"), true},
		{"pod name case", pod("Pod-A"), pod("pod-a"), true},
		{"different pods", pod("p"), pod("q"), false},
		{"pod name wins over address", Identity{RoleName: "liaison", PodName: "p", Primary: Address{IP: "10.0.0.1", Port: 1}},
			Identity{RoleName: "liaison", PodName: "p", Primary: Address{IP: "10.0.0.2", Port: 1}}, true},
		{"same address without pod", Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 1}},
			Identity{RoleName: "datanode-hot", Primary: Address{IP: "10.0.0.1", Port: 1}}, true},
		{"other port without pod", Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 1}},
			Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 2}}, false},
		{"address vs pod", Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 1}},
			Identity{RoleName: "liaison", PodName: "10.0.0.1:1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 10)
			a := h.register(t, tc.first)
			b := h.register(t, tc.sec)
			_, total := h.r.Counts()
			_, stillThere := h.r.Get(a.ID)
			if tc.supersedes {
				require.Equal(t, 1, total)
				require.False(t, stillThere)
				reason, _ := h.r.Forgotten(a.ID)
				require.Equal(t, ReasonSuperseded, reason)
			} else {
				require.Equal(t, 2, total)
				require.True(t, stillThere)
			}
			_, ok := h.r.Get(b.ID)
			require.True(t, ok)
		})
	}
}

func TestCapacity(t *testing.T) {
	h := newHarness(t, 3)
	a := h.register(t, pod("a"))
	h.clock.Advance(time.Second)
	b := h.register(t, pod("b"))
	h.clock.Advance(time.Second)
	c := h.register(t, pod("c"))

	_, err := h.r.Register(pod("d"))
	require.ErrorIs(t, err, ErrTooManyAgents)
	require.ErrorContains(t, err, "maximum number of agents (3) reached")
	require.ErrorContains(t, err, "--max-agents")
	require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.rejected))

	// Re-registering a known node at capacity supersedes instead.
	b2 := h.register(t, pod("b"))
	reason, _ := h.r.Forgotten(b.ID)
	require.Equal(t, ReasonSuperseded, reason)

	// a (oldest heartbeat) and c go unconnected; b2 stays online.
	h.clock.Advance(hbTimeout)
	_, err = h.r.Heartbeat(b2.ID, pod("b"))
	require.NoError(t, err)
	h.clock.Advance(time.Second)
	h.r.Sweep()
	online, total := h.r.Counts()
	require.Equal(t, 1, online)
	require.Equal(t, 3, total)

	removedA, _ := h.r.Removed(a.ID)
	d := h.register(t, pod("d"))
	require.True(t, isClosed(removedA))
	reason, ok := h.r.Forgotten(a.ID)
	require.True(t, ok)
	require.Equal(t, ReasonEvicted, reason)
	_, ok = h.r.Get(c.ID)
	require.True(t, ok, "c was younger than a and must survive")

	e := h.register(t, pod("e")) // evicts c, the last unconnected entry
	reason, _ = h.r.Forgotten(c.ID)
	require.Equal(t, ReasonEvicted, reason)

	_, err = h.r.Register(pod("f")) // b2, d, e are all online
	require.ErrorIs(t, err, ErrTooManyAgents)
	ids := func() []string {
		var out []string
		for _, x := range h.r.List(Filter{}) {
			out = append(out, x.ID)
		}
		return out
	}
	require.Equal(t, []string{b2.ID, d.ID, e.ID}, ids())
	require.Equal(t, 2.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonEvicted))))
}

func TestRemovedCloses(t *testing.T) {
	tests := []struct {
		reason Reason
		remove func(h *harness, id string)
	}{
		{ReasonSuperseded, func(h *harness, _ string) { _, _ = h.r.Register(pod("target")) }},
		{ReasonExpired, func(h *harness, _ string) { h.clock.Advance(cleanupTimeout + 1); h.r.Sweep() }},
		{ReasonDisconnected, func(h *harness, id string) { h.r.Unregister(id, ReasonDisconnected) }},
		{ReasonUnregistered, func(h *harness, id string) { h.r.Unregister(id, ReasonUnregistered) }},
		{ReasonEvicted, func(h *harness, _ string) {
			h.clock.Advance(hbTimeout + 1)
			h.r.Sweep()
			_, _ = h.r.Register(pod("newcomer"))
		}},
	}
	for _, tc := range tests {
		t.Run(string(tc.reason), func(t *testing.T) {
			h := newHarness(t, 1)
			a := h.register(t, pod("target"))
			removed, ok := h.r.Removed(a.ID)
			require.True(t, ok)
			require.False(t, isClosed(removed))
			_, ok = h.r.Forgotten(a.ID)
			require.False(t, ok, "a live id is not forgotten")

			tc.remove(h, a.ID)

			require.True(t, isClosed(removed))
			_, ok = h.r.Get(a.ID)
			require.False(t, ok)
			ch, ok := h.r.Removed(a.ID)
			require.False(t, ok)
			require.Nil(t, ch)
			reason, ok := h.r.Forgotten(a.ID)
			require.True(t, ok)
			require.Equal(t, tc.reason, reason)
			require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(tc.reason))))

			var found bool
			for _, rec := range h.logs.records(t) {
				if rec["msg"] == "Agent removed" && rec["agent_id"] == a.ID {
					found = true
					require.Equal(t, string(tc.reason), rec["reason"])
					require.Equal(t, "target", rec["pod_name"])
					require.Equal(t, "datanode-hot", rec["role"])
					require.Equal(t, "registry", rec["component"])
				}
			}
			require.True(t, found, "removal is logged")
		})
	}
}

func TestUnregister(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("p"))
	require.True(t, h.r.Unregister(a.ID, ReasonUnregistered))
	require.False(t, h.r.Unregister(a.ID, ReasonDisconnected), "second removal is a no-op")
	reason, _ := h.r.Forgotten(a.ID)
	require.Equal(t, ReasonUnregistered, reason, "the first reason sticks")
	require.False(t, h.r.Unregister("never", ReasonUnregistered))

	// The node can register again after it left.
	b := h.register(t, pod("p"))
	require.NotEqual(t, a.ID, b.ID)
	require.Zero(t, testutil.ToFloat64(h.r.metrics.supersessions))
}

func TestForgottenIsBounded(t *testing.T) {
	h := newHarness(t, 10)
	var ids []string
	for i := range tombstoneCap + 2 {
		a := h.register(t, pod(fmt.Sprintf("pod-%d", i)))
		require.True(t, h.r.Unregister(a.ID, ReasonDisconnected))
		ids = append(ids, a.ID)
	}
	for i, id := range ids {
		_, ok := h.r.Forgotten(id)
		require.Equal(t, i >= 2, ok, "id %d", i)
	}
	require.Len(t, h.r.tombs.byID, tombstoneCap)
	_, ok := h.r.Forgotten("never")
	require.False(t, ok)
}

func TestClose(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("a"))
	h.register(t, pod("b"))
	removed, _ := h.r.Removed(a.ID)
	h.r.Close()
	// The nodes stay known, offline, so that they are not forgotten.
	require.Equal(t, StatusCounts{Offline: 2}, h.r.CountByStatus())
	require.True(t, isClosed(removed))
	got, ok := h.r.Get(a.ID)
	require.True(t, ok)
	require.Equal(t, StatusOffline, got.Status)
	require.Equal(t, "proxy shutdown", got.DisconnectReason)
	reason, ok := h.r.Forgotten(a.ID)
	require.True(t, ok)
	require.Equal(t, ReasonShutdown, reason)
	_, err := h.r.Register(pod("c"))
	require.ErrorIs(t, err, ErrClosed)
	h.r.Close() // idempotent
	require.False(t, h.r.Disconnect(a.ID, ReasonDisconnected, ""))
	require.Zero(t, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonShutdown))))
}

// fleet registers a small mixed cluster and returns its agents by pod name.
func fleet(t *testing.T, h *harness) map[string]Agent {
	t.Helper()
	out := map[string]Agent{}
	for _, id := range []Identity{
		{RoleName: "ROLE_LIAISON", PodName: "liaison-0", Primary: Address{IP: "10.0.0.1", Port: 17912}},
		{RoleName: "ROLE_DATA", PodName: "data-hot-0", Labels: map[string]string{"type": "hot"}, Primary: Address{IP: "10.0.0.2", Port: 17912}},
		{RoleName: "ROLE_DATA", PodName: "data-hot-1", Labels: map[string]string{"type": "hot"}, Primary: Address{IP: "10.0.0.2", Port: 17913}},
		{RoleName: "datanode-warm", PodName: "Data-Warm-0", Primary: Address{IP: "fd00::3", Port: 17912}},
		{RoleName: "ROLE_DATA", PodName: "data-x-0"},
		{RoleName: "meta", PodName: "meta-0"},
	} {
		out[id.PodName] = h.register(t, id)
	}
	return out
}

func TestList(t *testing.T) {
	h := newHarness(t, 10)
	fl := fleet(t, h)
	mustRole := func(s string) roles.Role {
		r, err := roles.Parse(s)
		require.NoError(t, err)
		return r
	}
	tests := []struct {
		name string
		f    Filter
		want []string // pod names, in order
	}{
		{"all, sorted by pod name", Filter{}, []string{"Data-Warm-0", "data-hot-0", "data-hot-1", "data-x-0", "liaison-0", "meta-0"}},
		{"role ignored without HasRole", Filter{Role: mustRole("liaison")}, []string{"Data-Warm-0", "data-hot-0", "data-hot-1", "data-x-0", "liaison-0", "meta-0"}},
		{"liaison design spelling", Filter{Role: mustRole("liaison"), HasRole: true}, []string{"liaison-0"}},
		{"liaison enum spelling", Filter{Role: mustRole("ROLE_LIAISON"), HasRole: true}, []string{"liaison-0"}},
		{"all data nodes by enum", Filter{Role: mustRole("ROLE_DATA"), HasRole: true}, []string{"Data-Warm-0", "data-hot-0", "data-hot-1", "data-x-0"}},
		{"all data nodes by datanode", Filter{Role: mustRole("datanode"), HasRole: true}, []string{"Data-Warm-0", "data-hot-0", "data-hot-1", "data-x-0"}},
		{"hot tier (from label)", Filter{Role: mustRole("datanode-hot"), HasRole: true}, []string{"data-hot-0", "data-hot-1"}},
		{"warm tier (from role)", Filter{Role: mustRole("DATANODE-WARM"), HasRole: true}, []string{"Data-Warm-0"}},
		{"cold tier", Filter{Role: mustRole("datanode-cold"), HasRole: true}, nil},
		{"unspecified", Filter{Role: mustRole("ROLE_UNSPECIFIED"), HasRole: true}, nil},
		{"meta", Filter{Role: mustRole("ROLE_META"), HasRole: true}, []string{"meta-0"}},
		{"address ip", Filter{Address: "10.0.0.2"}, []string{"data-hot-0", "data-hot-1"}},
		{"address ip:port", Filter{Address: "10.0.0.2:17913"}, []string{"data-hot-1"}},
		{"address wrong port", Filter{Address: "10.0.0.2:1"}, nil},
		{"address ipv6", Filter{Address: "fd00::3"}, []string{"Data-Warm-0"}},
		{"address ipv6 long form", Filter{Address: "fd00:0:0::3"}, []string{"Data-Warm-0"}},
		{"address [ipv6]:port", Filter{Address: "[fd00::3]:17912"}, []string{"Data-Warm-0"}},
		{"address unknown", Filter{Address: "10.9.9.9"}, nil},
		{"pod name case-insensitive", Filter{PodName: "DATA-WARM-0"}, []string{"Data-Warm-0"}},
		{"pod name exact only", Filter{PodName: "data-hot"}, nil},
		{"agent id", Filter{AgentID: fl["meta-0"].ID}, []string{"meta-0"}},
		{"agent id unknown", Filter{AgentID: "nope"}, nil},
		{"combined", Filter{Role: mustRole("datanode-hot"), HasRole: true, Address: "10.0.0.2", PodName: "data-hot-0"}, []string{"data-hot-0"}},
		{"combined mismatch", Filter{Role: mustRole("liaison"), HasRole: true, PodName: "data-hot-0"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range h.r.List(tc.f) {
				got = append(got, a.PodName)
				require.Equal(t, fl[a.PodName].ID, a.ID)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestListOrdersByIDWithinPod(t *testing.T) {
	h := newHarness(t, 10)
	for _, c := range []string{"c3", "c1", "c2"} {
		h.register(t, pod("p", c))
	}
	var ids []string
	for _, a := range h.r.List(Filter{}) {
		ids = append(ids, a.ID)
	}
	require.Equal(t, []string{"agent-1", "agent-2", "agent-3"}, ids)
}

func TestByIdentity(t *testing.T) {
	h := newHarness(t, 10)
	fl := fleet(t, h)
	hot := roles.Role{Kind: roles.KindData, Tier: "hot"}
	tests := []struct {
		name   string
		ip     string
		port   int
		role   roles.Role
		labels map[string]string
		want   []string
	}{
		{"exact", "10.0.0.2", 17913, hot, map[string]string{"type": "hot"}, []string{"data-hot-1"}},
		{"untiered role matches tiered node", "10.0.0.2", 17912, roles.Role{Kind: roles.KindData}, nil, []string{"data-hot-0"}},
		{"label mismatch", "10.0.0.2", 17912, hot, map[string]string{"type": "warm"}, nil},
		{"missing label", "10.0.0.2", 17912, hot, map[string]string{"zone": "a"}, nil},
		{"role mismatch", "10.0.0.2", 17912, roles.Role{Kind: roles.KindLiaison}, nil, nil},
		{"port mismatch", "10.0.0.2", 1, hot, nil, nil},
		{"ipv6", "fd00::3", 17912, roles.Role{Kind: roles.KindData, Tier: "warm"}, map[string]string{}, []string{"Data-Warm-0"}},
		{"liaison", "10.0.0.1", 17912, roles.Role{Kind: roles.KindLiaison}, nil, []string{"liaison-0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range h.r.ByIdentity(tc.ip, tc.port, tc.role, tc.labels) {
				got = append(got, a.PodName)
				require.Equal(t, fl[a.PodName].ID, a.ID)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestByIdentityPrefersOnline(t *testing.T) {
	h := newHarness(t, 10)
	at := Address{IP: "10.0.0.9", Port: 17912}
	// Two pods claim one address (say, a restarted pod before its old
	// entry expired); the silent one sorts last even though its name is first.
	a := h.register(t, Identity{RoleName: "liaison", PodName: "a", Primary: at})
	b := h.register(t, Identity{RoleName: "liaison", PodName: "b", Primary: at})
	h.clock.Advance(hbTimeout + 1)
	_, err := h.r.Heartbeat(b.ID, Identity{})
	require.NoError(t, err)
	h.r.Sweep()
	got := h.r.ByIdentity("10.0.0.9", 17912, roles.Role{Kind: roles.KindLiaison}, nil)
	require.Len(t, got, 2)
	require.Equal(t, []string{b.ID, a.ID}, []string{got[0].ID, got[1].ID})
	require.Equal(t, StatusOnline, got[0].Status)
	require.Equal(t, StatusUnconnected, got[1].Status)
}

func TestAddressString(t *testing.T) {
	require.Equal(t, "10.0.0.1:17912", Address{IP: "10.0.0.1", Port: 17912}.String())
	require.Equal(t, "[fd00::1]:80", Address{IP: "fd00::1", Port: 80}.String())
	require.Empty(t, Address{Port: 80}.String())
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("a"))
	h.register(t, pod("b"))
	h.clock.Advance(hbTimeout + 1)
	_, err := h.r.Heartbeat(a.ID, pod("a"))
	require.NoError(t, err)
	h.r.Sweep()
	h.register(t, pod("a")) // supersedes a
	_, _ = h.r.Register(Identity{})

	want := `
# HELP fodc_proxy_agents Agents in the registry, by status (online, unconnected or offline) and role (such as liaison or datanode-hot).
# TYPE fodc_proxy_agents gauge
fodc_proxy_agents{role="datanode-hot",status="offline"} 0
fodc_proxy_agents{role="datanode-hot",status="online"} 1
fodc_proxy_agents{role="datanode-hot",status="unconnected"} 1
# HELP fodc_proxy_registrations_total Agent registrations, by result (accepted or rejected).
# TYPE fodc_proxy_registrations_total counter
fodc_proxy_registrations_total{result="accepted"} 3
fodc_proxy_registrations_total{result="rejected"} 1
# HELP fodc_proxy_agent_supersessions_total Registry entries replaced because the same node registered again.
# TYPE fodc_proxy_agent_supersessions_total counter
fodc_proxy_agent_supersessions_total 1
# HELP fodc_proxy_agent_removals_total Agents removed from the registry, by reason.
# TYPE fodc_proxy_agent_removals_total counter
fodc_proxy_agent_removals_total{reason="disconnected"} 0
fodc_proxy_agent_removals_total{reason="evicted"} 0
fodc_proxy_agent_removals_total{reason="expired"} 0
fodc_proxy_agent_removals_total{reason="shutdown"} 0
fodc_proxy_agent_removals_total{reason="superseded"} 1
fodc_proxy_agent_removals_total{reason="unregistered"} 0
# HELP fodc_proxy_registrations_refused_foreign_principal_total Registrations refused because a live entry of the same pod belongs to another principal (certificate, token or, unauthenticated, transport connection).
# TYPE fodc_proxy_registrations_refused_foreign_principal_total counter
fodc_proxy_registrations_refused_foreign_principal_total 0
`
	require.NoError(t, testutil.GatherAndCompare(h.prom, strings.NewReader(want)))

}

// TestMetricsPedantic checks that the custom collector's Describe and
// Collect agree, which a pedantic registry verifies on every Gather.
func TestMetricsPedantic(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r, err := New(Options{HeartbeatTimeout: time.Second, CleanupTimeout: time.Minute, MaxAgents: 1}, slog.New(slog.DiscardHandler), reg)
	require.NoError(t, err)
	_, err = r.Register(pod("p"))
	require.NoError(t, err)
	n, err := testutil.GatherAndCount(reg, "fodc_proxy_agents")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	require.Equal(t, 3, testutil.CollectAndCount(&agentsCollector{r: r}))
}

func TestLogsRegistration(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, Identity{RoleName: "ROLE_DATA", PodName: "p", Labels: map[string]string{"type": "cold"}})
	recs := h.logs.records(t)
	require.Len(t, recs, 1)
	require.Equal(t, "Agent registered", recs[0]["msg"])
	require.Equal(t, "INFO", recs[0]["level"])
	require.Equal(t, a.ID, recs[0]["agent_id"])
	require.Equal(t, "p", recs[0]["pod_name"])
	require.Equal(t, "datanode-cold", recs[0]["role"])
	require.Equal(t, "ROLE_DATA", recs[0]["role_name"])
}

func TestRunStopsOnCancel(t *testing.T) {
	h := newHarness(t, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	cancel()
	require.NoError(t, <-done)
}

// TestRunSweeps uses synctest's fake time, so the real ticker in Run and
// time.Now (Options.Now is nil) advance together without real waiting.
func TestRunSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, err := New(Options{HeartbeatTimeout: hbTimeout, CleanupTimeout: cleanupTimeout, MaxAgents: 10}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		require.NoError(t, err)
		a, err := r.Register(pod("p"))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		// Sweeps run at 15s, 30s, 45s: the one at 45s sees 45s of silence.
		time.Sleep(hbTimeout + hbTimeout/2)
		synctest.Wait()
		got, ok := r.Get(a.ID)
		require.True(t, ok)
		require.Equal(t, StatusUnconnected, got.Status)

		removed, _ := r.Removed(a.ID)
		time.Sleep(cleanupTimeout)
		synctest.Wait()
		require.True(t, isClosed(removed))
		reason, _ := r.Forgotten(a.ID)
		require.Equal(t, ReasonExpired, reason)

		cancel()
		require.NoError(t, <-done)
	})
}

func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, 50)
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				a, err := h.r.Register(pod(fmt.Sprintf("pod-%d", (w*rounds+i)%40), "c"))
				if err != nil {
					if !errors.Is(err, ErrTooManyAgents) {
						t.Errorf("register: %v", err)
					}
					continue
				}
				_, err = h.r.Heartbeat(a.ID, Identity{RoleName: "datanode-warm", Labels: map[string]string{"i": "x"}})
				if err != nil && !errors.Is(err, ErrSuperseded) && !errors.Is(err, ErrNotFound) {
					t.Errorf("heartbeat: %v", err)
				}
				for _, got := range h.r.List(Filter{Role: roles.Role{Kind: roles.KindData}, HasRole: true}) {
					got.Labels["mutate"] = "snapshot" // must not race with the registry
				}
				switch i % 10 {
				case 0:
					h.clock.Advance(time.Second)
					h.r.Sweep()
					h.r.Unregister(a.ID, ReasonDisconnected)
				case 5:
					h.r.Disconnect(a.ID, ReasonDisconnected, "stream ended: Canceled")
					_, _ = h.r.Heartbeat(a.ID, Identity{})
				}
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			if _, err := h.prom.Gather(); err != nil {
				t.Errorf("gather: %v", err)
			}
			h.r.Counts()
		}
	})
	wg.Wait()
	online, total := h.r.Counts()
	require.LessOrEqual(t, online, total)
	require.LessOrEqual(t, total, 40, "one entry per pod at most")
	for _, a := range h.r.List(Filter{}) {
		require.Empty(t, a.Labels["mutate"])
	}
}
