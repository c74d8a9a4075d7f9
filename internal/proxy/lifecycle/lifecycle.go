// Package lifecycle turns what agents answer on the lifecycle and schema
// registry streams into the /cluster/lifecycle answer (PROTOCOL.md §3.4,
// §3.5, §5.8): it merges the groups the agents report, merges the chunks of
// a liaison's schema registry read, judges each group's schema consistency
// and renders the JSON body.
//
// Unlike the upstream proxy (PROTOCOL.md §7 W6, W12), group merging does not
// depend on arrival order, and the consistency checker forgets every issue
// that was not seen in the latest check, for all groups.
//
// The functions are pure. Checker keeps the issue streaks between checks and
// is safe for concurrent use.
package lifecycle

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// Prefixes of the error texts the proxy adds to a group's errors.
const (
	// RegistryReadFailedPrefix starts the error added to a group whose
	// registry read failed on the liaison.
	RegistryReadFailedPrefix = "registry read failed: "
	// RegistryUnavailablePrefix starts the error added to every group when
	// no liaison could read the registry.
	RegistryUnavailablePrefix = "registry unavailable: "
)

// AgentReport is the lifecycle reply of one agent that answered.
type AgentReport struct {
	AgentID string
	// PodName is the pod the agent registered with.
	PodName string
	// Liaison is set when the agent registered with the liaison role.
	Liaison bool
	Reply   *fodcv1.StreamLifecycleRequest
}

// Registry is the schema registry truth read from a liaison agent.
type Registry struct {
	// Groups are the merged chunks, by group name.
	Groups map[string]*fodcv1.SchemaRegistryGroup
	// Err is the failure of the last liaison asked when every liaison
	// failed; nil otherwise.
	Err error
	// Available is false when no liaison could be asked at all.
	Available bool
}

// Summary counts the agents of one collection.
type Summary struct {
	// Total is the number of registered agents.
	Total int
	// Requested is the number of agents asked (those with a lifecycle
	// stream).
	Requested int
	// Responded is the number of agents that answered in time.
	Responded int
	// NotResponded is Requested minus Responded.
	NotResponded int
}

// ErrorText returns the /cluster/lifecycle "error" text for s, or "" when
// at least one agent responded (PROTOCOL.md §5.8).
func ErrorText(s Summary) string {
	switch {
	case s.Total == 0:
		return "FODC unavailable: no agents registered"
	case s.Requested == 0:
		return fmt.Sprintf("FODC unavailable: 0/%d registered agents support the lifecycle stream", s.Total)
	case s.Responded == 0:
		return fmt.Sprintf("FODC unavailable: 0/%d requested agents responded", s.Requested)
	}
	return ""
}

// sortReports returns reports in merge order: liaisons first, then by pod
// name, then by agent id.
func sortReports(reports []AgentReport) []AgentReport {
	out := slices.Clone(reports)
	slices.SortStableFunc(out, func(a, b AgentReport) int {
		if a.Liaison != b.Liaison {
			if a.Liaison {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.AgentID, b.AgentID))
	})
	return out
}

// MergeGroups merges the groups of all reports by name. The result does not
// depend on the order of reports:
//   - a group's content is taken from the first copy in this order: copies
//     from liaison agents first, then by pod name, then by agent id (and,
//     within one reply, the first copy);
//   - errors is the de-duplicated, sorted union of every copy's errors;
//   - schema_consistency is cleared, because the agents send only partial
//     fingerprints; Apply sets the proxy's verdict.
//
// The groups are sorted by name and share nothing with reports.
func MergeGroups(reports []AgentReport) []*fodcv1.GroupLifecycleInfo {
	byName := make(map[string]*fodcv1.GroupLifecycleInfo)
	errs := make(map[string][]string)
	for _, r := range sortReports(reports) {
		for _, g := range r.Reply.GetLifecycleData().GetGroups() {
			if g == nil {
				continue
			}
			name := g.GetName()
			errs[name] = append(errs[name], g.GetErrors()...)
			if _, ok := byName[name]; ok {
				continue
			}
			c := proto.CloneOf(g)
			c.SchemaConsistency = nil
			byName[name] = c
		}
	}
	out := make([]*fodcv1.GroupLifecycleInfo, 0, len(byName))
	for name, g := range byName {
		g.Errors = sortedUnique(errs[name])
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *fodcv1.GroupLifecycleInfo) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}

// Apply completes merged groups in place: each group's schema_consistency
// becomes its verdict (nil when verdicts has none), and the registry's
// failures are added to its errors ("registry read failed: <error>" when
// the liaison could not read that group, "registry unavailable: <error>"
// when every liaison failed), keeping errors sorted and unique. Nothing is
// added when no liaison could be asked.
func Apply(groups []*fodcv1.GroupLifecycleInfo, verdicts map[string]*fodcv1.SchemaConsistency, reg Registry) {
	for _, g := range groups {
		if g == nil {
			continue
		}
		g.SchemaConsistency = verdicts[g.GetName()]
		errs := g.GetErrors()
		if rg, ok := reg.Groups[g.GetName()]; ok && rg.GetError() != "" {
			errs = append(errs, RegistryReadFailedPrefix+rg.GetError())
		}
		if reg.Err != nil {
			errs = append(errs, RegistryUnavailablePrefix+reg.Err.Error())
		}
		g.Errors = sortedUnique(errs)
	}
}

// PodStatuses returns the reports of every agent that sent at least one,
// sorted by pod name, then agent id. The pod name is the registered one, or
// the reply's when the agent registered none.
func PodStatuses(reports []AgentReport) []PodReports {
	ordered := slices.Clone(reports)
	slices.SortStableFunc(ordered, func(a, b AgentReport) int {
		return cmp.Or(cmp.Compare(podName(a), podName(b)), cmp.Compare(a.AgentID, b.AgentID))
	})
	var out []PodReports
	for _, r := range ordered {
		rs := r.Reply.GetLifecycleData().GetReports()
		if len(rs) == 0 {
			continue
		}
		out = append(out, PodReports{PodName: podName(r), Reports: rs})
	}
	return out
}

func podName(r AgentReport) string {
	if r.PodName != "" {
		return r.PodName
	}
	return r.Reply.GetPodName()
}

// sortedUnique returns the sorted distinct strings of s, never nil.
func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
