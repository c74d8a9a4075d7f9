package proxy_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/certs"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

// On-demand profiling and the configuration refresh change state on nodes
// or hand out profiles: a viewer may list profiles but neither start one,
// download one nor refresh the configuration; an operator may.
func TestProfilingNeedsOperator(t *testing.T) {
	p := newPKI(t)
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		return string(h)
	}
	webCfg := certs.Write(t, p.dir, "web.yml", []byte("tls_server_config:\n  cert_file: "+p.certFile+"\n  key_file: "+p.keyFile+
		"\nbasic_auth_users:\n  grafana: "+hash("view")+"\n  alice: "+hash("op")+"\n"))
	roles := certs.Write(t, p.dir, "roles.yml", []byte("users:\n  grafana: viewer\n  alice: operator\n"))
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.WebConfigFile, c.Security.WebRolesFile = webCfg, roles
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(), MinVersion: tls.VersionTLS12}}}
	t.Cleanup(client.CloseIdleConnections)
	do := func(user, pw, method, path string) int {
		req, err := http.NewRequest(method, "https://localhost:"+strings.Split(px.HTTPAddr(), ":")[1]+path, nil)
		require.NoError(t, err)
		req.SetBasicAuth(user, pw)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		return resp.StatusCode
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
