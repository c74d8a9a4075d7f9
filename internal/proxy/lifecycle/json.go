package lifecycle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Result is everything a /cluster/lifecycle answer holds.
type Result struct {
	// Groups are the merged groups, completed by Apply.
	Groups []*fodcv1.GroupLifecycleInfo
	// Statuses are the reports per agent (see PodStatuses).
	Statuses []PodReports
	Summary  Summary
	// Error is ErrorText(Summary), or another failure; empty when none.
	Error string
	// CollectedAt is when the collection finished.
	CollectedAt time.Time
}

// PodReports are the lifecycle reports of one agent.
type PodReports struct {
	PodName string
	Reports []*fodcv1.LifecycleReport
}

// groupJSON renders groups as the upstream proxy does: proto field names,
// unpopulated fields emitted (null messages, empty lists), 64-bit integers
// as strings, enums by name, timestamps in RFC 3339.
var groupJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

type jsonReport struct {
	Filename   string `json:"filename"`
	ReportJSON string `json:"report_json"`
}

type jsonPodReports struct {
	PodName string       `json:"pod_name"`
	Reports []jsonReport `json:"reports"`
}

type jsonSummary struct {
	Total        int `json:"total"`
	Requested    int `json:"requested"`
	Responded    int `json:"responded"`
	NotResponded int `json:"not_responded"`
}

// jsonTail is everything of the body after "groups".
type jsonTail struct {
	Statuses    []jsonPodReports `json:"lifecycle_statuses"`
	Summary     jsonSummary      `json:"agent_summary"`
	Error       string           `json:"error,omitempty"`
	CollectedAt string           `json:"collected_at"`
}

// WriteJSON writes r as the /cluster/lifecycle body (PROTOCOL.md §5.8):
//
//	{"groups":[...],"lifecycle_statuses":[{"pod_name","reports":[{"filename","report_json"}]}],
//	 "agent_summary":{"total","requested","responded","not_responded"},"error"?,"collected_at"}
//
// Each group is protojson with proto field names and unpopulated fields
// emitted. Statuses without reports are left out. Groups are encoded one at
// a time, so a large answer is never held twice in memory.
func WriteJSON(w io.Writer, r Result) error {
	bw := bufio.NewWriter(w)
	if _, err := bw.WriteString(`{"groups":[`); err != nil {
		return err
	}
	first := true
	var compact bytes.Buffer
	for _, g := range r.Groups {
		if g == nil {
			continue
		}
		b, err := groupJSON.Marshal(g)
		if err != nil {
			return fmt.Errorf("encode group %q: %w", g.GetName(), err)
		}
		// protojson varies its whitespace on purpose; make the output stable.
		compact.Reset()
		if err := json.Compact(&compact, b); err != nil {
			return fmt.Errorf("compact group %q: %w", g.GetName(), err)
		}
		if !first {
			if err := bw.WriteByte(','); err != nil {
				return err
			}
		}
		first = false
		if _, err := bw.Write(compact.Bytes()); err != nil {
			return err
		}
	}
	if _, err := bw.WriteString(`],`); err != nil {
		return err
	}

	tail := jsonTail{
		Statuses: make([]jsonPodReports, 0, len(r.Statuses)),
		Summary: jsonSummary{
			Total:        r.Summary.Total,
			Requested:    r.Summary.Requested,
			Responded:    r.Summary.Responded,
			NotResponded: r.Summary.NotResponded,
		},
		Error:       r.Error,
		CollectedAt: r.CollectedAt.Format(time.RFC3339Nano),
	}
	for _, s := range r.Statuses {
		if len(s.Reports) == 0 {
			continue
		}
		p := jsonPodReports{PodName: s.PodName, Reports: make([]jsonReport, 0, len(s.Reports))}
		for _, rep := range s.Reports {
			p.Reports = append(p.Reports, jsonReport{Filename: rep.GetFilename(), ReportJSON: rep.GetReportJson()})
		}
		tail.Statuses = append(tail.Statuses, p)
	}
	b, err := json.Marshal(tail)
	if err != nil {
		return err
	}
	// Splice the tail object's members after "groups".
	if _, err := bw.Write(b[1:]); err != nil {
		return err
	}
	if err := bw.WriteByte('\n'); err != nil {
		return err
	}
	return bw.Flush()
}
