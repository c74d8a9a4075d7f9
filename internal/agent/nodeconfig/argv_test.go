package nodeconfig

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactArgv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, want []string
	}{
		{"equals form", []string{"banyand", "data", "--etcd-password=hunter2", "--grpc-port=17912"},
			[]string{"banyand", "data", "--etcd-password=<redacted>", "--grpc-port=17912"}},
		{"space form", []string{"banyand", "--auth-token", "abc", "--x", "1"},
			[]string{"banyand", "--auth-token", "<redacted>", "--x", "1"}},
		{"secret boolean before a flag", []string{"--auth", "--x=1"}, []string{"--auth", "--x=1"}},
		{"secret flag last", []string{"--secret"}, []string{"--secret"}},
		{"secret before --", []string{"--token", "--", "pos"}, []string{"--token", "--", "pos"}},
		{"after -- positional", []string{"--", "--password", "visible"}, []string{"--", "--password", "visible"}},
		{"repeated", []string{"--api-key", "k1", "--api-key=k2"}, []string{"--api-key", "<redacted>", "--api-key=<redacted>"}},
		{"url userinfo", []string{"--etcd-endpoints", "http://u:pw@etcd:2379"}, []string{"--etcd-endpoints", "http://<redacted>@etcd:2379"}},
		{"embedded pair", []string{"--opts=a=1,token=x"}, []string{"--opts=a=1,token=<redacted>"}},
		{"empty", []string{}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			require.Equal(t, tc.want, RedactArgv(tc.in))
			require.Equal(t, in, tc.in, "input unchanged")
		})
	}
}

func TestQuoteShellRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"banyand", "data", "--k=v", "--path=/data/x"}, "banyand data --k=v --path=/data/x"},
		{[]string{"a b", ""}, "'a b' ''"},
		{[]string{"it's", `"q"`, `\`, "$HOME", "x;y"}, `'it'\''s' '"q"' '\' '$HOME' 'x;y'`},
		{[]string{"tab\tnew\nline"}, "'tab\tnew\nline'"},
	} {
		got := QuoteShell(tc.words)
		require.Equal(t, tc.want, got)
		back, err := SplitShell(got)
		require.NoError(t, err)
		require.Equal(t, tc.words, back)
	}
}
