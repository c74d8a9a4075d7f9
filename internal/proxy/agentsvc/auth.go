package agentsvc

// Who an agent is. Every stream is attributed to a principal before its
// handler runs (StreamInterceptor): the verified client certificate, a
// bearer token, or, for an unauthenticated agent, its transport connection.
// A registration must name a pod its principal may speak for, and every
// other stream must come from the principal that registered the agent id.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func peerOf(ctx context.Context) (*peer.Peer, bool) { return peer.FromContext(ctx) }

// Principal is the identity a stream was opened under.
type Principal struct {
	// Name identifies the principal: "cert:<common name>",
	// "token:<file>:<line>" or "peer:<ip:port>".
	Name string
	// Authenticated is true for a certificate or token principal.
	Authenticated bool
	// names are the pod names a certificate speaks for (its common name
	// and DNS SANs); pattern the pod-name glob a token is bound to.
	names   []string
	pattern string
}

// MayRegister reports whether the principal may register pod. A
// certificate speaks for the pods its common name or DNS SANs name, a bound
// token for the pods its pattern matches (path.Match syntax), an unbound
// token and an unauthenticated peer for any pod.
func (p Principal) MayRegister(pod string) bool {
	switch {
	case len(p.names) > 0:
		for _, n := range p.names {
			if strings.EqualFold(n, pod) {
				return true
			}
		}
		return false
	case p.pattern != "":
		ok, err := path.Match(p.pattern, pod)
		return err == nil && ok
	}
	return true
}

// Bound says what the principal's pod names are, for refusals.
func (p Principal) Bound() string {
	if len(p.names) > 0 {
		return "certificate names " + strings.Join(p.names, ", ")
	}
	return "token bound to " + p.pattern
}

type principalKey struct{}

// principalOf returns the principal the interceptor attached to ctx or,
// for a service served without it (tests), the peer's connection.
func principalOf(ctx context.Context) Principal {
	if p, ok := ctx.Value(principalKey{}).(Principal); ok {
		return p
	}
	return Principal{Name: "peer:" + peerAddr(ctx)}
}

// token is one line of a token file.
type token struct {
	sum     [sha256.Size]byte // of the secret; compared in constant time
	name    string            // "token:<file>:<line>", never the secret
	pattern string            // pod-name glob, "" when unbound
}

// Tokens are the bearer tokens agents may authenticate with.
type Tokens struct{ list []token }

// LoadTokens reads a token file: one token per line, optionally followed
// by whitespace and a pod-name pattern (path.Match syntax, e.g. data-hot-*)
// the token is bound to. Blank lines and lines starting with # are
// skipped. The error never contains a token.
func LoadTokens(file string) (*Tokens, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("agent token file: %w", err)
	}
	t := &Tokens{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) > 2 {
			return nil, fmt.Errorf("agent token file %s line %d: want a token and at most one pod-name pattern", file, n)
		}
		tk := token{sum: sha256.Sum256([]byte(fields[0])), name: fmt.Sprintf("token:%s:%d", path.Base(file), n)}
		if len(fields) == 2 {
			if _, err := path.Match(fields[1], ""); err != nil {
				return nil, fmt.Errorf("agent token file %s line %d: bad pod-name pattern: %w", file, n, err)
			}
			tk.pattern = fields[1]
		}
		t.list = append(t.list, tk)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("agent token file %s: %w", file, err)
	}
	if len(t.list) == 0 {
		return nil, fmt.Errorf("agent token file %s holds no token", file)
	}
	return t, nil
}

// match returns the token equal to secret. Every token is compared, each in
// constant time, so the time taken says nothing about which one matched.
func (t *Tokens) match(secret string) (token, bool) {
	sum := sha256.Sum256([]byte(secret))
	var found token
	ok := 0
	for _, tk := range t.list {
		eq := subtle.ConstantTimeCompare(sum[:], tk.sum[:])
		if eq == 1 {
			found = tk
		}
		ok |= eq
	}
	return found, ok == 1
}

// AuthPolicy says how the streams of one listener are authenticated.
type AuthPolicy struct {
	// Tokens, when set, are accepted as "authorization: Bearer <token>".
	Tokens *Tokens
	// RequireAuth refuses, with Unauthenticated, streams that present
	// neither a verified client certificate nor a token.
	RequireAuth bool
}

// errBadToken is what a client with a wrong token is told.
var errBadToken = errors.New("invalid agent token")

// authenticatePeer finds the principal of a stream.
func (pol AuthPolicy) authenticatePeer(ctx context.Context) (Principal, error) {
	if p, ok := peerOf(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.PeerCertificates) > 0 {
			c := ti.State.PeerCertificates[0]
			names := make([]string, 0, 1+len(c.DNSNames))
			if c.Subject.CommonName != "" {
				names = append(names, c.Subject.CommonName)
			}
			names = append(names, c.DNSNames...)
			if len(names) == 0 {
				return Principal{}, status.Error(codes.PermissionDenied, "client certificate names no pod (no common name or DNS SAN)")
			}
			return Principal{Name: "cert:" + names[0], Authenticated: true, names: names}, nil
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) > 0 {
		secret, ok := strings.CutPrefix(auth[0], "Bearer ")
		if !ok || pol.Tokens == nil {
			return Principal{}, status.Error(codes.Unauthenticated, errBadToken.Error())
		}
		tk, ok := pol.Tokens.match(strings.TrimSpace(secret))
		if !ok {
			return Principal{}, status.Error(codes.Unauthenticated, errBadToken.Error())
		}
		return Principal{Name: tk.name, Authenticated: true, pattern: tk.pattern}, nil
	}
	if pol.RequireAuth {
		return Principal{}, status.Error(codes.Unauthenticated, "this listener accepts only agents with a client certificate or a token")
	}
	return Principal{Name: "peer:" + peerAddr(ctx)}, nil
}

// StreamInterceptor attributes every stream of a listener to a principal
// under pol, refusing (and counting) streams that fail authentication.
func (s *Service) StreamInterceptor(pol AuthPolicy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p, err := pol.authenticatePeer(ss.Context())
		if err != nil {
			s.metrics.authFailures.WithLabelValues(status.Code(err).String()).Inc()
			s.logger.Warn("Agent stream refused", "method", info.FullMethod, "peer", peerAddr(ss.Context()), "err", err)
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), principalKey{}, p)})
	}
}

// principalStream is a stream whose context carries its principal.
type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }
