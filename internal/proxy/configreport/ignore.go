package configreport

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Ignore is the set of parameters left out of the consistency comparison,
// as glob patterns (path.Match syntax: *, ?, [...]) over parameter names.
// Names and patterns are compared ignoring case and with "_" read as "-",
// so "*-port" matches both the flag grpc-port and the variable
// env:BYDB_GRPC_PORT. A pattern matches either the full name, with its
// "env:" or "runtime:" prefix, or the bare name without it: "env:*" leaves
// out the whole environment and "port" the flag and any variable named
// port.
//
// The zero value ignores nothing. An Ignore is immutable and safe for
// concurrent use.
type Ignore struct {
	patterns []string // normalised, in the order given, without duplicates
}

// defaultPatterns are the per-node parameters: they differ between nodes of
// one role by design. Ports are among them because nodes that share a host
// (a demo, a VM) must use different ports; in Kubernetes every pod of a
// role has the same ports anyway, so little is lost. Node labels identify a
// node (zone, rack) and are shown by /cluster. Paths that embed the pod's
// own name need no pattern: Build replaces the pod name with "{pod}".
var defaultPatterns = []string{
	"*host",      // grpc-host, http-host, node-host, env:BYDB_NODE_HOST
	"*hostname",  // hostname, node-hostname
	"*addr",      // http-grpc-addr, pprof-listener-addr, proxy-addr
	"*address",   // advertise-address
	"ip", "*-ip", // node-ip, pod-ip
	"port", "*-port", // grpc-port, http-port, env:BYDB_GRPC_PORT
	"node-id", "*-node-id", // node-id, etcd-node-id
	"pod-name", "*-pod-name",
	"node-name",
	"*labels", // node-labels
	// Runtime facts of the process rather than configuration.
	"runtime:uptime-seconds",
	"runtime:started-at",
	"runtime:cgroup",
}

// DefaultIgnore returns the default per-node parameters: host names,
// addresses and IPs (*host, *hostname, *addr, *address, ip, *-ip), ports
// (port, *-port), node identity (node-id, *-node-id, pod-name, *-pod-name,
// node-name, *labels) and the runtime facts that are per process
// (runtime:uptime_seconds, runtime:started_at, runtime:cgroup).
func DefaultIgnore() Ignore {
	return Ignore{patterns: slices.Clone(defaultPatterns)}
}

// ParseIgnore reads a comma-separated list of glob patterns (see Ignore).
// An empty spec means DefaultIgnore. A spec that starts with "+" adds its
// patterns to the defaults ("+*-path,env:BYDB_SEED"); otherwise the
// patterns replace the defaults. "none" ignores nothing. Blank items are
// skipped; a malformed pattern is an error that names it.
func ParseIgnore(spec string) (Ignore, error) {
	spec = strings.TrimSpace(spec)
	switch spec {
	case "":
		return DefaultIgnore(), nil
	case "none":
		return Ignore{}, nil
	}
	var ig Ignore
	if rest, ok := strings.CutPrefix(spec, "+"); ok {
		ig = DefaultIgnore()
		spec = rest
	}
	for item := range strings.SplitSeq(spec, ",") {
		p := normalize(strings.TrimSpace(item))
		if p == "" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return Ignore{}, fmt.Errorf("ignore pattern %q: %w", strings.TrimSpace(item), err)
		}
		if !slices.Contains(ig.patterns, p) {
			ig.patterns = append(ig.patterns, p)
		}
	}
	return ig, nil
}

// Patterns returns the patterns, normalised (lower case, "-" for "_"), in
// the order given. It never returns nil.
func (ig Ignore) Patterns() []string {
	if ig.patterns == nil {
		return []string{}
	}
	return slices.Clone(ig.patterns)
}

// Match reports whether the parameter name (as in Difference.Param) is
// ignored.
func (ig Ignore) Match(name string) bool {
	full := normalize(name)
	bare := full
	if i := strings.IndexByte(full, ':'); i >= 0 {
		bare = full[i+1:]
	}
	for _, p := range ig.patterns {
		if ok, _ := path.Match(p, full); ok {
			return true
		}
		if ok, _ := path.Match(p, bare); ok {
			return true
		}
	}
	return false
}

// normalize lower-cases s and reads "_" as "-".
func normalize(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}
