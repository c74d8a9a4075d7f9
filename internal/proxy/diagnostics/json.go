package diagnostics

import (
	"encoding/json"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// jsonRecord is one /diagnostics item, fields in the upstream order.
type jsonRecord struct {
	FetchedAt      string     `json:"fetched_at"`
	PanicRecord    *jsonPanic `json:"panic_record,omitempty"`
	AgentID        string     `json:"agent_id"`
	PodName        string     `json:"pod_name"`
	Role           string     `json:"role"`
	SourceEndpoint string     `json:"source_endpoint"`
	ArtifactDir    string     `json:"artifact_dir"`
	Files          []string   `json:"files,omitempty"`
}

type jsonPanic struct {
	Component       string            `json:"component"`
	GoroutineStack  string            `json:"goroutine_stack,omitempty"`
	PanicValue      string            `json:"panic_value"`
	OccurredAt      string            `json:"occurred_at"`
	ProcessMetadata map[string]string `json:"process_metadata,omitempty"`
	Breadcrumbs     []jsonBreadcrumb  `json:"breadcrumbs,omitempty"`
	Recovered       bool              `json:"recovered"`
}

type jsonBreadcrumb struct {
	OccurredAt string            `json:"occurred_at"`
	Fields     map[string]string `json:"fields,omitempty"`
	Stage      string            `json:"stage"`
	Component  string            `json:"component,omitempty"`
}

// WriteJSON writes recs as the /diagnostics body (PROTOCOL.md §5.9): a JSON
// array, [] when recs is empty, of
// {"fetched_at","panic_record"?,"agent_id","pod_name","role","source_endpoint","artifact_dir","files"?}
// where panic_record is
// {"component","goroutine_stack"?,"panic_value","occurred_at","process_metadata"?,"breadcrumbs"?,"recovered"}
// and a breadcrumb {"occurred_at","fields"?,"stage","component"?}. Times
// are RFC 3339 with nanoseconds in UTC; an unset time is
// 0001-01-01T00:00:00Z. Items keep the order of recs. The body ends with a
// newline, like the upstream proxy's.
func WriteJSON(w io.Writer, recs []Record) error {
	out := make([]jsonRecord, 0, len(recs))
	for _, r := range recs {
		m := r.Rec
		jr := jsonRecord{
			FetchedAt:      formatTime(m.GetFetchedAt()),
			AgentID:        r.AgentID,
			PodName:        r.PodName,
			Role:           r.Role,
			SourceEndpoint: m.GetSourceEndpoint(),
			ArtifactDir:    m.GetArtifactDir(),
			Files:          m.GetFiles(),
		}
		if p := m.GetPanicRecord(); p != nil {
			jp := &jsonPanic{
				Component:       p.GetComponent(),
				GoroutineStack:  p.GetGoroutineStack(),
				PanicValue:      p.GetPanicValue(),
				OccurredAt:      formatTime(p.GetOccurredAt()),
				ProcessMetadata: p.GetProcessMetadata(),
				Recovered:       p.GetRecovered(),
			}
			for _, b := range p.GetBreadcrumbs() {
				jp.Breadcrumbs = append(jp.Breadcrumbs, jsonBreadcrumb{
					OccurredAt: formatTime(b.GetTime()),
					Fields:     b.GetFields(),
					Stage:      b.GetStage(),
					Component:  b.GetComponent(),
				})
			}
			jr.PanicRecord = jp
		}
		out = append(out, jr)
	}
	return json.NewEncoder(w).Encode(out)
}

// formatTime renders ts like a Go time.Time in JSON, in UTC; nil is the zero
// time.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return time.Time{}.Format(time.RFC3339Nano)
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}
