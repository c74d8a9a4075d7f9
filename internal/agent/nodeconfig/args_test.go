package nodeconfig

import (
	"bufio"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		params     map[string][]string
		positional []string
	}{
		{
			name:   "empty",
			args:   nil,
			params: map[string][]string{},
		},
		{
			name: "banyand data, both forms, repeated, after --",
			args: strings.Fields("data --etcd-endpoints=http://etcd:2379 --data-path /data --grpc-port 17912 " +
				"--etcd-password=s3cr3t --repeat a --repeat b -- extra"),
			params: map[string][]string{
				"etcd-endpoints": {"http://etcd:2379"},
				"data-path":      {"/data"},
				"grpc-port":      {"17912"},
				"etcd-password":  {"s3cr3t"},
				"repeat":         {"a", "b"},
			},
			positional: []string{"data", "extra"},
		},
		{
			name:   "single dash forms",
			args:   []string{"-k", "v", "-j=w", "-abc"},
			params: map[string][]string{"k": {"v"}, "j": {"w"}, "abc": {"true"}},
		},
		{
			name:   "boolean before a flag, before -- and at the end",
			args:   []string{"--tls", "--debug", "--", "--quiet"},
			params: map[string][]string{"tls": {"true"}, "debug": {"true"}},
			// After "--" a flag-looking token is positional.
			positional: []string{"--quiet"},
		},
		{
			name:   "boolean at the end",
			args:   []string{"--x=1", "--verbose"},
			params: map[string][]string{"x": {"1"}, "verbose": {"true"}},
		},
		{
			name:   "the documented heuristic: a bare flag takes the next non-flag token",
			args:   []string{"--debug", "data"},
			params: map[string][]string{"debug": {"data"}},
		},
		{
			name:   "negative numbers and durations are values",
			args:   []string{"--offset", "-1", "--ratio", "-0.5", "--shift", "-.5", "--back", "-5m"},
			params: map[string][]string{"offset": {"-1"}, "ratio": {"-0.5"}, "shift": {"-.5"}, "back": {"-5m"}},
		},
		{
			name:   "empty value, value with =, explicit false",
			args:   []string{"--empty=", "--node-labels=type=hot,zone=a", "--tls=false"},
			params: map[string][]string{"empty": {""}, "node-labels": {"type=hot,zone=a"}, "tls": {"false"}},
		},
		{
			name:       "dash alone is positional and a value",
			args:       []string{"-", "--in", "-"},
			params:     map[string][]string{"in": {"-"}},
			positional: []string{"-"},
		},
		{
			name:       "tokens that are not flags",
			args:       []string{"---", "--=v", "-=x", "--ok"},
			params:     map[string][]string{"ok": {"true"}},
			positional: []string{"---", "--=v", "-=x"},
		},
		{
			name:   "triple dash is stripped",
			args:   []string{"---k", "v"},
			params: map[string][]string{"k": {"v"}},
		},
		{
			name:   "mixed forms of one repeated flag keep their order",
			args:   []string{"--r=1", "-r", "2", "--r", "--r=4"},
			params: map[string][]string{"r": {"1", "2", "true", "4"}},
		},
		{
			name:       "-- as the last token",
			args:       []string{"serve", "--"},
			params:     map[string][]string{},
			positional: []string{"serve"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params, positional := ParseArgs(tc.args)
			require.Equal(t, tc.params, params)
			require.Equal(t, tc.positional, positional)
		})
	}
}

func TestSplitProgram(t *testing.T) {
	tests := []struct {
		name    string
		argv    []string
		program string
		args    []string
	}{
		{"nil", nil, "", nil},
		{"program only", []string{"/bin/banyand"}, "/bin/banyand", []string{}},
		{"program and sub-command", []string{"banyand", "data", "--x=1"}, "banyand", []string{"data", "--x=1"}},
		{"no program", []string{"--x=1", "data"}, "", []string{"--x=1", "data"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			program, args := SplitProgram(tc.argv)
			require.Equal(t, tc.program, program)
			require.Equal(t, tc.args, args)
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"only NUL", "\x00", nil},
		{"proc format, trailing NUL", "banyand\x00data\x00--grpc-port=17912\x00", []string{"banyand", "data", "--grpc-port=17912"}},
		{"pprof format, no trailing NUL", "banyand\x00data\x00--grpc-port=17912", []string{"banyand", "data", "--grpc-port=17912"}},
		{"trailing newline", "banyand\x00data\n", []string{"banyand", "data"}},
		{"trailing NUL and newline", "banyand\x00data\x00\n", []string{"banyand", "data"}},
		{"spaces stay inside an argument", "banyand\x00--path=/a b\x00", []string{"banyand", "--path=/a b"}},
		{"empty argument in the middle", "banyand\x00\x00x\x00", []string{"banyand", "", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, SplitCmdline([]byte(tc.in)))
		})
	}
}

func TestSplitShell(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"blanks only", " \t\n ", nil},
		{"words", "banyand  data\t--x=1\n--y 2", []string{"banyand", "data", "--x=1", "--y", "2"}},
		{"single quotes", `--path '/data/a b' 'it''s'`, []string{"--path", "/data/a b", "its"}},
		{"single quotes keep backslashes", `'a\b\'`, []string{`a\b\`}},
		{"double quotes and escapes", `--p "a \"b\" \\ \$x \q"`, []string{"--p", `a "b" \ $x \q`}},
		{"quotes glued to a flag", `--node-host="pod-0.svc" --k='v w'`, []string{"--node-host=pod-0.svc", "--k=v w"}},
		{"empty quoted words", `'' "" x`, []string{"", "", "x"}},
		{"backslash outside quotes", `a\ b \'c \"`, []string{"a b", "'c", `"`}},
		{"line continuation", "banyand \\\n data \"a\\\nb\"", []string{"banyand", "data", "ab"}},
		{"utf-8", `--label "zone=münchen"`, []string{"--label", "zone=münchen"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SplitShell(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSplitShellErrors(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		offset int
		reason string
	}{
		{"unterminated single", `--password 'hunter2`, 11, "unterminated single quote"},
		{"unterminated double", `a "b`, 2, "unterminated double quote"},
		{"escaped closing quote", `"a\"`, 0, "unterminated double quote"},
		{"trailing backslash", `a \`, 2, "trailing backslash"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SplitShell(tc.in)
			require.Nil(t, got)
			var se *SyntaxError
			require.True(t, errors.As(err, &se), "error %v is not a *SyntaxError", err)
			require.Equal(t, tc.offset, se.Offset)
			require.Equal(t, tc.reason, se.Reason)
			require.NotContains(t, err.Error(), "hunter2", "the error must not quote the input")
		})
	}
}

// TestRealCommandLine runs one BanyanDB command line through the whole
// parsing chain that Collect uses for an override.
func TestRealCommandLine(t *testing.T) {
	argv, err := SplitShell(`/usr/local/bin/banyand data --etcd-endpoints=http://etcd-0:2379,http://etcd-1:2379 ` +
		`--stream-root-path '/data/banyandb-data-hot-0/stream' --grpc-port 17912 --http-port=17913 ` +
		`--node-labels "type=hot,zone=eu 1" --tls --etcd-password='s3 cr3t' --measure-flush-timeout=-1s ` +
		`--repeat a --repeat=b -- extra "two words"`)
	require.NoError(t, err)
	program, args := SplitProgram(argv)
	require.Equal(t, "/usr/local/bin/banyand", program)
	params, positional := ParseArgs(args)
	require.Equal(t, map[string][]string{
		"etcd-endpoints":        {"http://etcd-0:2379,http://etcd-1:2379"},
		"stream-root-path":      {"/data/banyandb-data-hot-0/stream"},
		"grpc-port":             {"17912"},
		"http-port":             {"17913"},
		"node-labels":           {"type=hot,zone=eu 1"},
		"tls":                   {"true"},
		"etcd-password":         {"s3 cr3t"},
		"measure-flush-timeout": {"-1s"},
		"repeat":                {"a", "b"},
	}, params)
	require.Equal(t, []string{"data", "extra", "two words"}, positional)
}

// TestCommandLinesFile checks that every seed line parses and yields a
// sub-command or flags.
func TestCommandLinesFile(t *testing.T) {
	lines := readCmdlines(t)
	require.GreaterOrEqual(t, len(lines), 5)
	for _, l := range lines {
		argv, err := SplitShell(l)
		require.NoError(t, err, l)
		program, args := SplitProgram(argv)
		require.Contains(t, program, "banyand", l)
		params, positional := ParseArgs(args)
		require.NotEmpty(t, params, l)
		require.NotEmpty(t, positional, l)
	}
}

func readCmdlines(tb testing.TB) []string {
	tb.Helper()
	f, err := os.Open("testdata/cmdlines.txt")
	require.NoError(tb, err)
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	require.NoError(tb, sc.Err())
	return lines
}

// shellQuote quotes s for SplitShell with single quotes.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// FuzzSplitShell checks that SplitShell never panics and that quoting its
// words and splitting again gives the same words.
func FuzzSplitShell(f *testing.F) {
	for _, l := range readCmdlines(f) {
		f.Add(l)
	}
	f.Add(`a "b\"c" 'd''e' \ f \`)
	f.Add("\"unterminated")
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitShell(s)
		if err != nil {
			var se *SyntaxError
			require.True(t, errors.As(err, &se))
			require.GreaterOrEqual(t, se.Offset, 0)
			require.Less(t, se.Offset, len(s))
			return
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = shellQuote(w)
		}
		again, err := SplitShell(strings.Join(quoted, " "))
		require.NoError(t, err)
		require.Equal(t, words, again)
	})
}

// FuzzParseArgs feeds ParseArgs arbitrary argv (NUL-separated, as in
// /proc/<pid>/cmdline) and checks its invariants: names are non-empty with no
// leading dash and no "=", nothing is invented, and the canonical rendering
// (--name=value for every value, then -- and the positional arguments)
// parses back to the same result.
func FuzzParseArgs(f *testing.F) {
	for _, l := range readCmdlines(f) {
		argv, err := SplitShell(l)
		require.NoError(f, err)
		f.Add([]byte(strings.Join(argv, "\x00")))
	}
	f.Add([]byte("--a\x00--\x00-\x00-1\x00--=x\x00---"))
	f.Fuzz(func(t *testing.T, b []byte) {
		args := SplitCmdline(b)
		params, positional := ParseArgs(args)
		n := len(positional)
		for name, vs := range params {
			require.NotEmpty(t, name)
			require.NotEqual(t, byte('-'), name[0])
			require.NotContains(t, name, "=")
			require.NotEmpty(t, vs)
			n += len(vs)
		}
		require.LessOrEqual(t, n, len(args))
		for _, p := range positional {
			require.Contains(t, args, p)
		}

		var rendered []string
		for _, name := range slices.Sorted(maps.Keys(params)) {
			for _, v := range params[name] {
				rendered = append(rendered, "--"+name+"="+v)
			}
		}
		rendered = append(rendered, "--")
		rendered = append(rendered, positional...)
		params2, positional2 := ParseArgs(rendered)
		require.Equal(t, params, params2)
		require.Equal(t, positional, positional2)
	})
}
