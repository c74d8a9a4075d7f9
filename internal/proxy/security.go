package proxy

// Transport security and authentication of both listeners: TLS and mTLS
// for agents (certificates reloaded when their files change), bearer
// tokens, an optional plaintext listener for unmodified upstream agents,
// and the HTTP API's web configuration (exporter-toolkit format) with
// roles.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fodc-go/fodc/internal/proxy/agentsvc"
	"github.com/fodc-go/fodc/internal/proxy/httpapi"
	"github.com/fodc-go/fodc/internal/tlsutil"
)

// SecurityConfig holds the security flags of the proxy.
type SecurityConfig struct {
	GRPCTLSCertFile            string
	GRPCTLSKeyFile             string
	GRPCClientCAFile           string
	AgentTokenFile             string
	AllowUnauthenticatedAgents bool
	GRPCInsecureListenAddr     string
	WebConfigFile              string
	WebRolesFile               string
}

// RegisterFlags binds the security flags to fs.
func (c *SecurityConfig) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.GRPCTLSCertFile, "grpc-tls-cert-file", c.GRPCTLSCertFile, "Certificate (PEM chain) of the agent-facing gRPC server; with --grpc-tls-key-file it enables TLS. Read again when the file changes.")
	fs.StringVar(&c.GRPCTLSKeyFile, "grpc-tls-key-file", c.GRPCTLSKeyFile, "Private key of --grpc-tls-cert-file.")
	fs.StringVar(&c.GRPCClientCAFile, "grpc-client-ca-file", c.GRPCClientCAFile, "CA certificates that verify agents' client certificates (mTLS). An agent's pod name must then be its certificate's common name or a DNS SAN. Read again when the file changes.")
	fs.StringVar(&c.AgentTokenFile, "agent-token-file", c.AgentTokenFile, "File of bearer tokens agents may authenticate with: one token per line, optionally followed by a pod-name pattern (e.g. data-hot-*) the token is bound to.")
	fs.BoolVar(&c.AllowUnauthenticatedAgents, "allow-unauthenticated-agents", c.AllowUnauthenticatedAgents, "With --grpc-client-ca-file or --agent-token-file, still accept agents that present neither on --grpc-listen-addr (for unmodified upstream agents). Prefer --grpc-insecure-listen-addr.")
	fs.StringVar(&c.GRPCInsecureListenAddr, "grpc-insecure-listen-addr", c.GRPCInsecureListenAddr, "Extra plaintext, unauthenticated agent listener for unmodified upstream agents; empty disables it.")
	fs.StringVar(&c.WebConfigFile, "web.config.file", c.WebConfigFile, "Web configuration file of the HTTP API in the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users with bcrypt hashes, ...). Read again on every connection and request.")
	fs.StringVar(&c.WebRolesFile, "web.roles-file", c.WebRolesFile, "YAML file mapping the users of --web.config.file to roles (viewer, operator). Without it every authenticated user may do everything.")
}

// Validate reports every invalid security setting.
func (c *SecurityConfig) Validate() error {
	var errs []error
	if (c.GRPCTLSCertFile == "") != (c.GRPCTLSKeyFile == "") {
		errs = append(errs, errors.New("--grpc-tls-cert-file and --grpc-tls-key-file go together"))
	}
	if c.GRPCClientCAFile != "" && c.GRPCTLSCertFile == "" {
		errs = append(errs, errors.New("--grpc-client-ca-file needs --grpc-tls-cert-file and --grpc-tls-key-file: client certificates are verified during a TLS handshake"))
	}
	if c.AllowUnauthenticatedAgents && c.GRPCClientCAFile == "" && c.AgentTokenFile == "" {
		errs = append(errs, errors.New("--allow-unauthenticated-agents only has a meaning with --grpc-client-ca-file or --agent-token-file"))
	}
	if c.WebRolesFile != "" && c.WebConfigFile == "" {
		errs = append(errs, errors.New("--web.roles-file needs --web.config.file with basic_auth_users: roles are given to authenticated users"))
	}
	if c.WebConfigFile != "" {
		if err := web.Validate(c.WebConfigFile); err != nil {
			errs = append(errs, fmt.Errorf("--web.config.file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// authRequired says whether agents must authenticate on the main listener.
func (c *SecurityConfig) authRequired() bool {
	return (c.GRPCClientCAFile != "" || c.AgentTokenFile != "") && !c.AllowUnauthenticatedAgents
}

// agentSecurity is what New builds from a SecurityConfig.
type agentSecurity struct {
	mainOpts     []grpc.ServerOption // credentials and interceptor of the main listener
	insecureOpts []grpc.ServerOption // of the plaintext listener
	roles        *httpapi.Roles      // nil: no role checks
}

func buildAgentSecurity(c SecurityConfig, svc *agentsvc.Service, logger *slog.Logger) (*agentSecurity, error) {
	var tokens *agentsvc.Tokens
	if c.AgentTokenFile != "" {
		t, err := agentsvc.LoadTokens(c.AgentTokenFile)
		if err != nil {
			return nil, err
		}
		tokens = t
	}
	sec := &agentSecurity{}
	if c.GRPCTLSCertFile != "" {
		r, err := tlsutil.NewReloader(tlsutil.Files{CertFile: c.GRPCTLSCertFile, KeyFile: c.GRPCTLSKeyFile, CAFile: c.GRPCClientCAFile})
		if err != nil {
			return nil, fmt.Errorf("agent TLS: %w", err)
		}
		clientAuth := tls.VerifyClientCertIfGiven
		if c.GRPCClientCAFile != "" && tokens == nil && !c.AllowUnauthenticatedAgents {
			// Only certificates authenticate: refuse others in the
			// handshake.
			clientAuth = tls.RequireAndVerifyClientCert
		}
		sec.mainOpts = append(sec.mainOpts, grpc.Creds(credentials.NewTLS(r.ServerConfig(clientAuth))))
	}
	sec.mainOpts = append(sec.mainOpts, grpc.ChainStreamInterceptor(svc.StreamInterceptor(agentsvc.AuthPolicy{Tokens: tokens, RequireAuth: c.authRequired()})))
	sec.insecureOpts = append(sec.insecureOpts, grpc.ChainStreamInterceptor(svc.StreamInterceptor(agentsvc.AuthPolicy{Tokens: tokens})))

	switch {
	case c.GRPCClientCAFile == "" && c.AgentTokenFile == "":
		logger.Warn("AGENT PORT IS UNAUTHENTICATED: anyone who can reach --grpc-listen-addr can register as any pod and inject series into /metrics. Set --grpc-client-ca-file (mTLS) or --agent-token-file; see docs/security.md")
	case c.AllowUnauthenticatedAgents:
		logger.Warn("--allow-unauthenticated-agents: agents without a certificate or token are accepted on --grpc-listen-addr and may register as any pod that no authenticated agent holds")
	}
	if c.GRPCTLSCertFile == "" && c.AgentTokenFile != "" {
		logger.Warn("Agent tokens travel in plaintext: set --grpc-tls-cert-file and --grpc-tls-key-file")
	}
	if c.GRPCInsecureListenAddr != "" {
		logger.Warn("Plaintext agent listener enabled: agents on --grpc-insecure-listen-addr are unauthenticated", "addr", c.GRPCInsecureListenAddr)
	}
	if c.WebConfigFile == "" {
		logger.Warn("HTTP API is unauthenticated and unencrypted: set --web.config.file; see docs/security.md")
	}
	if c.WebRolesFile != "" {
		roles, err := httpapi.LoadRoles(c.WebRolesFile)
		if err != nil {
			return nil, err
		}
		sec.roles = roles
	}
	return sec, nil
}

// serveHTTP serves the API on l with the web configuration (TLS, basic
// auth) of exporter-toolkit; without a file it serves plain HTTP.
func serveHTTP(srv *http.Server, l net.Listener, webConfigFile string, logger *slog.Logger) error {
	flags := &web.FlagConfig{WebConfigFile: &webConfigFile, WebListenAddresses: &[]string{l.Addr().String()}}
	return web.Serve(l, srv, flags, logger)
}
