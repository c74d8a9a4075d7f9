package lifecycle

import (
	"cmp"
	"maps"
	"slices"
	"sync"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// The consistency verdicts, short names for the enum values.
const (
	StatusConsistent   = fodcv1.ConsistencyStatus_CONSISTENCY_STATUS_CONSISTENT
	StatusInconsistent = fodcv1.ConsistencyStatus_CONSISTENCY_STATUS_INCONSISTENT
	StatusUnknown      = fodcv1.ConsistencyStatus_CONSISTENCY_STATUS_UNKNOWN
)

// The issue kinds, short names for the enum values.
const (
	IssueMissingInCache    = fodcv1.SchemaIssueType_SCHEMA_ISSUE_TYPE_MISSING_IN_CACHE
	IssueOrphan            = fodcv1.SchemaIssueType_SCHEMA_ISSUE_TYPE_ORPHAN
	IssueCacheStale        = fodcv1.SchemaIssueType_SCHEMA_ISSUE_TYPE_CACHE_STALE
	IssueRuntimeNotApplied = fodcv1.SchemaIssueType_SCHEMA_ISSUE_TYPE_RUNTIME_NOT_APPLIED
)

// PersistRounds is how many consecutive checks an issue must be seen in
// before it is reported.
const PersistRounds = 2

// objectKey names a schema object within a group.
type objectKey struct{ kind, name string }

// issueKey names what an issue is tracked by: the type of the issue may
// change between checks (say, from stale cache to runtime not applied)
// without restarting its streak.
type issueKey struct{ group, node, kind, name string }

// Checker judges the schema consistency of groups by comparing the registry
// truth with the fingerprints each node reports (PROTOCOL.md §5.8). An issue
// is reported only once it has been seen in PersistRounds consecutive
// checks, so that a change that is still propagating does not show up as an
// inconsistency.
//
// Checker is safe for concurrent use; checks are serialized.
type Checker struct {
	mu       sync.Mutex
	streaks  map[issueKey]int
	statuses map[string]fodcv1.ConsistencyStatus
}

// NewChecker returns a Checker that has seen no check.
func NewChecker() *Checker {
	return &Checker{
		streaks:  make(map[issueKey]int),
		statuses: make(map[string]fodcv1.ConsistencyStatus),
	}
}

// nodeObjects are the fingerprints one node reported for one group.
type nodeObjects map[objectKey]*fodcv1.NodeFingerprint

// Check returns the verdict for every group of groups for which at least
// one agent's reply carried a schema_consistency; other groups have none
// (their schema_consistency stays null). reports are the agents' replies,
// whose partial schema_consistency holds each node's fingerprints; reg is
// the registry truth; shortfall is set when some requested agent did not
// respond.
//
// Per group:
//   - no registry truth (registry unavailable, failed, or failed for this
//     group, or the group is not in it): UNKNOWN;
//   - no node reported a fingerprint: UNKNOWN;
//   - otherwise each registry object is compared with each reporting node:
//     missing on the node is MISSING_IN_CACHE, cache != registry is
//     CACHE_STALE, else runtime != cache is RUNTIME_NOT_APPLIED; an object a
//     node has that the registry lacks is ORPHAN (registry_fingerprint 0);
//   - an issue is reported only when it was also found by the previous
//     check (tracked per group, node, kind and name); a reported issue makes
//     the group INCONSISTENT; else a suppressed issue or a shortfall makes it
//     UNKNOWN; else it is CONSISTENT.
//
// objects are sorted by kind then name, node_fingerprints by node, issues by
// kind, name, node. When a node's fingerprint for an object arrives from
// several agents, the first in pod name, agent id order is used.
//
// Every streak not seen in this check is forgotten, whatever its group.
func (c *Checker) Check(groups []*fodcv1.GroupLifecycleInfo, reports []AgentReport, reg Registry, shortfall bool) map[string]*fodcv1.SchemaConsistency {
	reported, fingerprints := collectFingerprints(reports)

	c.mu.Lock()
	defer c.mu.Unlock()
	streaks := make(map[issueKey]int)
	verdicts := make(map[string]*fodcv1.SchemaConsistency)
	for _, g := range groups {
		name := g.GetName()
		if g == nil || !reported[name] {
			continue
		}
		if _, done := verdicts[name]; done {
			continue
		}
		var truth *fodcv1.SchemaRegistryGroup
		if reg.Available && reg.Err == nil {
			if rg, ok := reg.Groups[name]; ok && rg.GetError() == "" {
				truth = rg
			}
		}
		verdicts[name] = c.judge(name, truth, fingerprints[name], shortfall, streaks)
	}
	c.streaks = streaks
	c.statuses = make(map[string]fodcv1.ConsistencyStatus, len(verdicts))
	for name, v := range verdicts {
		c.statuses[name] = v.GetStatus()
	}
	return verdicts
}

// Statuses returns the last verdict per group, for a gauge. Groups without
// a verdict in the last check are absent.
func (c *Checker) Statuses() map[string]fodcv1.ConsistencyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.statuses)
}

// collectFingerprints gathers every node's fingerprints per group from the
// agents' partial schema_consistency, and which groups had one at all.
func collectFingerprints(reports []AgentReport) (map[string]bool, map[string]map[string]nodeObjects) {
	reported := make(map[string]bool)
	fps := make(map[string]map[string]nodeObjects)
	ordered := slices.Clone(reports)
	slices.SortStableFunc(ordered, func(a, b AgentReport) int {
		return cmp.Or(cmp.Compare(a.PodName, b.PodName), cmp.Compare(a.AgentID, b.AgentID))
	})
	for _, r := range ordered {
		for _, g := range r.Reply.GetLifecycleData().GetGroups() {
			sc := g.GetSchemaConsistency()
			if sc == nil {
				continue
			}
			reported[g.GetName()] = true
			for _, o := range sc.GetObjects() {
				k := objectKey{o.GetKind(), o.GetName()}
				for _, nf := range o.GetNodeFingerprints() {
					if nf.GetNode() == "" {
						continue
					}
					byNode := fps[g.GetName()]
					if byNode == nil {
						byNode = make(map[string]nodeObjects)
						fps[g.GetName()] = byNode
					}
					objs := byNode[nf.GetNode()]
					if objs == nil {
						objs = make(nodeObjects)
						byNode[nf.GetNode()] = objs
					}
					if _, ok := objs[k]; !ok {
						objs[k] = nf
					}
				}
			}
		}
	}
	return reported, fps
}

// judge builds one group's verdict and records its issues' streaks in
// streaks. The caller holds c.mu.
func (c *Checker) judge(group string, truth *fodcv1.SchemaRegistryGroup, nodes map[string]nodeObjects, shortfall bool, streaks map[issueKey]int) *fodcv1.SchemaConsistency {
	objects := make(map[objectKey]*fodcv1.ObjectConsistency)
	object := func(k objectKey) *fodcv1.ObjectConsistency {
		o, ok := objects[k]
		if !ok {
			o = &fodcv1.ObjectConsistency{Kind: k.kind, Name: k.name}
			objects[k] = o
		}
		return o
	}
	registry := make(map[objectKey]uint64)
	for _, o := range truth.GetObjects() {
		k := objectKey{o.GetKind(), o.GetName()}
		if _, dup := registry[k]; dup {
			continue
		}
		registry[k] = o.GetFingerprint()
		object(k).RegistryFingerprint = o.GetFingerprint()
	}
	nodeNames := slices.Sorted(maps.Keys(nodes))
	for _, n := range nodeNames {
		for k, nf := range nodes[n] {
			object(k).NodeFingerprints = append(object(k).NodeFingerprints, &fodcv1.NodeFingerprint{
				Node:               n,
				CacheFingerprint:   nf.GetCacheFingerprint(),
				RuntimeFingerprint: nf.GetRuntimeFingerprint(),
			})
		}
	}

	sc := &fodcv1.SchemaConsistency{Objects: make([]*fodcv1.ObjectConsistency, 0, len(objects))}
	for _, o := range objects {
		sc.Objects = append(sc.Objects, o)
	}
	slices.SortFunc(sc.Objects, func(a, b *fodcv1.ObjectConsistency) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()), cmp.Compare(a.GetName(), b.GetName()))
	})

	if truth == nil || len(nodes) == 0 {
		sc.Status = StatusUnknown
		return sc
	}

	var found []*fodcv1.SchemaIssue
	for _, n := range nodeNames {
		have := nodes[n]
		for k, fp := range registry {
			nf, ok := have[k]
			var typ fodcv1.SchemaIssueType
			switch {
			case !ok:
				typ = IssueMissingInCache
			case nf.GetCacheFingerprint() != fp:
				typ = IssueCacheStale
			case nf.GetRuntimeFingerprint() != nf.GetCacheFingerprint():
				typ = IssueRuntimeNotApplied
			default:
				continue
			}
			found = append(found, &fodcv1.SchemaIssue{Kind: k.kind, Name: k.name, Node: n, Type: typ})
		}
		for k := range have {
			if _, ok := registry[k]; !ok {
				found = append(found, &fodcv1.SchemaIssue{Kind: k.kind, Name: k.name, Node: n, Type: IssueOrphan})
			}
		}
	}

	suppressed := false
	for _, is := range found {
		key := issueKey{group: group, node: is.GetNode(), kind: is.GetKind(), name: is.GetName()}
		streaks[key] = c.streaks[key] + 1
		if streaks[key] >= PersistRounds {
			sc.Issues = append(sc.Issues, is)
		} else {
			suppressed = true
		}
	}
	slices.SortFunc(sc.Issues, func(a, b *fodcv1.SchemaIssue) int {
		return cmp.Or(cmp.Compare(a.GetKind(), b.GetKind()), cmp.Compare(a.GetName(), b.GetName()),
			cmp.Compare(a.GetNode(), b.GetNode()), cmp.Compare(a.GetType(), b.GetType()))
	})

	switch {
	case len(sc.Issues) > 0:
		sc.Status = StatusInconsistent
	case suppressed, shortfall:
		sc.Status = StatusUnknown
	default:
		sc.Status = StatusConsistent
	}
	return sc
}
