// Package discovery keeps the agent's identity: the one its flags give,
// completed by what the local BanyanDB node says about itself
// (NodeQueryService.GetCurrentNode). Explicit flags win over what it learns.
// A Source holds the identity; a Discoverer asks the node and updates it.
package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/fodc-go/fodc/internal/timeutil"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	"github.com/fodc-go/fodc/internal/agent/uplink"
	"github.com/fodc-go/fodc/internal/roles"
)

// Discovery timing, like the upstream agent's: before the first
// registration it polls GetCurrentNode for up to firstBudget, backing off
// from firstWait up to maxWait; every call may take up to callTimeout.
const (
	firstBudget = 25 * time.Second
	firstWait   = 100 * time.Millisecond
	maxWait     = 5 * time.Second
	callTimeout = 5 * time.Second
)

// Source holds the node's identity: the flags', completed by what
// discovery learns. Explicit flags win. It is safe for concurrent use.
type Source struct {
	base         uplink.Identity
	explicitRole bool

	resolvedOnce sync.Once
	resolved     chan struct{} // closed once the first discovery ended (or none is configured)

	mu  sync.RWMutex // guards cur
	cur uplink.Identity
}

// NewSource returns a Source of base, the identity the flags give;
// explicitRole says that the flags named the role. With discovering false
// the identity is resolved at once; else it is once a Discoverer of the
// source has made its first discovery.
func NewSource(base uplink.Identity, explicitRole, discovering bool) *Source {
	s := &Source{base: base, explicitRole: explicitRole, resolved: make(chan struct{}), cur: base}
	if !discovering {
		s.markResolved()
	}
	return s
}

// Get returns the current identity. It shares maps with the source; callers
// must not modify them.
func (s *Source) Get() uplink.Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

// Resolved is closed once the first discovery has ended, successful or
// not (at once without discovery): the identity is then worth registering.
func (s *Source) Resolved() <-chan struct{} { return s.resolved }

func (s *Source) markResolved() { s.resolvedOnce.Do(func() { close(s.resolved) }) }

// update merges a discovered node into the flags' identity.
func (s *Source) update(n *databasev1.Node) {
	id := Merge(s.base, s.explicitRole, n)
	s.mu.Lock()
	s.cur = id
	s.mu.Unlock()
}

// Merge completes base with what n says: the role (first liaison or
// data role, the tier from the node's type label) unless explicit, the
// node's labels under the flags', the primary address from grpc_address
// unless --node-ip was given, and the secondary addresses from the Node
// fields under the flags' names.
func Merge(base uplink.Identity, explicitRole bool, n *databasev1.Node) uplink.Identity {
	id := base
	if len(n.GetLabels()) > 0 {
		labels := maps.Clone(n.GetLabels())
		maps.Copy(labels, base.Labels)
		id.Labels = labels
	}
	if !explicitRole {
		for _, r := range n.GetRoles() {
			if r == databasev1.Role_ROLE_LIAISON || r == databasev1.Role_ROLE_DATA {
				if role, err := roles.FromRegistration(r.String(), id.Labels); err == nil {
					id.Role = role
				}
				break
			}
		}
	}
	if id.Primary.IsZero() {
		if a, err := uplink.ParseAddress(n.GetGrpcAddress()); err == nil {
			id.Primary = a
		}
	}
	sec := make(map[string]uplink.Address)
	for name, addr := range map[string]string{
		uplink.AddressHTTP:         n.GetHttpAddress(),
		uplink.AddressGossip:       n.GetPropertyRepairGossipGrpcAddress(),
		uplink.AddressSchema:       n.GetPropertySchemaGrpcAddress(),
		uplink.AddressSchemaGossip: n.GetPropertySchemaGossipGrpcAddress(),
	} {
		if a, err := uplink.ParseAddress(addr); err == nil {
			sec[name] = a
		}
	}
	maps.Copy(sec, base.Secondary)
	if len(sec) > 0 {
		id.Secondary = sec
	}
	return id
}

// Discoverer polls the local node's GetCurrentNode and updates Source with
// the answers. Its fields are set before Run, which owns it.
type Discoverer struct {
	// Addr is the node's gRPC address (--node-grpc-addr).
	Addr string
	// Interval is the time between discoveries after the first.
	Interval time.Duration
	// Source receives what is discovered.
	Source *Source
	// Logger receives the failures (required).
	Logger *slog.Logger
	// DialOptions are added to insecure transport credentials (tests).
	DialOptions []grpc.DialOption
}

// Run discovers the node until ctx ends. The first discovery is retried
// with backoff for up to 25 s, like the upstream agent's; after it
// (successful or not) Source is resolved and the node is asked again every
// Interval.
func (d *Discoverer) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, d.DialOptions...)
	conn, err := grpc.NewClient(d.Addr, opts...)
	if err != nil {
		d.Source.markResolved()
		return fmt.Errorf("create client connection to --node-grpc-addr %s: %w", d.Addr, err)
	}
	defer func() { _ = conn.Close() }()
	client := databasev1.NewNodeQueryServiceClient(conn)

	deadline := time.Now().Add(firstBudget)
	wait := firstWait
	for {
		err := d.once(ctx, client)
		if err == nil {
			break
		}
		if time.Now().Add(wait).After(deadline) {
			d.Logger.Warn("Node discovery failed, registering with the flags' identity", "node_grpc_addr", d.Addr, "err", err)
			break
		}
		if !timeutil.Sleep(ctx, wait) {
			return nil
		}
		wait = min(2*wait, maxWait)
	}
	d.Source.markResolved()

	tick := time.NewTicker(d.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := d.once(ctx, client); err != nil {
				d.Logger.Debug("Node discovery failed", "node_grpc_addr", d.Addr, "err", err)
			}
		}
	}
}

func (d *Discoverer) once(ctx context.Context, client databasev1.NodeQueryServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := client.GetCurrentNode(ctx, &databasev1.GetCurrentNodeRequest{})
	if err != nil {
		return err
	}
	if resp.GetNode() == nil {
		return fmt.Errorf("node %s described no node", d.Addr)
	}
	d.Source.update(resp.GetNode())
	return nil
}
