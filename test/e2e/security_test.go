package e2e

// End-to-end tests of the security options (docs/security.md): a real
// Prometheus scraping over HTTPS with basic auth, upstream recordings on
// the plaintext listener beside an mTLS one, secrets in a forged
// configuration report, and our agent binary's TLS and token flags.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agentsim"
	"github.com/fodc-go/fodc/internal/demo/synth"
	"github.com/fodc-go/fodc/internal/fixture"
	"github.com/fodc-go/fodc/internal/protocol"
	"github.com/fodc-go/fodc/internal/proxy"
	"github.com/fodc-go/fodc/internal/proxy/registry"
	"github.com/fodc-go/fodc/internal/roles"
	"github.com/fodc-go/fodc/internal/testutil/certs"
)

// tlsFiles is a CA and a server certificate for localhost and 127.0.0.1,
// written to a temporary directory.
type tlsFiles struct {
	dir               string
	ca                *certs.CA
	caFile            string
	certFile, keyFile string
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca := certs.NewCA(t, "fodc-e2e-ca")
	cf, kf := certs.WriteLeaf(t, dir, "server", ca.Server(t))
	return tlsFiles{dir: dir, ca: ca, caFile: certs.Write(t, dir, "ca.crt", ca.PEM), certFile: cf, keyFile: kf}
}

// requireMTLS makes the proxy's main agent listener require client
// certificates of f's CA.
func (f tlsFiles) requireMTLS(c *proxy.Config) {
	c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile, c.Security.GRPCClientCAFile = f.certFile, f.keyFile, f.caFile
}

// A real Prometheus scrapes the proxy over HTTPS with basic auth from a
// web configuration file: the job with the right password is up and gets
// an agent's series; the jobs with a wrong password or plain HTTP are down.
func TestRealPrometheusScrapesOverHTTPSWithBasicAuth(t *testing.T) {
	slow(t)
	bin := requireTool(t, "prometheus")
	f := newTLSFiles(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-pass"), bcrypt.MinCost)
	require.NoError(t, err)
	webCfg := certs.Write(t, f.dir, "web.yml", []byte(fmt.Sprintf(
		"tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", f.certFile, f.keyFile, hash)))
	p, _ := startProxy(t, func(c *proxy.Config) { c.Security.WebConfigFile = webCfg })
	connect(t, p, agentsim.Config{Register: dataNode("tls-data-0", "hot")})

	job := func(name, scheme, password string) string {
		return fmt.Sprintf(`  - job_name: %s
    scheme: %s
    basic_auth: {username: prometheus, password: %s}
    tls_config: {ca_file: %s}
    static_configs:
      - targets: ['%s']
`, name, scheme, password, f.caFile, p.HTTPAddr())
	}
	pp := runPrometheus(t, bin, job("fodc", "https", "scrape-pass")+job("fodc-wrong-password", "https", "not-the-pass")+job("fodc-plain", "http", "scrape-pass"))
	base := pp.base

	upOf := func(job string) string {
		res := promQuery(base, `up{job="`+job+`"}`)
		if len(res) != 1 {
			return ""
		}
		v, _ := res[0].Value[1].(string)
		return v
	}
	pp.waitFor(t, func() bool {
		return upOf("fodc") == "1" && upOf("fodc-wrong-password") != "" && upOf("fodc-plain") != ""
	}, "prometheus never scraped every job")
	require.Equal(t, "0", upOf("fodc-wrong-password"))
	require.Equal(t, "0", upOf("fodc-plain"))

	var res []promResult
	require.Eventually(t, func() bool {
		res = promQuery(base, `banyandb_system_cpu_num{pod_name="tls-data-0"}`)
		return len(res) == 1
	}, wait, 200*time.Millisecond)
	require.Equal(t, "fodc", res[0].Metric["job"])
	require.Equal(t, "ROLE_DATA", res[0].Metric["node_role"])
	require.NotEmpty(t, promQuery(base, `{job=~"fodc.*", __name__!~"up|scrape_.*"}`), "the selector below is valid and matches the good job")
	require.Empty(t, promQuery(base, `{job=~"fodc-.+", __name__!~"up|scrape_.*"}`), "nothing came through the refused jobs")

	// The targets API names why the refused jobs are down.
	r := get(t, base+"/api/v1/targets?state=active")
	require.Equal(t, http.StatusOK, r.code)
	var targets struct {
		Data struct {
			ActiveTargets []struct {
				ScrapePool string `json:"scrapePool"`
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &targets))
	for _, tg := range targets.Data.ActiveTargets {
		t.Logf("job %s: %s %s", tg.ScrapePool, tg.Health, tg.LastError)
		if tg.ScrapePool == "fodc-wrong-password" {
			require.Contains(t, tg.LastError, "401")
		}
	}
}

// Every upstream recording, replayed over the plaintext listener while the
// main listener requires mTLS, registers and its metrics appear in
// /metrics; the same recording against the main listener is refused.
func TestUpstreamRecordingsOnPlaintextListenerBesideMTLS(t *testing.T) {
	names, err := fixture.Names()
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			f := newTLSFiles(t)
			p, _ := startProxy(t, func(c *proxy.Config) {
				f.requireMTLS(c)
				c.Security.GRPCInsecureListenAddr = "127.0.0.1:0"
			})
			require.NotEmpty(t, p.InsecureGRPCAddr())
			rec, err := fixture.Load(name)
			require.NoError(t, err)
			cfg, err := agentsim.FromRecording(rec)
			require.NoError(t, err)
			pod := cfg.Register.GetPodName()
			require.NotEmpty(t, pod)

			// Refused on the main listener: no registration, and the
			// proxy knows no agent.
			refused := cfg
			refused.ProxyAddr = p.GRPCAddr()
			refused.NoReconnect = true
			a, err := agentsim.New(refused)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			err = a.Run(ctx)
			cancel()
			require.Error(t, err, "a plaintext upstream agent got through the mTLS listener")
			t.Logf("refused on the mTLS listener: %v", err)
			require.Empty(t, a.AgentID())
			require.Empty(t, p.Registry.List(registry.Filter{}))

			// Accepted on the plaintext listener.
			cfg.ProxyAddr = p.InsecureGRPCAddr()
			ag := startAgent(t, cfg)
			require.Eventually(t, func() bool {
				id := ag.AgentID()
				if id == "" {
					return false
				}
				for _, kind := range ag.Streams() {
					if !p.Streams.Has(id, kind) {
						return false
					}
				}
				return true
			}, wait, time.Millisecond)

			want := "banyandb_system_cpu_num"
			if cfg.Metrics != nil {
				reply := cfg.Metrics(&fodcv1.StreamMetricsResponse{})
				require.NotEmpty(t, reply.GetMetrics(), "recorded metrics reply")
				want = reply.GetMetrics()[0].GetName()
			}
			r := get(t, "http://"+p.HTTPAddr()+"/metrics")
			require.Equal(t, http.StatusOK, r.code)
			_, up := agentUp(r.body, pod)
			require.Equal(t, "1", up, r.body)
			series := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `(_total)?\{[^}]*pod_name="` + regexp.QuoteMeta(pod) + `"`)
			require.Regexp(t, series, r.body)
		})
	}
}

// A forged agent's configuration report full of secrets: neither
// /cluster/config nor /cluster/config/consistency serves any of them, and
// both show the redaction marker in their place.
func TestForgedConfigSecretsAreNeverServed(t *testing.T) {
	p, _ := startProxy(t, nil)
	const (
		password = "hunter2"
		token    = "abc-7Qz"
		envValue = "env-s3cr3t-Vy9"
	)
	forge := func(pod, host string) *fodcv1.ExtNodeConfigRequest {
		return &fodcv1.ExtNodeConfigRequest{
			CollectedAt: timestamppb.Now(),
			StartupParams: map[string]*fodcv1.ExtParamValues{
				"etcd-password": {Values: []string{password}},
				"auth-token":    {Values: []string{token}},
				"etcd-endpoint": {Values: []string{"http://user:pw@" + host + "/"}},
				"stream-root":   {Values: []string{"/data"}},
			},
			RuntimeConfig: map[string]string{"program": "/banyand", "etcdPassword": password},
			Environment:   map[string]string{"BYDB_SECRET_KEY": envValue, "BYDB_ETCD_URL": "http://user:pw@" + host + ":2379"},
			AgentParams:   map[string]*fodcv1.ExtParamValues{"proxy-token": {Values: []string{token}}},
			Args:          []string{"data", "--etcd-password", password, "--auth-token=" + token, "--etcd-endpoint=http://user:pw@" + host + "/"},
			Source:        "pprof:http://user:pw@" + host + "/debug/pprof/cmdline",
			Errors:        []string{"reading http://user:pw@" + host + "/ failed; --auth-token=" + token},
		}
	}
	// Two nodes of one role and tier whose endpoints differ, so that the
	// consistency report lists the (redacted) values.
	forgedAgent(t, p, "forged-hot-0", forge("forged-hot-0", "etcd-a"))
	forgedAgent(t, p, "forged-hot-1", forge("forged-hot-1", "etcd-b"))

	base := "http://" + p.HTTPAddr()
	for _, path := range []string{"/cluster/config", "/cluster/config/consistency"} {
		r := get(t, base+path)
		require.Equal(t, http.StatusOK, r.code, r.body)
		for _, secret := range []string{password, token, "pw@", envValue} {
			require.NotContains(t, r.body, secret, "%s serves a secret:\n%s", path, r.body)
		}
		// Not even the token's first letters, outside the random agent ids.
		require.NotContains(t, uuid.ReplaceAllString(r.body, ""), "abc", "%s serves part of the token:\n%s", path, r.body)
		require.Contains(t, r.body, "<redacted>", "%s shows no redaction marker:\n%s", path, r.body)
	}
	var all configJSON
	r := get(t, base+"/cluster/config")
	require.NoError(t, json.Unmarshal([]byte(r.body), &all), r.body)
	require.Len(t, all.Configurations, 2)
	for _, c := range all.Configurations {
		require.True(t, c.Supported, c.PodName)
		require.Equal(t, "<redacted>", c.StartupParams["etcd-password"], c.PodName)
		require.Equal(t, "<redacted>", c.StartupParams["auth-token"], c.PodName)
		require.Equal(t, "/data", c.StartupParams["stream-root"], "other values are kept")
	}
}

var uuid = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// forgedAgent registers pod from a hand-made gRPC client and answers every
// configuration command with report, until the test ends; it returns once
// the proxy holds the configuration stream.
func forgedAgent(t *testing.T, p *proxy.Proxy, pod string, report *fodcv1.ExtNodeConfigRequest) {
	t.Helper()
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	client := fodcv1.NewFODCServiceClient(conn)
	reg, err := client.RegisterAgent(ctx)
	require.NoError(t, err)
	require.NoError(t, reg.Send(&fodcv1.RegisterAgentRequest{NodeRole: "ROLE_DATA", PodName: pod, Labels: map[string]string{"type": "hot"}}))
	resp, err := reg.Recv()
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), resp.GetMessage())
	id := resp.GetAgentId()

	st, err := client.ExtStreamNodeConfig(metadata.AppendToOutgoingContext(ctx, protocol.MetadataAgentID, id))
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			cmd, err := st.Recv()
			if err != nil {
				return
			}
			if !cmd.GetRequestConfig() {
				continue
			}
			if err := st.Send(report); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Close()
	})
	require.Eventually(t, func() bool { return p.Streams.Has(id, protocol.KindNodeConfig) }, wait, time.Millisecond)
}

// startSecureAgent runs the fodc-agent binary for a hot data node whose
// metrics come from a synthetic endpoint, with extra (security) flags, and
// returns it with the address of its own HTTP server.
func startSecureAgent(t *testing.T, proxyAddr, pod string, extra ...string) (*agentProcess, string) {
	t.Helper()
	node := httptest.NewServer(synth.Handler([]synth.Node{{Pod: pod, Role: roles.Role{Kind: roles.KindData, Tier: "hot"}, Seed: 5}}, nil))
	t.Cleanup(node.Close)
	ap := startAgentProcess(t, append([]string{
		"--proxy-addr", proxyAddr, "--node-role", "datanode-hot", "--pod-name", pod,
		"--scrape-target", node.URL + synth.Path(pod), "--scrape-interval", "500ms", "--scrape-timeout", "500ms",
		"--reconnect-interval", "200ms", "--reconnect-max-interval", "1s", "--node-ip", "127.0.0.1",
	}, extra...)...)
	started := regexp.MustCompile(`"msg":"FODC agent started".*"http_addr":"([^"]+)"`)
	var addr string
	require.Eventually(t, func() bool {
		select {
		case <-ap.exited:
			return true
		default:
		}
		m := started.FindStringSubmatch(ap.stderr.String())
		if m == nil {
			return false
		}
		addr = m[1]
		return true
	}, wait, 10*time.Millisecond)
	require.NotEmpty(t, addr, "agent did not start: %v\n%s", ap.err, ap.stderr.String())
	return ap, addr
}

type agentHealthz struct {
	Uplink struct {
		Connected bool   `json:"connected"`
		AgentID   string `json:"agent_id"`
		LastError string `json:"last_error"`
	} `json:"uplink"`
}

func getAgentHealthz(t *testing.T, addr string) agentHealthz {
	t.Helper()
	r := get(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, r.code, r.body)
	var h agentHealthz
	require.NoError(t, json.Unmarshal([]byte(r.body), &h), r.body)
	return h
}

// scrapedFrom waits until the proxy's /metrics has pod's synthetic series
// and fodc_agent_up 1 for it.
func scrapedFrom(t *testing.T, p *proxy.Proxy, ap *agentProcess, pod string) {
	t.Helper()
	require.Eventually(t, func() bool {
		r := get(t, "http://"+p.HTTPAddr()+"/metrics")
		_, up := agentUp(r.body, pod)
		return up == "1" && regexp.MustCompile(`(?m)^banyandb_\w+\{[^}]*pod_name="`+regexp.QuoteMeta(pod)+`"`).MatchString(r.body)
	}, wait, 50*time.Millisecond, "agent log:\n%s", ap.stderr.String())
}

// Our agent binary with a client certificate naming its pod registers with
// a proxy that requires mTLS, and its series are scraped.
func TestAgentBinaryWithClientCertificate(t *testing.T) {
	slow(t)
	f := newTLSFiles(t)
	p, _ := startProxy(t, f.requireMTLS)
	cf, kf := certs.WriteLeaf(t, f.dir, "agent", f.ca.Client(t, "mtls-data-0"))
	ap, addr := startSecureAgent(t, p.GRPCAddr(), "mtls-data-0",
		"--proxy-tls", "--proxy-ca-file", f.caFile, "--proxy-cert-file", cf, "--proxy-key-file", kf)
	scrapedFrom(t, p, ap, "mtls-data-0")
	h := getAgentHealthz(t, addr)
	require.True(t, h.Uplink.Connected)
	ag, ok := p.Registry.Get(h.Uplink.AgentID)
	require.True(t, ok)
	require.Equal(t, "mtls-data-0", ag.PodName)
}

// Our agent binary with a token bound to its pod pattern registers with a
// proxy that requires tokens over TLS; with a wrong token it does not, and
// its /healthz says why.
func TestAgentBinaryWithToken(t *testing.T) {
	slow(t)
	f := newTLSFiles(t)
	tokens := certs.Write(t, f.dir, "tokens", []byte("tok-e2e-good tok-data-*\n"))
	p, _ := startProxy(t, func(c *proxy.Config) {
		c.Security.GRPCTLSCertFile, c.Security.GRPCTLSKeyFile = f.certFile, f.keyFile
		c.Security.AgentTokenFile = tokens
	})
	good := certs.Write(t, f.dir, "good-token", []byte("tok-e2e-good\n"))
	wrong := certs.Write(t, f.dir, "wrong-token", []byte("tok-e2e-wrong\n"))

	ap, addr := startSecureAgent(t, p.GRPCAddr(), "tok-data-0",
		"--proxy-tls", "--proxy-ca-file", f.caFile, "--proxy-token-file", good)
	scrapedFrom(t, p, ap, "tok-data-0")
	require.True(t, getAgentHealthz(t, addr).Uplink.Connected)

	bad, badAddr := startSecureAgent(t, p.GRPCAddr(), "tok-data-1",
		"--proxy-tls", "--proxy-ca-file", f.caFile, "--proxy-token-file", wrong)
	var h agentHealthz
	require.Eventually(t, func() bool {
		h = getAgentHealthz(t, badAddr)
		return strings.Contains(h.Uplink.LastError, "Unauthenticated")
	}, wait, 20*time.Millisecond, "agent log:\n%s", bad.stderr.String())
	require.False(t, h.Uplink.Connected)
	require.Empty(t, h.Uplink.AgentID)
	for _, a := range p.Registry.List(registry.Filter{}) {
		require.NotEqual(t, "tok-data-1", a.PodName)
	}
	require.NotContains(t, bad.stderr.String(), "tok-e2e-wrong", "the token is never logged")
}
