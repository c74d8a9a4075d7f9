// Package roles parses and prints the role of a BanyanDB node.
//
// Roles arrive in two spellings (DESIGN.md §1.2): the enum names of
// banyandb.database.v1.Role that upstream agents send (ROLE_LIAISON,
// ROLE_DATA, ROLE_META, ROLE_UNSPECIFIED), and the design's names (liaison,
// datanode-hot, datanode-warm, datanode-cold). Upstream agents carry the data
// tier separately, as the node label type=hot. A Role holds both halves: the
// kind and, for data nodes, the tier.
package roles

import (
	"fmt"
	"strings"
)

// Kind is the kind of a node, numbered like banyandb.database.v1.Role.
type Kind uint8

// The node kinds. The zero value is KindUnspecified.
const (
	// KindUnspecified is a node that has not said what it is.
	KindUnspecified Kind = iota
	// KindMeta is a metadata node.
	KindMeta
	// KindData is a data node; its tier, if known, is in Role.Tier.
	KindData
	// KindLiaison is a liaison (query and write routing) node.
	KindLiaison
)

// TierLabel is the node label that upstream agents use to carry the data tier.
const TierLabel = "type"

// datanodePrefix starts the design's spelling of a tiered data node.
const datanodePrefix = "datanode-"

// accepted lists the spellings Parse understands, for error messages.
const accepted = "liaison, datanode, datanode-<tier> (e.g. datanode-hot, datanode-warm, datanode-cold), data, meta, unspecified, " +
	"or the enum names ROLE_LIAISON, ROLE_DATA, ROLE_META, ROLE_UNSPECIFIED (case-insensitive)"

// Role is a node's kind plus, for data nodes, its tier. The zero value is the
// unspecified role. Tier is empty or a lower-case word such as "hot".
type Role struct {
	Kind Kind
	Tier string
}

// Parse reads a role in either spelling. It ignores surrounding space and
// case. An empty string, an unknown name or a malformed tier is an error
// whose text lists the accepted spellings.
func Parse(s string) (Role, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "":
		return Role{}, fmt.Errorf("role is empty; use one of %s", accepted)
	case "role_liaison", "liaison":
		return Role{Kind: KindLiaison}, nil
	case "role_data", "data", "datanode":
		return Role{Kind: KindData}, nil
	case "role_meta", "meta":
		return Role{Kind: KindMeta}, nil
	case "role_unspecified", "unspecified":
		return Role{}, nil
	}
	if tier, ok := strings.CutPrefix(v, datanodePrefix); ok {
		if !isWord(tier) {
			return Role{}, fmt.Errorf("role %q has an invalid tier %q (want letters, digits or '_'); use one of %s", s, tier, accepted)
		}
		return Role{Kind: KindData, Tier: tier}, nil
	}
	return Role{}, fmt.Errorf("unknown role %q; use one of %s", s, accepted)
}

// FromRegistration parses the role an agent registered with and completes it
// from the node's labels: a data node without a tier takes the lower-cased
// value of the "type" label. A label value that is not a word is ignored.
func FromRegistration(role string, labels map[string]string) (Role, error) {
	r, err := Parse(role)
	if err != nil {
		return Role{}, err
	}
	if r.Kind == KindData && r.Tier == "" {
		if tier := strings.ToLower(strings.TrimSpace(labels[TierLabel])); isWord(tier) {
			r.Tier = tier
		}
	}
	return r, nil
}

// WireName returns the banyandb.database.v1.Role enum name of r's kind. The
// tier is not part of it.
func (r Role) WireName() string {
	switch r.Kind {
	case KindLiaison:
		return "ROLE_LIAISON"
	case KindData:
		return "ROLE_DATA"
	case KindMeta:
		return "ROLE_META"
	default:
		return "ROLE_UNSPECIFIED"
	}
}

// String returns the canonical display name: liaison, datanode-<tier>
// (datanode when the tier is unknown), meta or unspecified. Parse accepts it.
func (r Role) String() string {
	switch r.Kind {
	case KindLiaison:
		return "liaison"
	case KindData:
		if r.Tier == "" {
			return "datanode"
		}
		return datanodePrefix + r.Tier
	case KindMeta:
		return "meta"
	default:
		return "unspecified"
	}
}

// Match reports whether r is selected by filter: the kinds are equal and
// the filter either names no tier or names r's tier. A filter of "datanode"
// therefore selects data nodes of every tier.
func (r Role) Match(filter Role) bool {
	return r.Kind == filter.Kind && (filter.Tier == "" || filter.Tier == r.Tier)
}

// maxTierLen bounds a tier like a Kubernetes label value.
const maxTierLen = 63

// isWord reports whether s is a non-empty run of at most maxTierLen
// lower-case letters, digits and underscores.
func isWord(s string) bool {
	if s == "" || len(s) > maxTierLen {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
