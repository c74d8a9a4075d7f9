package pressure

import (
	"encoding/json"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// jsonEntry is one /pressure-profiles item, fields in the upstream order.
type jsonEntry struct {
	CapturedAt       string        `json:"captured_at"`
	AgentID          string        `json:"agent_id"`
	PodName          string        `json:"pod_name"`
	Role             string        `json:"role"`
	ProfileID        string        `json:"profile_id"`
	SourceEndpoint   string        `json:"source_endpoint"`
	Profiles         []jsonProfile `json:"profiles"`
	RSSBytes         uint64        `json:"rss_bytes"`
	CgroupLimitBytes uint64        `json:"cgroup_limit_bytes"`
	ThresholdBytes   uint64        `json:"threshold_bytes"`
	TriggerPercent   uint32        `json:"trigger_percent"`
}

type jsonProfile struct {
	Type      string `json:"type"`
	Filename  string `json:"filename"`
	Filepath  string `json:"filepath"`
	Format    string `json:"format"`
	SizeBytes int64  `json:"size_bytes"`
}

// WriteJSON writes entries as the /pressure-profiles body (PROTOCOL.md
// §5.10): a JSON array, [] when entries is empty, of
// {"captured_at","agent_id","pod_name","role","profile_id","source_endpoint","profiles":[{"type","filename","filepath","format","size_bytes"}],"rss_bytes","cgroup_limit_bytes","threshold_bytes","trigger_percent"},
// every field always present ("profiles" is [] when empty). captured_at is
// RFC 3339 with nanoseconds in UTC, 0001-01-01T00:00:00Z when unset. Items
// keep the order of entries. The body ends with a newline, like the
// upstream proxy's.
func WriteJSON(w io.Writer, entries []Entry) error {
	out := make([]jsonEntry, 0, len(entries))
	for _, e := range entries {
		r := e.Rec
		je := jsonEntry{
			CapturedAt:       formatTime(r.GetCapturedAt()),
			AgentID:          e.AgentID,
			PodName:          e.PodName,
			Role:             e.Role,
			ProfileID:        r.GetProfileId(),
			SourceEndpoint:   r.GetSourceEndpoint(),
			Profiles:         make([]jsonProfile, 0, len(r.GetProfiles())),
			RSSBytes:         r.GetRssBytes(),
			CgroupLimitBytes: r.GetCgroupLimitBytes(),
			ThresholdBytes:   r.GetThresholdBytes(),
			TriggerPercent:   r.GetTriggerPercent(),
		}
		for _, p := range r.GetProfiles() {
			je.Profiles = append(je.Profiles, jsonProfile{
				Type:      p.GetType(),
				Filename:  p.GetFilename(),
				Filepath:  p.GetFilepath(),
				Format:    p.GetFormat(),
				SizeBytes: p.GetSizeBytes(),
			})
		}
		out = append(out, je)
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
