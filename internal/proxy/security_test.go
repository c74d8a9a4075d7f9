package proxy_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/testutil/certs"
	"github.com/fodc-go/fodc/internal/testutil/testproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pki is a proxy CA with a server certificate, written to dir.
type pki struct {
	dir                    string
	ca                     *certs.CA
	certFile, keyFile, ca_ string
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	ca := certs.NewCA(t, "fodc-test-ca")
	cf, kf := certs.WriteLeaf(t, dir, "server", ca.Server(t))
	return &pki{dir: dir, ca: ca, certFile: cf, keyFile: kf, ca_: certs.Write(t, dir, "ca.crt", ca.PEM)}
}

// agentConn dials the proxy's gRPC address with TLS (client certificate
// optional) or in plaintext when tlsCfg is nil, with an optional token.
func agentConn(t *testing.T, addr string, tlsCfg *tls.Config, token string) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerCreds(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerCreds) RequireTransportSecurity() bool { return false }

func clientTLS(t *testing.T, p *pki, leaf *certs.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if leaf != nil {
		c.Certificates = []tls.Certificate{leaf.TLS(t)}
	}
	return c
}

// register opens a registration stream for pod and returns the agent id,
// or the status error the proxy ended the stream with. The stream stays
// open (heartbeating is up to the caller) until the test ends.
func register(t *testing.T, conn *grpc.ClientConn, pod string, containers ...string) (string, fodcv1.FODCService_RegisterAgentClient, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := fodcv1.NewFODCServiceClient(conn).RegisterAgent(ctx)
	if err != nil {
		return "", nil, err
	}
	if err := st.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod, ContainerNames: containers}); err != nil {
		_, err = st.Recv()
		return "", nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return "", nil, err
	}
	if !resp.GetSuccess() {
		_, err = st.Recv()
		return "", nil, err
	}
	return resp.GetAgentId(), st, nil
}

func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.Code(err), "%v", err)
}

// serveMetrics opens the metrics stream of agentID on conn and answers
// every command with reply until the test ends.
// serveMetrics answers every metrics command of the agent with reply until
// the test ends, and returns once px holds the stream.
func serveMetrics(t *testing.T, px *proxy.Proxy, conn *grpc.ClientConn, agentID string, reply *fodcv1.StreamMetricsRequest) {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), protocol.MetadataAgentID, agentID))
	st, err := fodcv1.NewFODCServiceClient(conn).StreamMetrics(ctx)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
			if err := st.Send(reply); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return px.Streams.Has(agentID, protocol.KindMetrics) }, 10*time.Second, 5*time.Millisecond,
		"the proxy holds the metrics stream")
}

func getMetrics(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

func TestMTLSAgentRegistersAndIsScraped(t *testing.T) {
	p := newPKI(t)
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile, c.Security.GRPCClientCAFile = p.certFile, p.keyFile, p.ca_
	})
	leaf := p.ca.Client(t, "real-data-0")
	conn := agentConn(t, px.GRPCAddr(), clientTLS(t, p, &leaf), "")
	id, _, err := register(t, conn, "real-data-0")
	require.NoError(t, err)
	serveMetrics(t, px, conn, id, &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{
		{Name: "banyandb_write_total", Value: 7, Labels: map[string]string{"pod_name": "victim-pod"}},
		{Name: "fodc_agent_up", Value: 1, Labels: map[string]string{"agent_id": "forged", "pod_name": "victim-pod"}},
		{Name: "up", Value: 1},
		{Name: "fodc_proxy_agents", Value: 9, Labels: map[string]string{"status": "online", "role": "x"}},
	}})
	body := getMetrics(t, plainClient(t), "http://"+px.HTTPAddr()+"/metrics?pod_name=real-data-0")
	require.Contains(t, body, `banyandb_write_total{exported_pod_name="victim-pod",node_role="ROLE_DATA",pod_name="real-data-0"} 7`)
	require.NotContains(t, body, "forged")
	require.NotContains(t, body, "\nup{")
	require.NotContains(t, body, `role="x"`)
	all := getMetrics(t, plainClient(t), "http://"+px.HTTPAddr()+"/metrics")
	require.Contains(t, all, `fodc_proxy_samples_rejected_total{reason="reserved_name"} 6`) // three per collection, two collections
}

func TestMTLSRefusals(t *testing.T) {
	p := newPKI(t)
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile, c.Security.GRPCClientCAFile = p.certFile, p.keyFile, p.ca_
	})
	other := certs.NewCA(t, "other-ca")
	foreign := other.Client(t, "real-data-0")
	wrongPod := p.ca.Client(t, "some-other-pod")
	for _, tc := range []struct {
		name string
		leaf *certs.Leaf
		want codes.Code
	}{
		{"no certificate", nil, codes.Unavailable},
		{"certificate of another CA", &foreign, codes.Unavailable},
		{"certificate naming another pod", &wrongPod, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := agentConn(t, px.GRPCAddr(), clientTLS(t, p, tc.leaf), "")
			_, _, err := register(t, conn, "real-data-0")
			requireCode(t, tc.want, err)
		})
	}
	// A plaintext client gets nowhere either.
	_, _, err := register(t, agentConn(t, px.GRPCAddr(), nil, ""), "real-data-0")
	require.Error(t, err)
}

func TestTokenAuth(t *testing.T) {
	p := newPKI(t)
	tokens := certs.Write(t, p.dir, "tokens", []byte("# fleet tokens\nhot-secret data-hot-*\nany-secret\n"))
	px, reg := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile = p.certFile, p.keyFile
		c.Security.AgentTokenFile = tokens
	})
	dial := func(token string) *grpc.ClientConn { return agentConn(t, px.GRPCAddr(), clientTLS(t, p, nil), token) }

	_, _, err := register(t, dial("wrong"), "data-hot-0")
	requireCode(t, codes.Unauthenticated, err)
	_, _, err = register(t, dial(""), "data-hot-0")
	requireCode(t, codes.Unauthenticated, err)
	_, _, err = register(t, dial("hot-secret"), "data-warm-0")
	requireCode(t, codes.PermissionDenied, err)
	_, _, err = register(t, dial("hot-secret"), "data-hot-0")
	require.NoError(t, err)
	_, _, err = register(t, dial("any-secret"), "liaison-0")
	require.NoError(t, err)

	mfs, err := reg.Gather()
	require.NoError(t, err)
	var failures float64
	for _, mf := range mfs {
		if mf.GetName() == "fodc_proxy_agent_auth_failures_total" {
			for _, m := range mf.GetMetric() {
				failures += m.GetCounter().GetValue()
			}
		}
	}
	require.Equal(t, 2.0, failures)
}

// Re-registering the live agent's pod from another connection, as fast as
// it likes, never takes its place; every stream kind opened under its id
// from another connection is refused.
func TestNoSpeakingForAnotherAgent(t *testing.T) {
	px, _ := testproxy.Start(t, nil)
	real := agentConn(t, px.GRPCAddr(), nil, "")
	id, hb, err := register(t, real, "real-data-0")
	require.NoError(t, err)

	attacker := agentConn(t, px.GRPCAddr(), nil, "")
	for range 5 {
		_, _, err := register(t, attacker, "real-data-0")
		requireCode(t, codes.PermissionDenied, err)
		require.NoError(t, hb.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: "real-data-0"}))
	}
	// Shadowing with another container of the same pod is refused too.
	_, _, err = register(t, attacker, "real-data-0", "evil")
	requireCode(t, codes.PermissionDenied, err)
	a, ok := px.Registry.Get(id)
	require.True(t, ok)
	require.Equal(t, "online", string(a.Status))

	ctx := metadata.AppendToOutgoingContext(context.Background(), protocol.MetadataAgentID, id)
	c := fodcv1.NewFODCServiceClient(attacker)
	opens := map[string]func(context.Context) (grpc.ClientStream, error){
		"metrics":   func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamMetrics(ctx) },
		"topology":  func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamClusterTopology(ctx) },
		"lifecycle": func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamLifecycle(ctx) },
		"crash":     func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamCrashDiagnostics(ctx) },
		"pressure":  func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamPressureProfiles(ctx) },
		"schema":    func(ctx context.Context) (grpc.ClientStream, error) { return c.StreamSchemaRegistry(ctx) },
		"config":    func(ctx context.Context) (grpc.ClientStream, error) { return c.ExtStreamNodeConfig(ctx) },
	}
	for name, open := range opens {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			st, err := open(ctx)
			require.NoError(t, err)
			requireCode(t, codes.PermissionDenied, st.RecvMsg(new(fodcv1.StreamMetricsResponse)))
		})
	}
	// The real agent opens its own.
	serveMetrics(t, px, real, id, &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "m", Value: 1}}})
	require.Contains(t, getMetrics(t, plainClient(t), "http://"+px.HTTPAddr()+"/metrics?pod_name=real-data-0"), `m{node_role="ROLE_DATA",pod_name="real-data-0"} 1`)

	// Once the real agent's stream ends, a new connection registers.
	require.NoError(t, real.Close())
	require.Eventually(t, func() bool {
		_, _, err := register(t, agentConn(t, px.GRPCAddr(), nil, ""), "real-data-0")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
}

// Unmodified upstream agents use the plaintext listener next to an mTLS
// main listener.
func TestPlaintextListenerForUpstreamAgents(t *testing.T) {
	p := newPKI(t)
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile, c.Security.GRPCClientCAFile = p.certFile, p.keyFile, p.ca_
		c.Security.GRPCInsecureListenAddr = "127.0.0.1:0"
	})
	require.NotEmpty(t, px.InsecureGRPCAddr())
	conn := agentConn(t, px.InsecureGRPCAddr(), nil, "")
	id, _, err := register(t, conn, "upstream-0")
	require.NoError(t, err)
	serveMetrics(t, px, conn, id, &fodcv1.StreamMetricsRequest{Metrics: []*fodcv1.Metric{{Name: "m", Value: 2}}})
	require.Contains(t, getMetrics(t, plainClient(t), "http://"+px.HTTPAddr()+"/metrics?pod_name=upstream-0"), `pod_name="upstream-0"} 2`)
	// An mTLS agent's pod cannot be taken over from the plaintext side.
	leaf := p.ca.Client(t, "real-data-0")
	_, _, err = register(t, agentConn(t, px.GRPCAddr(), clientTLS(t, p, &leaf), ""), "real-data-0")
	require.NoError(t, err)
	_, _, err = register(t, agentConn(t, px.InsecureGRPCAddr(), nil, ""), "real-data-0")
	requireCode(t, codes.PermissionDenied, err)
}

// A rotated server certificate is used for the next handshake.
func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile = p.certFile, p.keyFile
	})
	serial := func() string {
		c, err := tls.Dial("tcp", px.GRPCAddr(), &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	require.Equal(t, before, serial())
	certs.WriteLeaf(t, p.dir, "server", p.ca.Server(t))
	after := serial()
	require.NotEqual(t, before, after)
}

// A rotated client CA is used for the next handshake: agents of the new
// CA get in, agents of the old one no longer.
func TestClientCARotation(t *testing.T) {
	p := newPKI(t)
	px, _ := testproxy.Start(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile, c.Security.GRPCClientCAFile = p.certFile, p.keyFile, p.ca_
	})
	oldLeaf := p.ca.Client(t, "a-0")
	_, _, err := register(t, agentConn(t, px.GRPCAddr(), clientTLS(t, p, &oldLeaf), ""), "a-0")
	require.NoError(t, err)

	next := certs.NewCA(t, "next-agent-ca")
	certs.Write(t, filepath.Dir(p.ca_), filepath.Base(p.ca_), next.PEM)
	newLeaf := next.Client(t, "b-0")
	_, _, err = register(t, agentConn(t, px.GRPCAddr(), clientTLS(t, p, &newLeaf), ""), "b-0")
	require.NoError(t, err)
	_, _, err = register(t, agentConn(t, px.GRPCAddr(), clientTLS(t, p, &oldLeaf), ""), "a-0")
	requireCode(t, codes.Unavailable, err)
}

// HTTPS and basic auth from a web configuration file; roles from the roles
// file: a viewer reads, but not operator endpoints.
func TestWebConfigAndRoles(t *testing.T) {
	px, send := rolesProxy(t)
	do := func(user, pw, path string) (int, string) { return send(user, pw, http.MethodGet, path) }
	code, _ := do("", "", "/health")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = do("grafana", "wrong", "/health")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = do("grafana", "view", "/health")
	require.Equal(t, http.StatusOK, code)
	code, body := do("grafana", "view", "/diagnostics")
	require.Equal(t, http.StatusForbidden, code)
	require.JSONEq(t, `{"status":"error","error":"user \"grafana\" has role viewer; GET /diagnostics needs operator"}`, body)
	code, _ = do("grafana", "view", "/pressure-profiles/p/1/heap")
	require.Equal(t, http.StatusForbidden, code)
	code, _ = do("alice", "op", "/diagnostics")
	require.Equal(t, http.StatusOK, code)
	// Plain HTTP is refused by the TLS listener.
	resp, err := plainClient(t).Get("http://" + px.HTTPAddr() + "/health")
	if err == nil {
		require.Equal(t, http.StatusBadRequest, resp.StatusCode) // Go's answer to HTTP on a TLS port
		require.NoError(t, resp.Body.Close())
	}
}

// rolesProxy starts a proxy serving HTTPS with basic auth for two users,
// grafana/view as viewer and alice/op as operator, and returns it with a
// function that sends one request (no credentials when user is empty) and
// answers the status code and the body.
func rolesProxy(t *testing.T) (*proxy.Proxy, func(user, pw, method, path string) (int, string)) {
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
	base := "https://localhost:" + strings.Split(px.HTTPAddr(), ":")[1]
	return px, func(user, pw, method, path string) (int, string) {
		req, err := http.NewRequest(method, base+path, nil)
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

func plainClient(t *testing.T) *http.Client {
	c := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}
