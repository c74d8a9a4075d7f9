// Package protocol holds the facts of the FODC wire contract that both sides
// of it need (PROTOCOL.md): the names of the stream kinds, the gRPC metadata
// key that attributes a stream to an agent, which streams each upstream
// agent release opens, and the agent side's rule for a registration answer.
// It is shared by the proxy, our agent, the simulated upstream agent and the
// load tool so that each fact is written once.
package protocol

import (
	"fmt"
	"strings"
)

// Kind names one FODCService stream (or the ExtStreamNodeConfig extension).
// The names appear in metrics, logs and test assertions.
type Kind string

// The stream kinds.
const (
	KindRegister       Kind = "register"
	KindMetrics        Kind = "metrics"
	KindTopology       Kind = "topology"
	KindLifecycle      Kind = "lifecycle"
	KindSchemaRegistry Kind = "schema_registry"
	KindCrash          Kind = "crash"
	KindPressure       Kind = "pressure"
	KindNodeConfig     Kind = "node_config"
	// KindProfiles is the ExtStreamProfiles extension (on-demand profiles).
	KindProfiles Kind = "profiles"
)

// String returns the kind's name.
func (k Kind) String() string { return string(k) }

// MetadataAgentID is the gRPC metadata key that carries the agent id on
// every stream but the registration stream (PROTOCOL.md §2.4).
const MetadataAgentID = "agent_id"

// Release is an upstream agent release line, as far as the wire is
// concerned: releases that open the same streams share one value.
type Release int

const (
	// ReleaseHEAD opens all seven upstream streams.
	ReleaseHEAD Release = iota
	// ReleaseV0103 (v0.10.1 to v0.10.3) opens RegisterAgent,
	// StreamMetrics, StreamClusterTopology and StreamLifecycle.
	ReleaseV0103
	// ReleaseV0100 (v0.10.0) opens RegisterAgent, StreamMetrics and
	// StreamClusterTopology, and sends metrics without Metric.type.
	ReleaseV0100
)

// String returns the release's name as flags and reports spell it.
func (r Release) String() string {
	switch r {
	case ReleaseHEAD:
		return "head"
	case ReleaseV0103:
		return "v0.10.3"
	case ReleaseV0100:
		return "v0.10.0"
	}
	return fmt.Sprintf("Release(%d)", int(r))
}

// ParseRelease reads a release name ("head", "HEAD", "v0.10.3",
// "v0.10.0"; the empty string is HEAD).
func ParseRelease(s string) (Release, error) {
	switch strings.ToLower(s) {
	case "", "head":
		return ReleaseHEAD, nil
	case "v0.10.3", "v0.10.2", "v0.10.1":
		return ReleaseV0103, nil
	case "v0.10.0":
		return ReleaseV0100, nil
	}
	return 0, fmt.Errorf("unknown agent release %q: want head, v0.10.3 or v0.10.0", s)
}

// Streams returns the streams an agent of release r opens after
// registering, in the order it opens them (PROTOCOL.md §2.2, §4.9).
func (r Release) Streams() []Kind {
	switch r {
	case ReleaseV0103:
		return []Kind{KindMetrics, KindTopology, KindLifecycle}
	case ReleaseV0100:
		return []Kind{KindMetrics, KindTopology}
	default:
		return []Kind{KindMetrics, KindTopology, KindLifecycle, KindSchemaRegistry, KindCrash, KindPressure}
	}
}

// Typed reports whether agents of release r set Metric.type.
func (r Release) Typed() bool { return r != ReleaseV0100 }
