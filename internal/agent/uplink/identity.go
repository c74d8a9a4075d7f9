package uplink

import (
	"maps"
	"net"
	"reflect"
	"strconv"
	"unsafe"

	commonv1 "github.com/fodc-go/fodc/api/proto/banyandb/common/v1"
	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/roles"
)

// Names of the secondary addresses that map onto fields of
// banyandb.database.v1.Node in topology replies.
const (
	AddressHTTP         = "http"
	AddressGossip       = "gossip"
	AddressSchema       = "schema"
	AddressSchemaGossip = "schema_gossip"
)

// Identity labels stamped on every series of a metrics reply, as upstream
// HEAD agents do (PROTOCOL.md §3.2).
const (
	LabelNodeRole      = "node_role"
	LabelPodName       = "pod_name"
	LabelContainerName = "container_name"
	// NodeLabelPrefix prefixes every node label stamped on a series.
	NodeLabelPrefix = "node_"
)

// Address is a network endpoint of the node. The zero value means unknown.
type Address struct {
	IP   string
	Port int
}

// IsZero reports whether a is unknown.
func (a Address) IsZero() bool { return a.IP == "" }

// String returns ip:port, or "" for the zero Address.
func (a Address) String() string {
	if a.IsZero() {
		return ""
	}
	return net.JoinHostPort(a.IP, strconv.Itoa(a.Port))
}

// ParseAddress reads host:port with a numeric port in 1..65535.
func ParseAddress(s string) (Address, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Address{}, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return Address{}, &net.AddrError{Err: "port must be a number in 1..65535", Addr: s}
	}
	if host == "" {
		return Address{}, &net.AddrError{Err: "missing host", Addr: s}
	}
	return Address{IP: host, Port: p}, nil
}

// Identity is what the agent tells the proxy about its node. Values handed
// to the Client are only read, never modified.
type Identity struct {
	// Role is the node's role. It is sent as its enum name (ROLE_DATA,
	// ...), and a data tier as the node label "type", like upstream agents.
	Role roles.Role
	// Labels are the node's own labels.
	Labels map[string]string
	// PodName names the agent's pod; the upstream proxy requires it.
	PodName string
	// ContainerNames name the scraped containers, one per target.
	ContainerNames []string
	// Primary is the node's main (gRPC) address; zero when unknown.
	Primary Address
	// Secondary holds further named addresses, e.g. "http" or "gossip".
	Secondary map[string]Address
}

// NodeLabels returns the node labels as sent: Labels plus the data tier
// as roles.TierLabel when Labels does not already carry one.
func (id *Identity) NodeLabels() map[string]string {
	out := maps.Clone(id.Labels)
	if id.Role.Tier != "" && out[roles.TierLabel] == "" {
		if out == nil {
			out = make(map[string]string, 1)
		}
		out[roles.TierLabel] = id.Role.Tier
	}
	return out
}

// RegisterRequest returns the registration (and heartbeat) message.
func (id *Identity) RegisterRequest() *fodcv1.RegisterAgentRequest {
	req := &fodcv1.RegisterAgentRequest{
		NodeRole:       id.Role.WireName(),
		Labels:         id.NodeLabels(),
		PodName:        id.PodName,
		ContainerNames: id.ContainerNames,
	}
	if !id.Primary.IsZero() {
		req.PrimaryAddress = &fodcv1.Address{Ip: id.Primary.IP, Port: int32(id.Primary.Port)}
	}
	if len(id.Secondary) > 0 {
		req.SecondaryAddresses = make(map[string]*fodcv1.Address, len(id.Secondary))
		for name, a := range id.Secondary {
			req.SecondaryAddresses[name] = &fodcv1.Address{Ip: a.IP, Port: int32(a.Port)}
		}
	}
	return req
}

// Node returns the agent's own node as a topology reply carries it: named
// by the primary address (else the pod name), with the pod_name label and
// the secondary addresses in their Node fields.
func (id *Identity) Node() *databasev1.Node {
	name := id.Primary.String()
	if name == "" {
		name = id.PodName
	}
	labels := id.NodeLabels()
	if id.PodName != "" {
		if labels == nil {
			labels = make(map[string]string, 1)
		}
		labels[LabelPodName] = id.PodName
	}
	n := &databasev1.Node{
		Metadata:                        &commonv1.Metadata{Name: name},
		GrpcAddress:                     id.Primary.String(),
		HttpAddress:                     id.Secondary[AddressHTTP].String(),
		Labels:                          labels,
		PropertyRepairGossipGrpcAddress: id.Secondary[AddressGossip].String(),
		PropertySchemaGrpcAddress:       id.Secondary[AddressSchema].String(),
		PropertySchemaGossipGrpcAddress: id.Secondary[AddressSchemaGossip].String(),
	}
	// roles.Kind is numbered like banyandb.database.v1.Role.
	if id.Role.Kind != roles.KindUnspecified {
		n.Roles = []databasev1.Role{databasev1.Role(id.Role.Kind)}
	}
	return n
}

// StampLabels returns the identity labels stamped on every series:
// node_role, pod_name, container_name when the agent has exactly one
// container, and node_<k> for every non-empty node label except pod_name
// and container_name.
func (id *Identity) StampLabels() map[string]string {
	out := map[string]string{LabelNodeRole: id.Role.WireName()}
	if id.PodName != "" {
		out[LabelPodName] = id.PodName
	}
	if len(id.ContainerNames) == 1 && id.ContainerNames[0] != "" {
		out[LabelContainerName] = id.ContainerNames[0]
	}
	for k, v := range id.NodeLabels() {
		if v == "" || k == LabelPodName || k == LabelContainerName {
			continue
		}
		out[NodeLabelPrefix+k] = v
	}
	return out
}

// stamp adds the labels of ident that a metric lacks to every metric, never
// overwriting one. Metrics sharing one Labels map (the recorder shares a
// map across the samples of a series) get one shared, stamped map; the
// maps of ms are never modified.
func stamp(ms []*fodcv1.Metric, ident map[string]string) {
	var (
		prevSrc unsafe.Pointer
		prevOut map[string]string
	)
	for i, m := range ms {
		src := mapPointer(m.Labels)
		if i == 0 || src != prevSrc {
			out := make(map[string]string, len(m.Labels)+len(ident))
			maps.Copy(out, ident)
			maps.Copy(out, m.Labels) // the series' own labels win
			prevSrc, prevOut = src, out
		}
		m.Labels = prevOut
	}
}

// mapPointer identifies a map; nil for a nil map.
func mapPointer(m map[string]string) unsafe.Pointer {
	return reflect.ValueOf(m).UnsafePointer()
}
