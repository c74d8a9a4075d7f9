package roles

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Role
	}{
		{"ROLE_LIAISON", Role{Kind: KindLiaison}},
		{"role_liaison", Role{Kind: KindLiaison}},
		{"liaison", Role{Kind: KindLiaison}},
		{"  Liaison\t", Role{Kind: KindLiaison}},
		{"ROLE_DATA", Role{Kind: KindData}},
		{"data", Role{Kind: KindData}},
		{"datanode", Role{Kind: KindData}},
		{"DataNode", Role{Kind: KindData}},
		{"datanode-hot", Role{Kind: KindData, Tier: "hot"}},
		{"datanode-warm", Role{Kind: KindData, Tier: "warm"}},
		{"datanode-cold", Role{Kind: KindData, Tier: "cold"}},
		{"DATANODE-HOT", Role{Kind: KindData, Tier: "hot"}},
		{"datanode-tier_2", Role{Kind: KindData, Tier: "tier_2"}},
		{"ROLE_META", Role{Kind: KindMeta}},
		{"meta", Role{Kind: KindMeta}},
		{"ROLE_UNSPECIFIED", Role{}},
		{"unspecified", Role{}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, wantSub string
	}{
		{"empty", "", "role is empty"},
		{"blank", "   ", "role is empty"},
		{"unknown", "coordinator", `unknown role "coordinator"`},
		{"enum number", "2", `unknown role "2"`},
		{"prefix only", "ROLE_", `unknown role "ROLE_"`},
		{"empty tier", "datanode-", "invalid tier"},
		{"tier with dash", "datanode-hot-1", "invalid tier"},
		{"tier with space", "datanode-very hot", "invalid tier"},
		{"tier too long", "datanode-" + strings.Repeat("h", maxTierLen+1), "invalid tier"},
		{"tier on liaison", "liaison-hot", "unknown role"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			require.Error(t, err)
			require.Equal(t, Role{}, got)
			require.Contains(t, err.Error(), tc.wantSub)
			// Every error tells the operator what would have worked.
			for _, s := range []string{"liaison", "datanode-hot", "ROLE_DATA", "ROLE_LIAISON", "meta"} {
				require.Contains(t, err.Error(), s)
			}
		})
	}
}

func TestFromRegistration(t *testing.T) {
	tests := []struct {
		name   string
		role   string
		labels map[string]string
		want   Role
	}{
		{"upstream data with tier label", "ROLE_DATA", map[string]string{"type": "hot"}, Role{Kind: KindData, Tier: "hot"}},
		{"label is lower-cased and trimmed", "ROLE_DATA", map[string]string{"type": " Warm "}, Role{Kind: KindData, Tier: "warm"}},
		{"no labels", "ROLE_DATA", nil, Role{Kind: KindData}},
		{"empty type label", "ROLE_DATA", map[string]string{"type": ""}, Role{Kind: KindData}},
		{"type label not a word", "ROLE_DATA", map[string]string{"type": "hot/1"}, Role{Kind: KindData}},
		{"other labels only", "ROLE_DATA", map[string]string{"tier": "hot"}, Role{Kind: KindData}},
		{"explicit tier wins over label", "datanode-cold", map[string]string{"type": "hot"}, Role{Kind: KindData, Tier: "cold"}},
		{"liaison ignores the label", "ROLE_LIAISON", map[string]string{"type": "hot"}, Role{Kind: KindLiaison}},
		{"unspecified ignores the label", "ROLE_UNSPECIFIED", map[string]string{"type": "hot"}, Role{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromRegistration(tc.role, tc.labels)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	_, err := FromRegistration("", map[string]string{"type": "hot"})
	require.ErrorContains(t, err, "role is empty")
	_, err = FromRegistration("ROLE_QUERY", nil)
	require.ErrorContains(t, err, `unknown role "ROLE_QUERY"`)
}

func TestNames(t *testing.T) {
	tests := []struct {
		role          Role
		wire, display string
	}{
		{Role{Kind: KindLiaison}, "ROLE_LIAISON", "liaison"},
		{Role{Kind: KindData}, "ROLE_DATA", "datanode"},
		{Role{Kind: KindData, Tier: "hot"}, "ROLE_DATA", "datanode-hot"},
		{Role{Kind: KindData, Tier: "cold"}, "ROLE_DATA", "datanode-cold"},
		{Role{Kind: KindMeta}, "ROLE_META", "meta"},
		{Role{}, "ROLE_UNSPECIFIED", "unspecified"},
		{Role{Kind: Kind(200)}, "ROLE_UNSPECIFIED", "unspecified"},
	}
	for _, tc := range tests {
		t.Run(tc.display, func(t *testing.T) {
			require.Equal(t, tc.wire, tc.role.WireName())
			require.Equal(t, tc.display, tc.role.String())
		})
	}
}

// TestRoundTrip checks that both printed forms parse back to the same kind,
// and the display form to the same tier.
func TestRoundTrip(t *testing.T) {
	for _, r := range []Role{{}, {Kind: KindMeta}, {Kind: KindLiaison}, {Kind: KindData}, {Kind: KindData, Tier: "warm"}} {
		got, err := Parse(r.String())
		require.NoError(t, err)
		require.Equal(t, r, got)
		got, err = Parse(r.WireName())
		require.NoError(t, err)
		require.Equal(t, r.Kind, got.Kind)
		require.Empty(t, got.Tier)
	}
}

func TestMatch(t *testing.T) {
	hot := Role{Kind: KindData, Tier: "hot"}
	tests := []struct {
		name   string
		role   Role
		filter string
		want   bool
	}{
		{"tiered node, untiered filter", hot, "datanode", true},
		{"tiered node, enum filter", hot, "ROLE_DATA", true},
		{"same tier", hot, "datanode-hot", true},
		{"other tier", hot, "datanode-warm", false},
		{"untiered node, tiered filter", Role{Kind: KindData}, "datanode-hot", false},
		{"untiered node, untiered filter", Role{Kind: KindData}, "data", true},
		{"kind differs", hot, "liaison", false},
		{"liaison both spellings", Role{Kind: KindLiaison}, "ROLE_LIAISON", true},
		{"liaison vs data", Role{Kind: KindLiaison}, "ROLE_DATA", false},
		{"meta", Role{Kind: KindMeta}, "meta", true},
		{"unspecified", Role{}, "unspecified", true},
		{"unspecified vs liaison", Role{}, "liaison", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.filter)
			require.NoError(t, err)
			require.Equal(t, tc.want, tc.role.Match(f))
		})
	}
}
