package agent

// The agent's side of transport security and authentication towards the
// proxy: TLS (optionally with a client certificate, reloaded when its
// files change) and a bearer token. Without any of these flags the agent
// dials in plaintext, as upstream agents do, and works with upstream
// proxies.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fodc-go/fodc/internal/tlsutil"
)

// ProxySecurity holds the agent's security flags.
type ProxySecurity struct {
	TLS        bool
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string
	TokenFile  string
}

// RegisterFlags binds the flags to fs.
func (c *ProxySecurity) RegisterFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&c.TLS, "proxy-tls", c.TLS, "Connect to the proxy over TLS (implied by the other --proxy-*-file flags).")
	fs.StringVar(&c.CAFile, "proxy-ca-file", c.CAFile, "CA certificates that verify the proxy's certificate; the system pool without it.")
	fs.StringVar(&c.CertFile, "proxy-cert-file", c.CertFile, "Client certificate presented to the proxy (mTLS); its common name or a DNS SAN must be --pod-name. Read again when the file changes.")
	fs.StringVar(&c.KeyFile, "proxy-key-file", c.KeyFile, "Private key of --proxy-cert-file.")
	fs.StringVar(&c.ServerName, "proxy-server-name", c.ServerName, "Name the proxy's certificate must carry; the host of --proxy-addr when empty.")
	fs.StringVar(&c.TokenFile, "proxy-token-file", c.TokenFile, "File holding the bearer token sent to the proxy (first line); never logged.")
}

// enabled says whether TLS is used.
func (c *ProxySecurity) enabled() bool {
	return c.TLS || c.CAFile != "" || c.CertFile != "" || c.ServerName != ""
}

// validate reports every invalid setting.
func (c *ProxySecurity) validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("--proxy-cert-file and --proxy-key-file go together"))
	}
	return errors.Join(errs...)
}

// dialOptions returns the gRPC dial options the flags ask for; none
// without flags.
func (c *ProxySecurity) dialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if c.enabled() {
		r, err := tlsutil.NewReloader(tlsutil.Files{CertFile: c.CertFile, KeyFile: c.KeyFile, CAFile: c.CAFile})
		if err != nil {
			return nil, fmt.Errorf("proxy TLS: %w", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(r.ClientConfig(c.ServerName))))
	}
	if c.TokenFile != "" {
		data, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--proxy-token-file: %w", err)
		}
		tok, _, _ := strings.Cut(string(data), "\n")
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return nil, fmt.Errorf("--proxy-token-file %s is empty", c.TokenFile)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok, secure: c.enabled()}))
	}
	return opts, nil
}

// bearer sends "authorization: Bearer <token>" with every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so that a token can be used on a
// plaintext connection too (the agent warns at start-up).
func (b bearer) RequireTransportSecurity() bool { return false }
