package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/fodc-go/fodc/internal/roles"
)

func withStateFile(path string) func(*Options) {
	return func(o *Options) { o.StateFile = path }
}

// readDoc decodes the state file at path.
func readDoc(t *testing.T, path string) stateDoc {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc stateDoc
	require.NoError(t, json.Unmarshal(data, &doc))
	return doc
}

// docPods returns the pod names in the state file at path, in file order.
func docPods(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, a := range readDoc(t, path).Agents {
		out = append(out, a.PodName)
	}
	return out
}

// copyGolden copies testdata/name into a fresh directory and returns the
// copy's path.
func copyGolden(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "registry-state.json")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

func requireSameTime(t *testing.T, want, got time.Time) {
	t.Helper()
	require.True(t, want.Equal(got), "want %v, got %v", want, got)
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return ts
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h1 := newHarness(t, 10, withStateFile(path))
	fl := fleet(t, h1)
	h1.clock.Advance(20 * time.Second)
	_, err := h1.r.Heartbeat(fl["liaison-0"].ID, Identity{RoleName: "ROLE_LIAISON", Labels: map[string]string{"zone": "b"}})
	require.NoError(t, err)
	h1.clock.Advance(15 * time.Second)
	h1.r.Sweep() // all but liaison-0 go unconnected
	require.True(t, h1.r.Disconnect(fl["meta-0"].ID, ReasonDisconnected, "stream ended: Unavailable"))
	before := h1.r.List(Filter{})
	h1.r.Close()

	// The file records each node with its status just before the shutdown.
	doc := readDoc(t, path)
	require.Equal(t, stateVersion, doc.Version)
	require.Equal(t, h1.clock.Now(), doc.SavedAt)
	require.Len(t, doc.Agents, len(fl))
	byPod := map[string]stateAgent{}
	for _, a := range doc.Agents {
		byPod[a.PodName] = a
	}
	require.Equal(t, StatusOnline, byPod["liaison-0"].Status)
	require.Equal(t, StatusUnconnected, byPod["data-hot-0"].Status)
	require.Equal(t, StatusOffline, byPod["meta-0"].Status)
	require.Equal(t, "stream ended: Unavailable", byPod["meta-0"].DisconnectReason)
	require.Equal(t, "datanode-hot", byPod["data-hot-0"].Role)
	require.Equal(t, "liaison-0", doc.Agents[0].PodName, "online nodes first")

	// A new proxy lists the same nodes, offline since its restart.
	restart := h1.clock.Now().Add(time.Minute)
	h2 := newHarnessAt(t, restart, 10, withStateFile(path), func(o *Options) {
		var seq int
		o.NewID = func() string { seq++; return fmt.Sprintf("restarted-%d", seq) }
	})
	after := h2.r.List(Filter{})
	require.Len(t, after, len(before))
	for i, a := range after {
		b := before[i]
		require.Equal(t, b.ID, a.ID, "ids survive the restart")
		require.Equal(t, b.Identity, a.Identity)
		require.Equal(t, b.RegisteredAt, a.RegisteredAt)
		require.Equal(t, b.LastSeen, a.LastSeen)
		require.Equal(t, b.LastSeen, a.LastHeartbeat)
		require.Equal(t, StatusOffline, a.Status)
		require.Equal(t, "proxy restart", a.DisconnectReason)
		require.Equal(t, restart, a.DisconnectedAt)
		reason, ok := h2.r.Forgotten(a.ID)
		require.True(t, ok)
		require.Equal(t, ReasonRestart, reason)
		_, ok = h2.r.Removed(a.ID)
		require.False(t, ok, "loaded ids are not usable for streams")
		_, err := h2.r.Heartbeat(a.ID, Identity{})
		require.ErrorIs(t, err, ErrOffline)
		require.ErrorContains(t, err, "went offline (proxy restart)")
	}
	require.Equal(t, map[string]string{"zone": "b"}, after[4].Labels) // liaison-0's heartbeat labels
	require.Equal(t, StatusCounts{Offline: 6}, h2.r.CountByStatus())
	n, err := testutil.GatherAndCount(h2.prom, "fodc_proxy_agents")
	require.NoError(t, err)
	require.Equal(t, 3*5, n, "liaison, datanode, datanode-hot, datanode-warm and meta, three statuses each")

	// The node that comes back replaces its offline entry at once.
	back := h2.register(t, Identity{RoleName: "ROLE_DATA", PodName: "data-hot-0", Labels: map[string]string{"type": "hot"}, Primary: fl["data-hot-0"].Primary})
	require.Equal(t, fl["data-hot-0"].ID, back.PreviousID)
	require.Equal(t, StatusCounts{Online: 1, Offline: 5}, h2.r.CountByStatus())
	reason, _ := h2.r.Forgotten(fl["data-hot-0"].ID)
	require.Equal(t, ReasonSuperseded, reason)

	// The others are cleaned up CleanupTimeout after they were last seen,
	// and a later restart does not make them live longer.
	h2.r.Close()
	for _, a := range readDoc(t, path).Agents {
		if a.PodName != "data-hot-0" {
			require.Equal(t, StatusOffline, a.Status, a.PodName)
			require.Equal(t, "proxy restart", a.DisconnectReason, a.PodName)
		}
	}
	h3 := newHarnessAt(t, before[4].LastSeen.Add(cleanupTimeout+time.Nanosecond), 10, withStateFile(path))
	require.Equal(t, []string{"data-hot-0"}, podNames(h3.r.List(Filter{})))

	h4 := newHarnessAt(t, restart, 10, withStateFile(path))
	require.Len(t, h4.r.List(Filter{}), 6)
	h4.clock.Advance(cleanupTimeout)
	h4.r.Sweep()
	require.Equal(t, []string{"data-hot-0"}, podNames(h4.r.List(Filter{})))
	require.Equal(t, 5.0, testutil.ToFloat64(h4.r.metrics.removals.WithLabelValues(string(ReasonExpired))))
}

func podNames(agents []Agent) []string {
	var out []string
	for _, a := range agents {
		out = append(out, a.PodName)
	}
	return out
}

// TestStateLoadGolden loads a hand-written version 1 file, so that a format
// change that breaks existing files shows up.
func TestStateLoadGolden(t *testing.T) {
	path := copyGolden(t, "state-v1.json")
	h := newHarness(t, 10, withStateFile(path))
	got := h.r.List(Filter{})
	require.Len(t, got, 3)

	warm, data, liaison := got[0], got[1], got[2] // sorted by pod name: "" first
	require.Equal(t, "agent-1", warm.ID, "a node saved without an id gets a fresh one")
	require.Equal(t, Address{IP: "10.0.0.7", Port: 17912}, warm.Primary)
	require.Equal(t, roles.Role{Kind: roles.KindData, Tier: "warm"}, warm.Role)
	require.Equal(t, mustTime(t, "2025-06-01T11:56:00Z"), warm.LastSeen)

	require.Equal(t, "data-id", data.ID, "the freshest duplicate wins")
	require.Equal(t, "data-hot-0", data.PodName)
	require.Equal(t, []string{"data", "fodc-agent"}, data.ContainerNames)
	require.Equal(t, map[string]string{"type": "hot", "zone": "a"}, data.Labels)
	require.Equal(t, roles.Role{Kind: roles.KindData, Tier: "hot"}, data.Role)
	require.Equal(t, "ROLE_DATA", data.RoleName)
	require.Equal(t, mustTime(t, "2025-06-01T11:59:30.5Z"), data.LastSeen)
	require.Equal(t, mustTime(t, "2025-06-01T10:00:01Z"), data.RegisteredAt)

	require.Equal(t, "liaison-id", liaison.ID)
	require.Equal(t, map[string]Address{"gossip": {IP: "10.0.0.1", Port: 17932}}, liaison.Secondary)
	require.Equal(t, map[string]string{}, liaison.Labels)

	for _, a := range got {
		require.Equal(t, StatusOffline, a.Status)
		require.Equal(t, "proxy restart", a.DisconnectReason)
		require.Equal(t, harnessStart, a.DisconnectedAt)
	}
	_, ok := h.r.Get("meta-id")
	require.False(t, ok, "silent for longer than the cleanup timeout: skipped")

	var logged bool
	for _, rec := range h.logs.records(t) {
		if rec["msg"] == "Registry state loaded" {
			logged = true
			require.Equal(t, path, rec["file"])
			require.EqualValues(t, 3, rec["agents"])
			require.EqualValues(t, 1, rec["skipped_expired"])
			require.EqualValues(t, 1, rec["skipped_duplicates"])
			require.EqualValues(t, 0, rec["skipped_over_max_agents"])
		}
	}
	require.True(t, logged)
}

func TestStateLoadKeepsFreshestUpToMaxAgents(t *testing.T) {
	tests := []struct {
		maxAgents int
		want      []string // pod names, in List order
	}{
		{1, []string{"data-hot-0"}},
		{2, []string{"data-hot-0", "liaison-0"}},
		{3, []string{"", "data-hot-0", "liaison-0"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.maxAgents), func(t *testing.T) {
			h := newHarness(t, tc.maxAgents, withStateFile(copyGolden(t, "state-v1.json")))
			require.Equal(t, tc.want, podNames(h.r.List(Filter{})))
		})
	}
}

func TestStateLoadErrors(t *testing.T) {
	const okAgent = `{"pod_name":"p","role_name":"ROLE_DATA","last_seen":"2025-06-01T11:59:00Z"}`
	tests := []struct {
		name    string
		content string // written to the file unless setup is set
		setup   func(t *testing.T, path string)
		wantSub string
	}{
		{"truncated", `{"version":1,"agents":[` + okAgent, nil, "corrupt: unexpected end of JSON input"},
		{"not json", "hello", nil, "corrupt: invalid character"},
		{"empty", "", nil, "corrupt"},
		{"no version", `{"agents":[]}`, nil, "corrupt: no version field"},
		{"future version", `{"version":2,"agents":[]}`, nil, "unsupported version 2 (this proxy reads version 1)"},
		{"version 0", `{"version":0}`, nil, "unsupported version 0"},
		{"wrong shape", `{"version":1,"agents":{}}`, nil, "corrupt: json: cannot unmarshal"},
		{"trailing garbage", `{"version":1,"agents":[]} {}`, nil, "corrupt"},
		{"unknown role", `{"version":1,"agents":[` + okAgent + `,{"pod_name":"q","role_name":"ROLE_QUERY","last_seen":"2025-06-01T11:59:00Z"}]}`, nil,
			`agents[1]: role_name: unknown role "ROLE_QUERY"`},
		{"empty role", `{"version":1,"agents":[{"pod_name":"q","role_name":" ","last_seen":"2025-06-01T11:59:00Z"}]}`, nil, "agents[0]: role_name is empty"},
		{"no identity", `{"version":1,"agents":[{"role_name":"liaison","last_seen":"2025-06-01T11:59:00Z"}]}`, nil,
			"agents[0]: neither pod_name nor primary.ip is set"},
		{"no last_seen", `{"version":1,"agents":[{"pod_name":"q","role_name":"liaison"}]}`, nil, "agents[0]: last_seen is missing"},
		{"too large", "", func(t *testing.T, path string) {
			f, err := os.Create(path)
			require.NoError(t, err)
			require.NoError(t, f.Truncate(maxStateFileSize+1))
			require.NoError(t, f.Close())
		}, "file is 8388609 bytes, larger than the 8388608-byte limit"},
		{"directory", "", func(t *testing.T, path string) { require.NoError(t, os.Mkdir(path, 0o700)) }, "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if tc.setup != nil {
				tc.setup(t, path)
			} else {
				require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			}
			r, err := New(Options{HeartbeatTimeout: hbTimeout, CleanupTimeout: cleanupTimeout, MaxAgents: 10,
				Now: func() time.Time { return harnessStart }, StateFile: path}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			require.Error(t, err)
			require.Nil(t, r)
			require.ErrorContains(t, err, "registry state file "+path+": ")
			require.ErrorContains(t, err, tc.wantSub)
			require.ErrorContains(t, err, "fix or delete the file to start with an empty registry")
		})
	}
}

func TestStateMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h := newHarness(t, 10, withStateFile(path))
	require.Empty(t, h.r.List(Filter{}))
	_, err := os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing is written before a change")
	h.r.Close()
	doc := readDoc(t, path)
	require.Equal(t, 1, doc.Version)
	require.Empty(t, doc.Agents)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(data), `"agents":[]`)
}

func TestStateSaveFailureIsLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "state.json")
	h := newHarness(t, 10, withStateFile(path))
	h.register(t, pod("p"))
	err := h.r.saveState()
	require.ErrorContains(t, err, "registry state file "+path)
	require.True(t, h.r.unsaved(), "retried later")
	h.r.Close()
	var logged bool
	for _, rec := range h.logs.records(t) {
		if rec["msg"] == "Saving registry state failed" {
			logged = true
			require.Equal(t, "ERROR", rec["level"])
			require.Equal(t, path, rec["file"])
		}
	}
	require.True(t, logged)
}

func TestStateWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	h := newHarness(t, 10, withStateFile(path))
	h.register(t, pod("a"))
	require.NoError(t, h.r.saveState())
	require.Equal(t, []string{"a"}, docPods(t, path))
	require.False(t, h.r.unsaved())
	require.NoError(t, h.r.saveState(), "nothing to save")

	// The new content goes to a complete, synced temporary file next to the
	// old one, which stays intact until the rename.
	var renames int
	h.r.rename = func(oldpath, newpath string) error {
		renames++
		require.Equal(t, path, newpath)
		require.Equal(t, dir, filepath.Dir(oldpath))
		require.True(t, strings.HasPrefix(filepath.Base(oldpath), ".state.json.tmp-"), oldpath)
		require.Equal(t, []string{"a"}, docPods(t, newpath))
		require.Equal(t, []string{"a", "b"}, docPods(t, oldpath))
		return os.Rename(oldpath, newpath)
	}
	h.register(t, pod("b"))
	require.NoError(t, h.r.saveState())
	require.Equal(t, 1, renames)
	require.Equal(t, []string{"a", "b"}, docPods(t, path))
	requireOnlyFile(t, dir, "state.json")

	// A failed rename leaves the old file and no temporary file behind.
	h.r.rename = func(string, string) error { return errors.New("disk on fire") }
	h.register(t, pod("c"))
	err := h.r.saveState()
	require.ErrorContains(t, err, "disk on fire")
	require.ErrorContains(t, err, path)
	require.Equal(t, []string{"a", "b"}, docPods(t, path))
	requireOnlyFile(t, dir, "state.json")
	require.True(t, h.r.unsaved())

	h.r.rename = os.Rename
	require.NoError(t, h.r.saveState())
	require.Equal(t, []string{"a", "b", "c"}, docPods(t, path))
}

func requireOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	require.Equal(t, []string{name}, names)
}

func TestStateWriteIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h := newHarness(t, 10, withStateFile(path))
	h.register(t, pod("a"))
	require.NoError(t, h.r.saveState())
	huge := pod("huge")
	huge.Labels = map[string]string{"blob": strings.Repeat("x", maxStateFileSize)}
	h.register(t, huge)
	err := h.r.saveState()
	require.ErrorContains(t, err, "more than the 8388608-byte limit; not saved")
	require.Equal(t, []string{"a"}, docPods(t, path))
}

// TestStateCapsEntries checks that no more than MaxAgents entries are
// written, online ones first and then the most recently seen.
func TestStateCapsEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	h := newHarness(t, 3, withStateFile(path))
	h.register(t, pod("old"))
	h.clock.Advance(time.Second)
	off := h.register(t, pod("off"))
	h.clock.Advance(time.Second)
	h.register(t, pod("new"))
	require.True(t, h.r.Disconnect(off.ID, ReasonDisconnected, ""))
	h.r.maxAgents = 2 // the table cannot outgrow the cap, so lower it
	require.NoError(t, h.r.saveState())
	require.Equal(t, []string{"new", "old"}, docPods(t, path))
}

// TestRunSavesDebounced runs Run in synctest's fake time: saves follow
// changes by stateSaveDelay, coalesce bursts, pick up heartbeats after a
// sweep, and flush when Run stops.
func TestRunSavesDebounced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.json")
		r, err := New(Options{HeartbeatTimeout: hbTimeout, CleanupTimeout: cleanupTimeout, MaxAgents: 10, StateFile: path}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		noFile := func() {
			t.Helper()
			_, err := os.Stat(path)
			require.ErrorIs(t, err, os.ErrNotExist)
		}
		start := time.Now()

		a, err := r.Register(pod("a"))
		require.NoError(t, err)
		synctest.Wait()
		noFile()
		time.Sleep(stateSaveDelay / 2)
		_, err = r.Register(pod("b"))
		require.NoError(t, err)
		synctest.Wait()
		noFile()
		time.Sleep(stateSaveDelay/2 + time.Millisecond)
		synctest.Wait()
		require.Equal(t, []string{"b", "a"}, docPods(t, path), "one save for the burst, most recently seen first")
		requireSameTime(t, start.Add(stateSaveDelay), readDoc(t, path).SavedAt)

		_, err = r.Register(pod("c"))
		require.NoError(t, err)
		synctest.Wait()
		require.Len(t, docPods(t, path), 2)
		time.Sleep(stateSaveDelay)
		synctest.Wait()
		require.Len(t, docPods(t, path), 3)
		saved := readDoc(t, path).SavedAt

		// A heartbeat alone is saved after the next sweep (at hbTimeout/2).
		_, err = r.Heartbeat(a.ID, pod("a"))
		require.NoError(t, err)
		beat := time.Now()
		time.Sleep(time.Until(start.Add(hbTimeout / 2)))
		synctest.Wait()
		require.Equal(t, saved, readDoc(t, path).SavedAt)
		time.Sleep(stateSaveDelay + time.Millisecond)
		synctest.Wait()
		doc := readDoc(t, path)
		requireSameTime(t, start.Add(hbTimeout/2+stateSaveDelay), doc.SavedAt)
		var found bool
		for _, sa := range doc.Agents {
			if sa.PodName == "a" {
				found = true
				requireSameTime(t, beat, sa.LastSeen)
			}
		}
		require.True(t, found)

		// Without changes, a sweep (at 30s) writes nothing.
		saved = doc.SavedAt
		time.Sleep(time.Until(start.Add(hbTimeout + hbTimeout/4)))
		synctest.Wait()
		require.Equal(t, saved, readDoc(t, path).SavedAt)

		// The sweep at 45s marks every agent unconnected: saved.
		time.Sleep(time.Until(start.Add(3*hbTimeout/2 + stateSaveDelay + time.Millisecond)))
		synctest.Wait()
		doc = readDoc(t, path)
		requireSameTime(t, start.Add(3*hbTimeout/2+stateSaveDelay), doc.SavedAt)
		for _, sa := range doc.Agents {
			require.Equal(t, StatusUnconnected, sa.Status, sa.PodName)
		}

		// Stopping Run flushes what is pending.
		require.True(t, r.Disconnect(a.ID, ReasonDisconnected, "stream ended: Unavailable"))
		cancel()
		require.NoError(t, <-done)
		for _, sa := range readDoc(t, path).Agents {
			if sa.PodName == "a" {
				require.Equal(t, StatusOffline, sa.Status)
				require.Equal(t, "stream ended: Unavailable", sa.DisconnectReason)
			}
		}
	})
}
