package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/roles"
)

func TestDisconnectGoesOffline(t *testing.T) {
	tests := []struct {
		name       string
		from       Status
		detail     string
		wantDetail string
	}{
		{"online, stream ended", StatusOnline, "stream ended: Unavailable", "stream ended: Unavailable"},
		{"unconnected, stream ended", StatusUnconnected, "stream ended: DeadlineExceeded", "stream ended: DeadlineExceeded"},
		{"no detail falls back to the reason", StatusOnline, "", "disconnected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 10)
			a := h.register(t, pod("p", "c"))
			h.clock.Advance(10 * time.Second)
			_, err := h.r.Heartbeat(a.ID, pod("p"))
			require.NoError(t, err)
			seen := h.clock.Now()
			if tc.from == StatusUnconnected {
				h.clock.Advance(hbTimeout + time.Second)
				h.r.Sweep()
			} else {
				h.clock.Advance(5 * time.Second)
			}
			got, _ := h.r.Get(a.ID)
			require.Equal(t, tc.from, got.Status)
			removed, ok := h.r.Removed(a.ID)
			require.True(t, ok)

			require.True(t, h.r.Disconnect(a.ID, ReasonDisconnected, tc.detail))
			disconnectedAt := h.clock.Now()

			// The entry stays, offline, with when it was last seen and why it left.
			got, ok = h.r.Get(a.ID)
			require.True(t, ok)
			require.Equal(t, StatusOffline, got.Status)
			require.Equal(t, seen, got.LastSeen)
			require.Equal(t, seen, got.LastHeartbeat)
			require.Equal(t, disconnectedAt, got.DisconnectedAt)
			require.Equal(t, tc.wantDetail, got.DisconnectReason)
			require.Equal(t, []string{"c"}, got.ContainerNames)
			require.Equal(t, a.RegisteredAt, got.RegisteredAt)

			// Its id is no longer usable.
			require.True(t, isClosed(removed), "streams of the id end")
			ch, ok := h.r.Removed(a.ID)
			require.False(t, ok)
			require.Nil(t, ch)
			reason, ok := h.r.Forgotten(a.ID)
			require.True(t, ok)
			require.Equal(t, ReasonDisconnected, reason)
			_, err = h.r.Heartbeat(a.ID, pod("p"))
			require.ErrorIs(t, err, ErrOffline)
			require.ErrorIs(t, err, ErrNotFound)
			require.NotErrorIs(t, err, ErrSuperseded)
			require.ErrorContains(t, err, "agent "+a.ID+" went offline ("+tc.wantDetail+"); register again")
			require.False(t, h.r.Disconnect(a.ID, ReasonDisconnected, "again"), "a second disconnect is a no-op")
			got, _ = h.r.Get(a.ID)
			require.Equal(t, tc.wantDetail, got.DisconnectReason, "the first reason sticks")

			require.Equal(t, StatusCounts{Offline: 1}, h.r.CountByStatus())
			online, total := h.r.Counts()
			require.Zero(t, online)
			require.Equal(t, 1, total)
			require.Zero(t, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonDisconnected))),
				"going offline is not a removal")

			var logged bool
			for _, rec := range h.logs.records(t) {
				if rec["msg"] == "Agent offline" {
					logged = true
					require.Equal(t, a.ID, rec["agent_id"])
					require.Equal(t, "disconnected", rec["reason"])
					require.Equal(t, tc.wantDetail, rec["detail"])
				}
			}
			require.True(t, logged)

			// Removed CleanupTimeout after it was last seen, not after it left.
			h.clock.Advance(seen.Add(cleanupTimeout).Sub(h.clock.Now()))
			h.r.Sweep()
			_, ok = h.r.Get(a.ID)
			require.True(t, ok, "silent for exactly the cleanup timeout")
			h.clock.Advance(time.Nanosecond)
			h.r.Sweep()
			_, ok = h.r.Get(a.ID)
			require.False(t, ok)
			reason, ok = h.r.Forgotten(a.ID)
			require.True(t, ok)
			require.Equal(t, ReasonExpired, reason)
			_, err = h.r.Heartbeat(a.ID, pod("p"))
			require.ErrorContains(t, err, "removed (expired)")
			require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonExpired))))
			_, total = h.r.Counts()
			require.Zero(t, total)
		})
	}
}

func TestDisconnectUnknown(t *testing.T) {
	h := newHarness(t, 10)
	require.False(t, h.r.Disconnect("never", ReasonDisconnected, ""))
	a := h.register(t, pod("p"))
	require.True(t, h.r.Unregister(a.ID, ReasonUnregistered))
	require.False(t, h.r.Disconnect(a.ID, ReasonDisconnected, ""))
	reason, _ := h.r.Forgotten(a.ID)
	require.Equal(t, ReasonUnregistered, reason)

	// Unregister removes an offline entry at once.
	b := h.register(t, pod("q"))
	require.True(t, h.r.Disconnect(b.ID, ReasonDisconnected, ""))
	require.True(t, h.r.Unregister(b.ID, ReasonUnregistered))
	_, ok := h.r.Get(b.ID)
	require.False(t, ok)
	reason, _ = h.r.Forgotten(b.ID)
	require.Equal(t, ReasonUnregistered, reason)
}

// A heartbeat timeout alone leaves the stream's id usable: the entry is
// unconnected, not offline, until its stream ends or the cleanup timeout.
func TestHeartbeatTimeoutIsNotOffline(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("p"))
	h.clock.Advance(cleanupTimeout)
	h.r.Sweep()
	got, _ := h.r.Get(a.ID)
	require.Equal(t, StatusUnconnected, got.Status)
	require.Empty(t, got.DisconnectReason)
	require.True(t, got.DisconnectedAt.IsZero())
	removed, ok := h.r.Removed(a.ID)
	require.True(t, ok)
	require.False(t, isClosed(removed))
	_, ok = h.r.Forgotten(a.ID)
	require.False(t, ok)

	h.clock.Advance(time.Nanosecond)
	h.r.Sweep()
	require.True(t, isClosed(removed))
	reason, _ := h.r.Forgotten(a.ID)
	require.Equal(t, ReasonExpired, reason)
}

func TestReregistrationReplacesOffline(t *testing.T) {
	addr := Identity{RoleName: "liaison", Primary: Address{IP: "10.0.0.1", Port: 17912}}
	tests := []struct {
		name         string
		first, again Identity
	}{
		{"same pod and containers", pod("data-0", "data", "agent"), pod("DATA-0", "agent", "data")},
		{"same address without pod", addr, addr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 10)
			other := h.register(t, pod("other"))
			old := h.register(t, tc.first)
			require.Empty(t, old.PreviousID)
			require.True(t, h.r.Disconnect(old.ID, ReasonDisconnected, "stream ended: Unavailable"))
			h.clock.Advance(time.Minute)

			b := h.register(t, tc.again)
			require.NotEqual(t, old.ID, b.ID)
			require.Equal(t, old.ID, b.PreviousID)
			require.Equal(t, StatusOnline, b.Status)
			require.Empty(t, b.DisconnectReason)
			require.Equal(t, h.clock.Now(), b.LastSeen)

			// The offline entry is gone, not listed twice.
			_, ok := h.r.Get(old.ID)
			require.False(t, ok)
			require.Equal(t, StatusCounts{Online: 2}, h.r.CountByStatus())
			var ids []string
			for _, a := range h.r.List(Filter{}) {
				ids = append(ids, a.ID)
			}
			require.ElementsMatch(t, []string{other.ID, b.ID}, ids)
			reason, ok := h.r.Forgotten(old.ID)
			require.True(t, ok)
			require.Equal(t, ReasonSuperseded, reason)
			_, err := h.r.Heartbeat(old.ID, Identity{})
			require.ErrorIs(t, err, ErrSuperseded)
			require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.supersessions))
			require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonSuperseded))))
		})
	}
}

func TestSupersedingOnlineSetsPreviousID(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, pod("p"))
	b := h.register(t, pod("p"))
	require.Equal(t, a.ID, b.PreviousID)
	got, _ := h.r.Get(b.ID)
	require.Equal(t, a.ID, got.PreviousID)
}

func TestCapacityEvictsOfflineFirst(t *testing.T) {
	h := newHarness(t, 4)
	// Seen in this order: unconnected u (oldest), offline o1, offline o2,
	// online n (youngest, kept alive by heartbeats).
	u := h.register(t, pod("u"))
	h.clock.Advance(time.Second)
	o1 := h.register(t, pod("o1"))
	h.clock.Advance(time.Second)
	o2 := h.register(t, pod("o2"))
	h.clock.Advance(time.Second)
	n := h.register(t, pod("n"))
	require.True(t, h.r.Disconnect(o2.ID, ReasonDisconnected, ""))
	require.True(t, h.r.Disconnect(o1.ID, ReasonDisconnected, ""))
	h.clock.Advance(hbTimeout)
	_, err := h.r.Heartbeat(n.ID, pod("n"))
	require.NoError(t, err)
	h.r.Sweep()
	require.Equal(t, StatusCounts{Online: 1, Unconnected: 1, Offline: 2}, h.r.CountByStatus())

	status := func(id string) Status {
		got, ok := h.r.Get(id)
		if !ok {
			return ""
		}
		return got.Status
	}
	steps := []struct {
		newcomer string
		evicted  string // "" when the registration is refused
		want     StatusCounts
	}{
		{"a", o1.ID, StatusCounts{Online: 2, Unconnected: 1, Offline: 1}}, // oldest offline, though u is older
		{"b", o2.ID, StatusCounts{Online: 3, Unconnected: 1}},             // the other offline one
		{"c", u.ID, StatusCounts{Online: 4}},                              // then the unconnected one
		{"d", "", StatusCounts{Online: 4}},                                // never an online one
	}
	for _, st := range steps {
		_, err := h.r.Register(pod(st.newcomer))
		if st.evicted == "" {
			require.ErrorIs(t, err, ErrTooManyAgents, st.newcomer)
		} else {
			require.NoError(t, err, st.newcomer)
			require.Empty(t, status(st.evicted), "%s evicts %s", st.newcomer, st.evicted)
			reason, ok := h.r.Forgotten(st.evicted)
			require.True(t, ok)
			require.Equal(t, ReasonEvicted, reason)
		}
		require.Equal(t, st.want, h.r.CountByStatus(), st.newcomer)
	}
	require.Equal(t, StatusOnline, status(n.ID))
	require.Equal(t, 3.0, testutil.ToFloat64(h.r.metrics.removals.WithLabelValues(string(ReasonEvicted))))
	require.Equal(t, 1.0, testutil.ToFloat64(h.r.metrics.rejected))
}

// mixedFleet registers liaison-0 (stays online), data-0 (goes unconnected)
// and data-1 and meta-0 (go offline), all with one primary address.
func mixedFleet(t *testing.T, h *harness) map[string]Agent {
	t.Helper()
	at := Address{IP: "10.0.0.9", Port: 17912}
	out := map[string]Agent{}
	for _, id := range []Identity{
		{RoleName: "ROLE_LIAISON", PodName: "liaison-0", Primary: at},
		{RoleName: "ROLE_DATA", PodName: "data-0", Labels: map[string]string{"type": "hot"}, Primary: at},
		{RoleName: "ROLE_DATA", PodName: "data-1", Labels: map[string]string{"type": "hot"}, Primary: at},
		{RoleName: "ROLE_META", PodName: "meta-0", Primary: at},
	} {
		out[id.PodName] = h.register(t, id)
	}
	require.True(t, h.r.Disconnect(out["data-1"].ID, ReasonDisconnected, "stream ended: Unavailable"))
	require.True(t, h.r.Disconnect(out["meta-0"].ID, ReasonDisconnected, "stream ended: Canceled"))
	h.clock.Advance(hbTimeout + 1)
	_, err := h.r.Heartbeat(out["liaison-0"].ID, Identity{RoleName: "ROLE_LIAISON"})
	require.NoError(t, err)
	h.r.Sweep()
	return out
}

func TestListByStatus(t *testing.T) {
	h := newHarness(t, 10)
	mixedFleet(t, h)
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"default lists offline entries too", Filter{}, []string{"data-0", "data-1", "liaison-0", "meta-0"}},
		{"online", Filter{Status: StatusOnline}, []string{"liaison-0"}},
		{"unconnected", Filter{Status: StatusUnconnected}, []string{"data-0"}},
		{"offline", Filter{Status: StatusOffline}, []string{"data-1", "meta-0"}},
		{"exclude offline", Filter{ExcludeOffline: true}, []string{"data-0", "liaison-0"}},
		{"offline data nodes", Filter{Status: StatusOffline, Role: roles.Role{Kind: roles.KindData}, HasRole: true}, []string{"data-1"}},
		{"contradiction", Filter{Status: StatusOffline, ExcludeOffline: true}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range h.r.List(tc.f) {
				got = append(got, a.PodName)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestByIdentityRanksOfflineLast(t *testing.T) {
	h := newHarness(t, 10)
	fl := mixedFleet(t, h)
	var got []string
	for _, a := range h.r.ByIdentity("10.0.0.9", 17912, roles.Role{Kind: roles.KindData}, nil) {
		got = append(got, a.ID)
	}
	require.Equal(t, []string{fl["data-0"].ID, fl["data-1"].ID}, got)
	h.register(t, Identity{RoleName: "ROLE_DATA", PodName: "data-2", Primary: Address{IP: "10.0.0.9", Port: 17912}})
	all := h.r.ByIdentity("10.0.0.9", 17912, roles.Role{Kind: roles.KindData}, nil)
	require.Equal(t, []Status{StatusOnline, StatusUnconnected, StatusOffline}, []Status{all[0].Status, all[1].Status, all[2].Status})
}

func TestMetricsByStatusAndRole(t *testing.T) {
	h := newHarness(t, 10)
	want := `
# HELP fodc_proxy_agents Agents in the registry, by status (online, unconnected or offline) and role (such as liaison or datanode-hot).
# TYPE fodc_proxy_agents gauge
`
	require.NoError(t, testutil.GatherAndCompare(h.prom, strings.NewReader(""), "fodc_proxy_agents"), "no series without agents")

	fl := mixedFleet(t, h)
	h.register(t, Identity{RoleName: "ROLE_DATA", PodName: "data-2", Labels: map[string]string{"type": "hot"}})
	require.NoError(t, testutil.GatherAndCompare(h.prom, strings.NewReader(want+`
fodc_proxy_agents{role="datanode-hot",status="offline"} 1
fodc_proxy_agents{role="datanode-hot",status="online"} 1
fodc_proxy_agents{role="datanode-hot",status="unconnected"} 1
fodc_proxy_agents{role="liaison",status="offline"} 0
fodc_proxy_agents{role="liaison",status="online"} 1
fodc_proxy_agents{role="liaison",status="unconnected"} 0
fodc_proxy_agents{role="meta",status="offline"} 1
fodc_proxy_agents{role="meta",status="online"} 0
fodc_proxy_agents{role="meta",status="unconnected"} 0
`), "fodc_proxy_agents"))

	// Read at scrape time: the offline meta node leaves, the liaison goes offline.
	require.True(t, h.r.Unregister(fl["meta-0"].ID, ReasonUnregistered))
	require.True(t, h.r.Disconnect(fl["liaison-0"].ID, ReasonDisconnected, ""))
	require.NoError(t, testutil.GatherAndCompare(h.prom, strings.NewReader(want+`
fodc_proxy_agents{role="datanode-hot",status="offline"} 1
fodc_proxy_agents{role="datanode-hot",status="online"} 1
fodc_proxy_agents{role="datanode-hot",status="unconnected"} 1
fodc_proxy_agents{role="liaison",status="offline"} 1
fodc_proxy_agents{role="liaison",status="online"} 0
fodc_proxy_agents{role="liaison",status="unconnected"} 0
`), "fodc_proxy_agents"))
}
