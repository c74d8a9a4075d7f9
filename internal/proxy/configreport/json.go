package configreport

import (
	"cmp"
	"encoding/json"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// jsonConfigBody is the /cluster/config body.
type jsonConfigBody struct {
	Configurations []jsonConfig `json:"configurations"`
	AgeSeconds     float64      `json:"age_seconds"`
}

type jsonConfig struct {
	AgentID       string            `json:"agent_id"`
	PodName       string            `json:"pod_name"`
	Address       string            `json:"address"`
	NodeRole      string            `json:"node_role"`
	StartupParams map[string]any    `json:"startup_params"`
	RuntimeConfig map[string]string `json:"runtime_config"`
	Environment   map[string]string `json:"environment"`
	AgentParams   map[string]any    `json:"agent_params"`
	Args          []string          `json:"args,omitempty"`
	Source        string            `json:"source,omitempty"`
	// CollectionErrors are the agent's partial failures; the rest stands.
	CollectionErrors []string `json:"collection_errors,omitempty"`
	CollectedAt      string   `json:"collected_at,omitempty"`
	Supported        bool     `json:"supported"`
	Error            string   `json:"error,omitempty"`
}

// WriteConfigJSON writes the /cluster/config body (DESIGN.md §1.4):
//
//	{"configurations":[{"agent_id","pod_name","address","node_role",
//	  "startup_params":{flag: "value", or ["v1","v2"] when repeated},
//	  "runtime_config":{...},"environment":{...},"agent_params":{...},
//	  "args":[...]?,"source"?,"collection_errors":[...]?,
//	  "collected_at"?,"supported":bool,"error"?}],
//	 "age_seconds":N}
//
// The four maps are always present (empty for an agent without a
// configuration). error is NotSupported for an agent without the extension
// and the failure for one that did not answer. collected_at is when the
// proxy received the configuration (the agent's own time when unknown),
// RFC 3339 with nanoseconds, UTC. Configurations are sorted by role, pod
// name and agent id; age_seconds has millisecond precision. Values are
// written as the agent sent them, already redacted; HTML characters are not
// escaped, so "<redacted>" reads as such. The JSON is indented by two
// spaces.
func WriteConfigJSON(w io.Writer, nodes []NodeConfig, age time.Duration) error {
	sorted := slices.Clone(nodes)
	slices.SortStableFunc(sorted, func(a, b NodeConfig) int {
		return cmp.Or(strings.Compare(a.Role, b.Role), strings.Compare(a.PodName, b.PodName), strings.Compare(a.AgentID, b.AgentID))
	})
	body := jsonConfigBody{Configurations: make([]jsonConfig, 0, len(sorted)), AgeSeconds: ageSeconds(age)}
	for _, n := range sorted {
		c := n.Config
		jc := jsonConfig{
			AgentID:          n.AgentID,
			PodName:          n.PodName,
			Address:          n.Address,
			NodeRole:         n.Role,
			StartupParams:    paramsJSON(c.GetStartupParams()),
			RuntimeConfig:    nonNil(c.GetRuntimeConfig()),
			Environment:      nonNil(c.GetEnvironment()),
			AgentParams:      paramsJSON(c.GetAgentParams()),
			Args:             c.GetArgs(),
			Source:           c.GetSource(),
			CollectionErrors: c.GetErrors(),
			Supported:        n.Supported,
			Error:            n.Err,
		}
		if !n.Supported {
			jc.Error = NotSupported
		}
		switch {
		case !n.CollectedAt.IsZero():
			jc.CollectedAt = n.CollectedAt.UTC().Format(time.RFC3339Nano)
		case c.GetCollectedAt() != nil:
			jc.CollectedAt = c.GetCollectedAt().AsTime().UTC().Format(time.RFC3339Nano)
		}
		body.Configurations = append(body.Configurations, jc)
	}
	return encode(w, body)
}

// paramsJSON renders parameters as flag -> value, or -> [values] when the
// flag is repeated. It never returns nil.
func paramsJSON(m map[string]*fodcv1.ExtParamValues) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		vs := v.GetValues()
		switch len(vs) {
		case 0:
			out[k] = ""
		case 1:
			out[k] = vs[0]
		default:
			out[k] = vs
		}
	}
	return out
}

// orEmpty returns s, or an empty slice for nil so that JSON shows [].
func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

type jsonReportBody struct {
	Groups      []jsonGroup       `json:"groups"`
	Unsupported []string          `json:"unsupported"`
	Failed      map[string]string `json:"failed"`
	Ignored     []string          `json:"ignored"`
	AgeSeconds  float64           `json:"age_seconds"`
}

type jsonGroup struct {
	Role            string           `json:"role"`
	Tier            string           `json:"tier,omitempty"`
	Nodes           []string         `json:"nodes"`
	Consistent      bool             `json:"consistent"`
	DifferingParams int              `json:"differing_params"`
	Differences     []jsonDifference `json:"differences"`
}

type jsonDifference struct {
	Param  string       `json:"param"`
	Values []jsonHolder `json:"values"`
}

type jsonHolder struct {
	Value string   `json:"value"`
	Nodes []string `json:"nodes"`
}

// WriteReportJSON writes the consistency report:
//
//	{"groups":[{"role","tier"?,"nodes":[...],"consistent":bool,
//	  "differing_params":N,"differences":[{"param",
//	  "values":[{"value","nodes":[...]}]}]}],
//	 "unsupported":[pods],"failed":{pod: reason},"ignored":[patterns],
//	 "age_seconds":N}
//
// Arrays and objects are always present; the order is r's.
func WriteReportJSON(w io.Writer, r Report, age time.Duration) error {
	body := jsonReportBody{
		Groups:      make([]jsonGroup, 0, len(r.Groups)),
		Unsupported: orEmpty(r.Unsupported),
		Failed:      r.Failed,
		Ignored:     orEmpty(r.Ignored),
		AgeSeconds:  ageSeconds(age),
	}
	if body.Failed == nil {
		body.Failed = map[string]string{}
	}
	for _, g := range r.Groups {
		jg := jsonGroup{
			Role:            g.Role,
			Tier:            g.Tier,
			Nodes:           orEmpty(g.Nodes),
			Consistent:      len(g.Differences) == 0,
			DifferingParams: len(g.Differences),
			Differences:     make([]jsonDifference, 0, len(g.Differences)),
		}
		for _, d := range g.Differences {
			jd := jsonDifference{Param: d.Param, Values: make([]jsonHolder, 0, len(d.Values))}
			for _, v := range d.Values {
				jd.Values = append(jd.Values, jsonHolder{Value: v.Value, Nodes: orEmpty(v.Nodes)})
			}
			jg.Differences = append(jg.Differences, jd)
		}
		body.Groups = append(body.Groups, jg)
	}
	return encode(w, body)
}

// ageSeconds returns age in seconds with millisecond precision.
func ageSeconds(age time.Duration) float64 {
	return math.Round(age.Seconds()*1000) / 1000
}

func encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ") // like the other JSON endpoints; read by people with curl
	return enc.Encode(v)
}
