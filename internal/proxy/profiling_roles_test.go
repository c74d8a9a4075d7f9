package proxy_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// On-demand profiling and the configuration refresh change state on nodes
// or hand out profiles: a viewer may list profiles but neither start one,
// download one nor refresh the configuration; an operator may.
func TestProfilingNeedsOperator(t *testing.T) {
	_, send := rolesProxy(t)
	do := func(user, pw, method, path string) int {
		code, _ := send(user, pw, method, path)
		return code
	}
	for _, c := range []struct {
		user, pw, method, path string
		want                   int
	}{
		{"grafana", "view", http.MethodGet, "/profiling", http.StatusOK},
		{"grafana", "view", http.MethodPost, "/profiling?type=heap", http.StatusForbidden},
		{"grafana", "view", http.MethodGet, "/profiling/some-id", http.StatusForbidden},
		{"grafana", "view", http.MethodPost, "/cluster/config/refresh", http.StatusForbidden},
		{"alice", "op", http.MethodPost, "/profiling?type=heap", http.StatusNotFound}, // no agent
		{"alice", "op", http.MethodGet, "/profiling/some-id", http.StatusNotFound},
		{"alice", "op", http.MethodPost, "/cluster/config/refresh", http.StatusOK},
	} {
		require.Equal(t, c.want, do(c.user, c.pw, c.method, c.path), "%s %s %s", c.user, c.method, c.path)
	}
}
