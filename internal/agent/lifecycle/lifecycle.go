// Package lifecycle collects what the proxy's StreamLifecycle asks for
// (AGENT-NODE.md §5): the lifecycle sidecar's report files, the node's
// InspectAll answer and, from the same port, the node's cached schema
// state folded into per-group fingerprints.
//
// A collection is made on demand and cached for CacheTTL. A node that
// answers InspectAll with Unimplemented (every port but a liaison's
// internal one) is not asked again for the life of the Collector; the
// reports are then all there is. Any other InspectAll failure fails the
// collection, and the cache is left as it was.
package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/schemafp"
)

// Defaults and bounds, the upstream agent's.
const (
	DefaultReportDir = "/tmp/lifecycle-reports"
	DefaultCacheTTL  = 10 * time.Minute
	DefaultTimeout   = 40 * time.Second
	MaxReports       = 5
	MaxReportBytes   = 5 << 20
)

// typePrefix is the type URL prefix of the schema payloads.
const typePrefix = "type.googleapis.com/"

// knownTypes are the schema payload types the node sends.
var knownTypes = map[string]bool{
	"banyandb.common.v1.Group":       true,
	"banyandb.database.v1.IndexRule": true,
	"banyandb.database.v1.Stream":    true,
	"banyandb.database.v1.Measure":   true,
	"banyandb.database.v1.Trace":     true,
}

// Collector collects lifecycle data of one node. Its methods are safe for
// concurrent use.
type Collector struct {
	// ReportDir holds the sidecar's *.json reports.
	ReportDir string
	// Addr is the node port serving InspectAll and the schema state,
	// host:port; empty collects reports only.
	Addr string
	// CacheTTL is how long a collection is served again; 0 disables the
	// cache.
	CacheTTL time.Duration
	// Timeout bounds each node call (default DefaultTimeout).
	Timeout time.Duration
	// DialOptions are added to insecure transport credentials.
	DialOptions []grpc.DialOption
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu            sync.Mutex
	cache         *fodcv1.LifecycleData
	cachedAt      time.Time
	unimplemented bool
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Collect returns the lifecycle data, from the cache while it is fresh.
// The result is shared and must not be modified.
func (c *Collector) Collect(ctx context.Context) (*fodcv1.LifecycleData, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache != nil && c.CacheTTL > 0 && c.now().Sub(c.cachedAt) < c.CacheTTL {
		return c.cache, nil
	}
	data := &fodcv1.LifecycleData{Reports: ReadReports(c.ReportDir)}
	if c.Addr != "" && !c.unimplemented {
		groups, err := c.groups(ctx)
		if err != nil {
			return nil, err
		}
		data.Groups = groups
	}
	c.cache, c.cachedAt = data, c.now()
	return data, nil
}

// ReadReports returns the MaxReports lexically greatest *.json files of
// dir, greatest first, without those over MaxReportBytes or unreadable.
func ReadReports(dir string) []*fodcv1.LifecycleReport {
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	slices.Reverse(names)
	names = names[:min(len(names), MaxReports)]
	var out []*fodcv1.LifecycleReport
	for _, n := range names {
		b, err := readLimited(filepath.Join(dir, n), MaxReportBytes)
		if err != nil {
			continue
		}
		out = append(out, &fodcv1.LifecycleReport{Filename: n, ReportJson: string(b)})
	}
	return out
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New("too large")
	}
	return b, nil
}

func (c *Collector) dial() (*grpc.ClientConn, error) {
	return grpc.NewClient(c.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.DialOptions...)...)
}

func (c *Collector) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// groups asks InspectAll and then the schema state. Called with c.mu held.
func (c *Collector) groups(ctx context.Context) ([]*fodcv1.GroupLifecycleInfo, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, c.timeout())
	resp, err := fodcv1.NewGroupLifecycleServiceClient(conn).InspectAll(ictx, &fodcv1.InspectAllRequest{})
	cancel()
	_ = conn.Close()
	if status.Code(err) == codes.Unimplemented {
		c.unimplemented = true
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect all groups on %s: %w", c.Addr, err)
	}
	groups := resp.GetGroups()
	if groups == nil {
		groups = []*fodcv1.GroupLifecycleInfo{}
	}
	states, err := c.schemaState(ctx)
	switch {
	case status.Code(err) == codes.Unimplemented:
		return groups, nil
	case err != nil:
		for _, g := range groups {
			g.Errors = append(g.Errors, "node schema state: "+err.Error())
		}
		return groups, nil
	}
	return fold(groups, states), nil
}

// groupState is one group's schema state as the node streamed it.
type groupState struct {
	name    string
	rules   [][]byte
	objects []*fodcv1.ObjectConsistency
	node    string
	errors  []string
}

// schemaState reads the node's schema state of every group, in stream
// order.
func (c *Collector) schemaState(ctx context.Context) ([]*groupState, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	st, err := databasev1.NewNodeSchemaStateServiceClient(conn).StreamGroupSchemaState(ctx, &databasev1.StreamGroupSchemaStateRequest{})
	if err != nil {
		return nil, err
	}
	byName := map[string]*groupState{}
	var order []*groupState
	get := func(name string) *groupState {
		g := byName[name]
		if g == nil {
			g = &groupState{name: name}
			byName[name] = g
			order = append(order, g)
		}
		return g
	}
	counts := map[string]uint32{}
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return order, nil
		}
		if err != nil {
			return nil, err
		}
		switch e := ev.GetEvent().(type) {
		case *databasev1.StreamGroupSchemaStateResponse_RuleTable:
			g := get(e.RuleTable.GetGroup())
			g.rules = append(g.rules, e.RuleTable.GetRules()...)
		case *databasev1.StreamGroupSchemaStateResponse_Object:
			o := e.Object
			g := get(o.GetGroup())
			counts[g.name]++
			obj, err := objectFingerprint(o, g.rules)
			if err != nil {
				g.errors = append(g.errors, fmt.Sprintf("fingerprint %s %s: %v", o.GetKind(), o.GetName(), err))
				continue
			}
			g.objects = append(g.objects, obj)
		case *databasev1.StreamGroupSchemaStateResponse_Trailer:
			tr := e.Trailer
			g := get(tr.GetGroup())
			g.node = tr.GetNode()
			g.errors = append(g.errors, tr.GetErrors()...)
			if n := counts[g.name]; n != tr.GetObjectCount() {
				g.errors = append(g.errors, fmt.Sprintf("torn stream: received %d objects, trailer reported %d", n, tr.GetObjectCount()))
			}
		}
	}
}

// objectFingerprint computes the cache and runtime fingerprints of one
// object; the node is filled in once the trailer names it.
func objectFingerprint(o *databasev1.ObjectSnapshot, rules [][]byte) (*fodcv1.ObjectConsistency, error) {
	cache, err := bodyFingerprint(o.GetCache(), rules)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	runtime := cache
	if o.GetRuntime() != nil {
		if runtime, err = bodyFingerprint(o.GetRuntime(), rules); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	return &fodcv1.ObjectConsistency{
		Kind:             o.GetKind(),
		Name:             o.GetName(),
		NodeFingerprints: []*fodcv1.NodeFingerprint{{CacheFingerprint: cache, RuntimeFingerprint: runtime}},
	}, nil
}

func bodyFingerprint(b *databasev1.SchemaBody, rules [][]byte) (uint64, error) {
	p := b.GetPayload()
	if p == nil {
		return 0, errors.New("no payload")
	}
	if t := strings.TrimPrefix(p.GetTypeUrl(), typePrefix); !knownTypes[t] {
		return 0, fmt.Errorf("unknown payload type %q", p.GetTypeUrl())
	}
	var bound [][]byte
	for _, ref := range b.GetBoundIndexRuleRefs() {
		if int(ref) >= len(rules) {
			return 0, fmt.Errorf("rule ref %d out of range (%d rules)", ref, len(rules))
		}
		bound = append(bound, rules[ref])
	}
	return schemafp.Fingerprint(p.GetValue(), bound)
}

// fold puts each group's schema state into its InspectAll entry, adding
// entries for groups only the node's cache knows.
func fold(groups []*fodcv1.GroupLifecycleInfo, states []*groupState) []*fodcv1.GroupLifecycleInfo {
	byName := make(map[string]*fodcv1.GroupLifecycleInfo, len(groups))
	for _, g := range groups {
		byName[g.GetName()] = g
	}
	for _, s := range states {
		g := byName[s.name]
		if g == nil {
			g = &fodcv1.GroupLifecycleInfo{Name: s.name}
			byName[s.name] = g
			groups = append(groups, g)
		}
		g.Errors = append(g.Errors, s.errors...)
		slices.SortFunc(s.objects, func(a, b *fodcv1.ObjectConsistency) int {
			return cmp.Or(strings.Compare(a.GetKind(), b.GetKind()), strings.Compare(a.GetName(), b.GetName()))
		})
		for _, o := range s.objects {
			if s.node == "" {
				o.NodeFingerprints = nil
				continue
			}
			o.NodeFingerprints[0].Node = s.node
		}
		g.SchemaConsistency = &fodcv1.SchemaConsistency{Objects: s.objects}
	}
	return groups
}
