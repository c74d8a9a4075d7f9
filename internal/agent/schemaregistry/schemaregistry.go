// Package schemaregistry reads the authoritative schema registry from the
// liaison's client port and fingerprints every object, for the proxy's
// StreamSchemaRegistry (AGENT-NODE.md §6, §7).
package schemaregistry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/schemafp"
)

// DefaultTimeout bounds one whole read, like the upstream agent's.
const DefaultTimeout = 40 * time.Second

// Catalog numbers of common.v1.Catalog.
const (
	catalogStream  = 1
	catalogMeasure = 2
	catalogTrace   = 4
)

// Reader reads the registry of one node.
type Reader struct {
	// Addr is the node's registry address, host:port; empty fails every
	// read.
	Addr string
	// Timeout bounds one read (default DefaultTimeout).
	Timeout time.Duration
	// DialOptions are added to insecure transport credentials.
	DialOptions []grpc.DialOption
}

// Read lists every group and its objects with their fingerprints. A
// failure of the group list is returned as the error; a failure inside
// one group marks only that group.
func (r *Reader) Read(ctx context.Context) ([]*fodcv1.SchemaRegistryGroup, error) {
	if r.Addr == "" {
		return nil, errors.New("no schema-registry address configured")
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient(r.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, r.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.Addr, err)
	}
	defer conn.Close()
	groups, err := databasev1.NewGroupRegistryServiceClient(conn).List(ctx, &databasev1.GroupRegistryServiceListRequest{})
	if err != nil {
		return nil, fmt.Errorf("list groups on %s: %w", r.Addr, err)
	}
	out := make([]*fodcv1.SchemaRegistryGroup, 0, len(groups.GetGroup()))
	for _, g := range groups.GetGroup() {
		out = append(out, readGroup(ctx, conn, g))
	}
	return out, nil
}

// readGroup reads and fingerprints one group's objects.
func readGroup(ctx context.Context, conn *grpc.ClientConn, group []byte) *fodcv1.SchemaRegistryGroup {
	md, err := schemafp.MetadataOf(group)
	if err != nil {
		return &fodcv1.SchemaRegistryGroup{Error: fmt.Sprintf("decode group: %v", err)}
	}
	name := md.Name
	res := &fodcv1.SchemaRegistryGroup{Group: name}
	fail := func(err error) *fodcv1.SchemaRegistryGroup {
		return &fodcv1.SchemaRegistryGroup{Group: name, Error: err.Error()}
	}
	gf, err := schemafp.Parse(group)
	if err != nil {
		return fail(fmt.Errorf("decode group: %w", err))
	}
	catalog := gf.Varints[2]
	fp, err := schemafp.Fingerprint(group, nil)
	if err != nil {
		return fail(fmt.Errorf("fingerprint group: %w", err))
	}
	res.Objects = append(res.Objects, &fodcv1.SchemaObjectFingerprint{Kind: "group", Name: name, Fingerprint: fp})

	rules, err := databasev1.NewIndexRuleRegistryServiceClient(conn).List(ctx, &databasev1.IndexRuleRegistryServiceListRequest{Group: name})
	if err != nil {
		return fail(fmt.Errorf("list index rules: %w", err))
	}
	ruleByName := make(map[string][]byte, len(rules.GetIndexRule()))
	for _, rule := range rules.GetIndexRule() {
		rmd, err := schemafp.MetadataOf(rule)
		if err != nil {
			return fail(fmt.Errorf("decode index rule: %w", err))
		}
		fp, err := schemafp.Fingerprint(rule, nil)
		if err != nil {
			return fail(fmt.Errorf("fingerprint index rule %s: %w", rmd.Name, err))
		}
		if _, dup := ruleByName[rmd.Name]; !dup {
			ruleByName[rmd.Name] = rule
		}
		res.Objects = append(res.Objects, &fodcv1.SchemaObjectFingerprint{Kind: "indexRule", Name: rmd.Name, Fingerprint: fp})
	}
	bindings, err := databasev1.NewIndexRuleBindingRegistryServiceClient(conn).List(ctx, &databasev1.IndexRuleBindingRegistryServiceListRequest{Group: name})
	if err != nil {
		return fail(fmt.Errorf("list index rule bindings: %w", err))
	}
	bound := make(map[string][]string) // subject name -> rule names
	for _, b := range bindings.GetIndexRuleBinding() {
		bf, err := schemafp.Parse(b)
		if err != nil {
			return fail(fmt.Errorf("decode index rule binding: %w", err))
		}
		sf, err := schemafp.Parse(bf.Bytes[3])
		if err != nil {
			return fail(fmt.Errorf("decode binding subject: %w", err))
		}
		if sf.Varints[1] != catalog {
			continue
		}
		subject := string(sf.Bytes[2])
		for _, r := range bf.Repeated[2] {
			bound[subject] = append(bound[subject], string(r))
		}
	}

	var (
		kind  string
		items [][]byte
	)
	switch catalog {
	case catalogStream:
		kind = "stream"
		resp, err := databasev1.NewStreamRegistryServiceClient(conn).List(ctx, &databasev1.StreamRegistryServiceListRequest{Group: name})
		if err != nil {
			return fail(fmt.Errorf("list streams: %w", err))
		}
		items = resp.GetStream()
	case catalogMeasure:
		kind = "measure"
		resp, err := databasev1.NewMeasureRegistryServiceClient(conn).List(ctx, &databasev1.MeasureRegistryServiceListRequest{Group: name})
		if err != nil {
			return fail(fmt.Errorf("list measures: %w", err))
		}
		items = resp.GetMeasure()
	case catalogTrace:
		kind = "trace"
		resp, err := databasev1.NewTraceRegistryServiceClient(conn).List(ctx, &databasev1.TraceRegistryServiceListRequest{Group: name})
		if err != nil {
			return fail(fmt.Errorf("list traces: %w", err))
		}
		items = resp.GetTrace()
	default:
		return res
	}
	for _, it := range items {
		imd, err := schemafp.MetadataOf(it)
		if err != nil {
			return fail(fmt.Errorf("decode %s: %w", kind, err))
		}
		var rs [][]byte
		for _, rn := range bound[imd.Name] {
			if r, ok := ruleByName[rn]; ok {
				rs = append(rs, r)
			}
		}
		fp, err := schemafp.Fingerprint(it, rs)
		if err != nil {
			return fail(fmt.Errorf("fingerprint %s %s: %w", kind, imd.Name, err))
		}
		res.Objects = append(res.Objects, &fodcv1.SchemaObjectFingerprint{Kind: kind, Name: imd.Name, Fingerprint: fp})
	}
	return res
}

// MaxObjectsPerMessage is how many objects one reply message carries.
const MaxObjectsPerMessage = 50

// Messages turns a read into the reply sequence of StreamSchemaRegistry:
// per group one or more messages of at most MaxObjectsPerMessage objects
// (an empty or failed group as one message), a fatal error as one message
// with an empty group name, then done.
func Messages(groups []*fodcv1.SchemaRegistryGroup, err error) []*fodcv1.StreamSchemaRegistryRequest {
	var out []*fodcv1.StreamSchemaRegistryRequest
	if err != nil {
		out = append(out, &fodcv1.StreamSchemaRegistryRequest{Group: &fodcv1.SchemaRegistryGroup{Error: err.Error()}})
	}
	for _, g := range groups {
		objs := g.GetObjects()
		for first := true; first || len(objs) > 0; first = false {
			n := min(len(objs), MaxObjectsPerMessage)
			out = append(out, &fodcv1.StreamSchemaRegistryRequest{Group: &fodcv1.SchemaRegistryGroup{Group: g.GetGroup(), Error: g.GetError(), Objects: objs[:n]}})
			objs = objs[n:]
		}
	}
	return append(out, &fodcv1.StreamSchemaRegistryRequest{Done: true})
}
