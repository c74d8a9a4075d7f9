package topology

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	databasev1 "github.com/fodc-go/fodc/api/proto/banyandb/database/v1"
)

// jsonBody is the /cluster/topology body.
type jsonBody struct {
	Nodes []jsonNode `json:"nodes"`
	Calls []jsonCall `json:"calls"`
}

// jsonNode is a database.v1.Node in the upstream proxy's encoding: proto
// field names, empty fields left out, created_at as seconds and nanos,
// roles as names.
type jsonNode struct {
	Metadata                        *jsonMetadata     `json:"metadata,omitempty"`
	GrpcAddress                     string            `json:"grpc_address,omitempty"`
	HTTPAddress                     string            `json:"http_address,omitempty"`
	CreatedAt                       *jsonTimestamp    `json:"created_at,omitempty"`
	Labels                          map[string]string `json:"labels,omitempty"`
	PropertyRepairGossipGrpcAddress string            `json:"property_repair_gossip_grpc_address,omitempty"`
	PropertySchemaGrpcAddress       string            `json:"property_schema_grpc_address,omitempty"`
	PropertySchemaGossipGrpcAddress string            `json:"property_schema_gossip_grpc_address,omitempty"`
	Status                          string            `json:"status,omitempty"`
	LastHeartbeat                   string            `json:"last_heartbeat,omitempty"`
	LastSeen                        string            `json:"last_seen,omitempty"`
	DisconnectReason                string            `json:"disconnect_reason,omitempty"`
	Roles                           []string          `json:"roles"`
}

type jsonMetadata struct {
	Group          string `json:"group,omitempty"`
	Name           string `json:"name,omitempty"`
	ID             uint32 `json:"id,omitempty"`
	CreateRevision int64  `json:"create_revision,omitempty"`
	ModRevision    int64  `json:"mod_revision,omitempty"`
}

type jsonTimestamp struct {
	Seconds int64 `json:"seconds,omitempty"`
	Nanos   int32 `json:"nanos,omitempty"`
}

type jsonCall struct {
	ID     string `json:"id,omitempty"`
	Target string `json:"target,omitempty"`
	Source string `json:"source,omitempty"`
}

// WriteJSON writes m as the /cluster/topology body (PROTOCOL.md §5.7):
// {"nodes":[...],"calls":[...]}, both arrays always present. A node is the
// database.v1.Node with proto field names and empty fields left out,
// created_at as {"seconds":N,"nanos":N}, then "status" and, when the
// registry knows the node, "last_heartbeat" and "last_seen" (RFC 3339 with
// nanoseconds) and, for an offline node, "disconnect_reason"; and
// "roles" as role names (UNKNOWN_ROLE_<n> for unknown values), always
// present. Nodes and calls keep the order of m.
func WriteJSON(w io.Writer, m Merged) error {
	body := jsonBody{
		Nodes: make([]jsonNode, 0, len(m.Nodes)),
		Calls: make([]jsonCall, 0, len(m.Calls)),
	}
	for _, n := range m.Nodes {
		if n == nil {
			continue
		}
		jn := jsonNode{
			GrpcAddress:                     n.GetGrpcAddress(),
			HTTPAddress:                     n.GetHttpAddress(),
			Labels:                          n.GetLabels(),
			PropertyRepairGossipGrpcAddress: n.GetPropertyRepairGossipGrpcAddress(),
			PropertySchemaGrpcAddress:       n.GetPropertySchemaGrpcAddress(),
			PropertySchemaGossipGrpcAddress: n.GetPropertySchemaGossipGrpcAddress(),
			Roles:                           RoleNames(n.GetRoles()),
		}
		if md := n.GetMetadata(); md != nil {
			jn.Metadata = &jsonMetadata{
				Group:          md.GetGroup(),
				Name:           md.GetName(),
				ID:             md.GetId(),
				CreateRevision: md.GetCreateRevision(),
				ModRevision:    md.GetModRevision(),
			}
		}
		if ts := n.GetCreatedAt(); ts != nil {
			jn.CreatedAt = &jsonTimestamp{Seconds: ts.GetSeconds(), Nanos: ts.GetNanos()}
		}
		if st, ok := m.Status[n.GetMetadata().GetName()]; ok {
			jn.Status = st.Status
			if !st.LastHeartbeat.IsZero() {
				jn.LastHeartbeat = st.LastHeartbeat.Format(time.RFC3339Nano)
			}
			if !st.LastSeen.IsZero() {
				jn.LastSeen = st.LastSeen.Format(time.RFC3339Nano)
			}
			jn.DisconnectReason = st.DisconnectReason
		}
		body.Nodes = append(body.Nodes, jn)
	}
	for _, c := range m.Calls {
		if c == nil {
			continue
		}
		body.Calls = append(body.Calls, jsonCall{ID: c.GetId(), Target: c.GetTarget(), Source: c.GetSource()})
	}
	return json.NewEncoder(w).Encode(body)
}

// RoleNames returns the enum names of roles, such as ROLE_DATA, and
// UNKNOWN_ROLE_<n> for values the enum does not define. It never returns
// nil.
func RoleNames(roles []databasev1.Role) []string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		name, ok := databasev1.Role_name[int32(r)]
		if !ok {
			name = "UNKNOWN_ROLE_" + strconv.Itoa(int(r))
		}
		out = append(out, name)
	}
	return out
}
