package registry

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func as(id Identity, principal string, authenticated bool) Identity {
	id.Principal, id.Authenticated = principal, authenticated
	return id
}

// A live entry is replaced only by its own principal; another principal's
// registration of the same pod is refused and counted while the entry
// heartbeats, whatever its containers overlap.
func TestForeignPrincipalRefusedWhileLive(t *testing.T) {
	h := newHarness(t, 10)
	real := h.register(t, as(pod("real-data-0"), "cert:real-data-0", true))
	for _, forged := range []Identity{
		as(pod("real-data-0"), "peer:10.0.0.9:4000", false),
		as(pod("REAL-DATA-0", "other"), "peer:10.0.0.9:4001", false),
		as(pod("real-data-0"), "token:line 2", true),
	} {
		_, err := h.r.Register(forged)
		require.ErrorIs(t, err, ErrForeignPrincipal)
	}
	got, ok := h.r.Get(real.ID)
	require.True(t, ok)
	require.Equal(t, StatusOnline, got.Status)
	require.Equal(t, "cert:real-data-0", got.Principal)

	// The same principal supersedes, from any connection.
	again := h.register(t, as(pod("real-data-0"), "cert:real-data-0", true))
	require.Equal(t, real.ID, again.PreviousID)
}

// Without authentication an entry can be replaced by a new connection once
// it missed its heartbeats or its registration stream ended.
func TestUnauthenticatedReplacedWhenNotLive(t *testing.T) {
	h := newHarness(t, 10)
	old := h.register(t, as(pod("p"), "peer:10.0.0.1:1000", false))
	_, err := h.r.Register(as(pod("p"), "peer:10.0.0.1:1001", false))
	require.ErrorIs(t, err, ErrForeignPrincipal)

	h.clock.Advance(hbTimeout + 1)
	h.r.Sweep()
	got, _ := h.r.Get(old.ID)
	require.Equal(t, StatusUnconnected, got.Status)
	n := h.register(t, as(pod("p"), "peer:10.0.0.1:1001", false))
	require.Equal(t, old.ID, n.PreviousID)

	// Offline: the stream ended.
	require.True(t, h.r.Disconnect(n.ID, ReasonDisconnected, "stream ended: Unavailable"))
	m := h.register(t, as(pod("p"), "peer:10.0.0.1:1002", false))
	require.Equal(t, n.ID, m.PreviousID)
}

// An authenticated entry that missed heartbeats is still protected: only
// the end of its stream frees the pod for another principal.
func TestAuthenticatedProtectedUntilOffline(t *testing.T) {
	h := newHarness(t, 10)
	a := h.register(t, as(pod("p"), "cert:p", true))
	h.clock.Advance(hbTimeout + 1)
	h.r.Sweep()
	_, err := h.r.Register(as(pod("p"), "peer:1.2.3.4:5", false))
	require.ErrorIs(t, err, ErrForeignPrincipal)
	require.True(t, h.r.Disconnect(a.ID, ReasonDisconnected, ""))
	h.register(t, as(pod("p"), "peer:1.2.3.4:5", false))
}

// Another principal's registration of the same pod with other containers
// stands beside a live entry only when the container sets are disjoint.
func TestSamePodDisjointContainers(t *testing.T) {
	h := newHarness(t, 10)
	h.register(t, as(pod("p", "a"), "peer:1:1", false))
	h.register(t, as(pod("p", "b"), "peer:1:2", false))
	_, err := h.r.Register(as(pod("p", "b", "c"), "peer:1:3", false))
	require.ErrorIs(t, err, ErrForeignPrincipal)
	_, err = h.r.Register(as(pod("p"), "peer:1:4", false))
	require.ErrorIs(t, err, ErrForeignPrincipal)
}
