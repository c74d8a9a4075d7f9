package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	"github.com/fodc-go/fodc/internal/agent/uplink"
	"github.com/fodc-go/fodc/internal/roles"
)

// Discovery timing, like the upstream agent's: before the first
// registration it polls GetCurrentNode for up to discoveryBudget, backing
// off from discoveryFirstWait up to discoveryMaxWait.
const (
	discoveryBudget    = 25 * time.Second
	discoveryFirstWait = 100 * time.Millisecond
	discoveryMaxWait   = 5 * time.Second
	discoveryTimeout   = 5 * time.Second
)

// identitySource holds the node's identity: the flags, completed by what
// discovery learns. Explicit flags win. It is safe for concurrent use.
type identitySource struct {
	base         uplink.Identity
	explicitRole bool

	resolvedOnce sync.Once
	resolved     chan struct{} // closed once the first discovery ended (or none is configured)

	mu  sync.RWMutex // guards cur
	cur uplink.Identity
}

func newIdentitySource(cfg *Config) *identitySource {
	base := cfg.baseIdentity()
	s := &identitySource{base: base, explicitRole: cfg.NodeRole != "", resolved: make(chan struct{}), cur: base}
	if cfg.NodeGRPCAddr == "" {
		s.markResolved()
	}
	return s
}

// Get returns the current identity. It shares maps with the source; callers
// must not modify them.
func (s *identitySource) Get() uplink.Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

func (s *identitySource) markResolved() { s.resolvedOnce.Do(func() { close(s.resolved) }) }

// update merges a discovered node into the flags' identity.
func (s *identitySource) update(n *databasev1.Node) {
	id := mergeNode(s.base, s.explicitRole, n)
	s.mu.Lock()
	s.cur = id
	s.mu.Unlock()
}

// mergeNode completes base with what n says: the role (first liaison or
// data role, the tier from the node's type label) unless explicit, the
// node's labels under the flags', the primary address from grpc_address
// unless --node-ip was given, and the secondary addresses from the Node
// fields under the flags' names.
func mergeNode(base uplink.Identity, explicitRole bool, n *databasev1.Node) uplink.Identity {
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

// discoverer polls the local node's GetCurrentNode. It is owned by its Run
// goroutine.
type discoverer struct {
	addr     string
	interval time.Duration
	ids      *identitySource
	logger   *slog.Logger
	dial     []grpc.DialOption // extra options (tests)
}

// Run discovers the node until ctx ends. The first discovery is retried
// with backoff for up to discoveryBudget; after it (successful or not) the
// identity counts as resolved and the node is asked again every interval.
func (d *discoverer) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, d.dial...)
	conn, err := grpc.NewClient(d.addr, opts...)
	if err != nil {
		d.ids.markResolved()
		return fmt.Errorf("create client connection to --node-grpc-addr %s: %w", d.addr, err)
	}
	defer func() { _ = conn.Close() }()
	client := databasev1.NewNodeQueryServiceClient(conn)

	deadline := time.Now().Add(discoveryBudget)
	wait := discoveryFirstWait
	for {
		err := d.once(ctx, client)
		if err == nil {
			break
		}
		if time.Now().Add(wait).After(deadline) {
			d.logger.Warn("Node discovery failed, registering with the flags' identity", "node_grpc_addr", d.addr, "err", err)
			break
		}
		if !sleep(ctx, wait) {
			return nil
		}
		wait = min(2*wait, discoveryMaxWait)
	}
	d.ids.markResolved()

	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := d.once(ctx, client); err != nil {
				d.logger.Debug("Node discovery failed", "node_grpc_addr", d.addr, "err", err)
			}
		}
	}
}

func (d *discoverer) once(ctx context.Context, client databasev1.NodeQueryServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	resp, err := client.GetCurrentNode(ctx, &databasev1.GetCurrentNodeRequest{})
	if err != nil {
		return err
	}
	if resp.GetNode() == nil {
		return fmt.Errorf("node %s described no node", d.addr)
	}
	d.ids.update(resp.GetNode())
	return nil
}

// sleep waits d; it returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
