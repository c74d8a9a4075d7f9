package nodeconfig

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

const testPID = 4242

// bootTime and startTicks put the node's start at boot + 1000s.
var (
	testBoot  = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	testStart = testBoot.Add(1000 * time.Second)
	testNow   = testStart.Add(90*time.Minute + 500*time.Millisecond)
)

// secrets appear in the fake node's command line, environment and agent
// flags; none of them may reach the marshalled report.
var secrets = []string{"s3cr3t", "envpw", "urlpw", "agenttok", "posturlpw", "querytok", "labelkey"}

// nodeArgv is the fake node's argv.
var nodeArgv = []string{
	"/usr/local/bin/banyand", "data",
	"--etcd-endpoints=http://root:urlpw@etcd:2379", "--data-path", "/data", "--grpc-port", "17912",
	"--etcd-password=s3cr3t", "--repeat", "a", "--repeat", "b",
	"--metrics-url", "http://node:2121/metrics?token=querytok",
	"--node-labels", "type=hot,api-key=labelkey",
	"--", "extra", "http://u:posturlpw@x",
}

// fakeFS is a fake /proc and cgroup v2 tree in a temporary directory.
type fakeFS struct {
	proc, cgroup string
}

func newFakeFS(t *testing.T) fakeFS {
	t.Helper()
	root := t.TempDir()
	fs := fakeFS{proc: filepath.Join(root, "proc"), cgroup: filepath.Join(root, "cgroup")}
	pid := strconv.Itoa(testPID)
	fs.write(t, filepath.Join(fs.proc, pid, "cmdline"), strings.Join(nodeArgv, "\x00")+"\x00")
	fs.write(t, filepath.Join(fs.proc, pid, "environ"), strings.Join([]string{
		"PATH=/usr/bin", "HOME=/root", "OTHER_PASSWORD=notbydb",
		"BYDB_GRPC_PORT=17912", "BYDB_ETCD_PASSWORD=envpw", "BYDB_VERSION=0.9.0",
		"GOMAXPROCS=2", "GOMEMLIMIT=3GiB", "=odd", "noequals",
	}, "\x00")+"\x00")
	// comm holds a space and a parenthesis; starttime (field 22) is 100000
	// ticks = 1000s after boot.
	stat := pid + " (ban yand) d) S 1 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 12 0 100000 1000 200 18446744073709551615"
	fs.write(t, filepath.Join(fs.proc, pid, "stat"), stat+"\n")
	fs.write(t, filepath.Join(fs.proc, pid, "cgroup"), "0::/kubepods/pod-uid/node\n")
	fs.write(t, filepath.Join(fs.proc, "stat"), "cpu  1 2 3 4\nintr 5\nbtime "+strconv.FormatInt(testBoot.Unix(), 10)+"\nprocesses 9\n")
	fs.write(t, filepath.Join(fs.cgroup, "kubepods", "pod-uid", "node", "cpu.max"), "150000 100000\n")
	fs.write(t, filepath.Join(fs.cgroup, "kubepods", "pod-uid", "node", "memory.max"), "4294967296\n")
	return fs
}

func (fakeFS) write(t *testing.T, p, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
}

func (fs fakeFS) options() Options {
	return Options{
		PID:        testPID,
		ProcRoot:   fs.proc,
		CgroupRoot: fs.cgroup,
		AgentParams: map[string][]string{
			"proxy-addr":    {"proxy:17900"},
			"node-role":     {"datanode-hot"},
			"proxy-token":   {"agenttok"},
			"scrape-target": {"http://a:2121/metrics", "http://b:2121/metrics"},
		},
		Now: func() time.Time { return testNow },
	}
}

func params(m map[string]*fodcv1.ExtParamValues) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = v.GetValues()
	}
	return out
}

// requireNoSecrets asserts that no secret is anywhere in the wire form of r.
func requireNoSecrets(t *testing.T, r *fodcv1.ExtNodeConfigRequest) {
	t.Helper()
	b, err := proto.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(b), Redacted, "the check must see the redacted values")
	for _, s := range secrets {
		require.NotContains(t, string(b), s)
	}
}

var wantNodeParams = map[string][]string{
	"etcd-endpoints": {"http://<redacted>@etcd:2379"},
	"data-path":      {"/data"},
	"grpc-port":      {"17912"},
	"etcd-password":  {Redacted},
	"repeat":         {"a", "b"},
	"metrics-url":    {"http://node:2121/metrics?token=<redacted>"},
	"node-labels":    {"type=hot,api-key=<redacted>"},
}

func TestCollectFromProc(t *testing.T) {
	fs := newFakeFS(t)
	r := Collect(t.Context(), fs.options())

	require.Empty(t, r.GetErrors())
	require.Equal(t, "proc:4242", r.GetSource())
	require.Equal(t, wantNodeParams, params(r.GetStartupParams()))
	require.Equal(t, []string{"data", "extra", "http://<redacted>@x"}, r.GetArgs())
	require.Equal(t, map[string]string{
		"BYDB_GRPC_PORT":     "17912",
		"BYDB_ETCD_PASSWORD": Redacted,
		"BYDB_VERSION":       "0.9.0",
	}, r.GetEnvironment())
	require.Equal(t, map[string]string{
		KeyProgram:     "/usr/local/bin/banyand",
		KeyVersion:     "0.9.0",
		KeyStartedAt:   "2026-03-01T08:16:40Z",
		KeyUptime:      "5400",
		KeyCgroup:      "/kubepods/pod-uid/node",
		KeyCPULimit:    "1.5",
		KeyMemoryLimit: "4294967296",
		KeyGOMAXPROCS:  "2",
		KeyGOMEMLIMIT:  "3GiB",
	}, r.GetRuntimeConfig())
	require.Equal(t, map[string][]string{
		"proxy-addr":    {"proxy:17900"},
		"node-role":     {"datanode-hot"},
		"proxy-token":   {Redacted},
		"scrape-target": {"http://a:2121/metrics", "http://b:2121/metrics"},
	}, params(r.GetAgentParams()))
	require.True(t, r.GetCollectedAt().AsTime().Equal(testNow))
	requireNoSecrets(t, r)
}

func TestCollectUptimeFromProcUptime(t *testing.T) {
	fs := newFakeFS(t)
	fs.write(t, filepath.Join(fs.proc, "stat"), "cpu 1 2 3\n") // no btime
	// The system is up 1000s + 1h: the node has run for an hour.
	fs.write(t, filepath.Join(fs.proc, "uptime"), "4600.25 9000.00\n")
	r := Collect(t.Context(), fs.options())
	require.Empty(t, r.GetErrors())
	require.Equal(t, "3600", r.GetRuntimeConfig()[KeyUptime])
	require.Equal(t, testNow.Add(-3600250*time.Millisecond).Format(time.RFC3339), r.GetRuntimeConfig()[KeyStartedAt])
}

func TestCollectCgroupVariants(t *testing.T) {
	tests := []struct {
		name      string
		cgroup    string // /proc/<pid>/cgroup
		cpuMax    string // at the cgroup root; "" for none
		memoryMax string
		want      map[string]string // limit keys
		errs      []string          // substrings, one per error
	}{
		{
			name:   "unlimited at the namespace root",
			cgroup: "0::/\n", cpuMax: "max 100000\n", memoryMax: "max\n",
			want: map[string]string{KeyCgroup: "/", KeyCPULimit: "unlimited", KeyMemoryLimit: "unlimited"},
		},
		{
			name:   "quota without period, hybrid hierarchy lines first",
			cgroup: "12:memory:/x\n1:name=systemd:/y\n0::/\n", cpuMax: "50000\n", memoryMax: "1073741824\n",
			want: map[string]string{KeyCgroup: "/", KeyCPULimit: "0.5", KeyMemoryLimit: "1073741824"},
		},
		{
			name:   "sibling container's cgroup is not visible",
			cgroup: "0::/../cri-containerd-abc.scope\n", cpuMax: "max 100000\n", memoryMax: "max\n",
			want: map[string]string{},
			errs: []string{"not visible to the agent"},
		},
		{
			name:   "cgroup v1 only",
			cgroup: "4:cpu,cpuacct:/docker/abc\n",
			want:   map[string]string{},
			errs:   []string{"no cgroup v2 entry"},
		},
		{
			name:   "missing and malformed files",
			cgroup: "0::/\n", cpuMax: "", memoryMax: "lots\n",
			want: map[string]string{KeyCgroup: "/"},
			errs: []string{"read cpu limit", "read memory limit: malformed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeFS(t)
			fs.write(t, filepath.Join(fs.proc, strconv.Itoa(testPID), "cgroup"), tc.cgroup)
			if tc.cpuMax != "" {
				fs.write(t, filepath.Join(fs.cgroup, "cpu.max"), tc.cpuMax)
			}
			if tc.memoryMax != "" {
				fs.write(t, filepath.Join(fs.cgroup, "memory.max"), tc.memoryMax)
			}
			r := Collect(t.Context(), fs.options())
			got := map[string]string{}
			for _, k := range []string{KeyCgroup, KeyCPULimit, KeyMemoryLimit} {
				if v, ok := r.GetRuntimeConfig()[k]; ok {
					got[k] = v
				}
			}
			require.Equal(t, tc.want, got)
			require.Len(t, r.GetErrors(), len(tc.errs), "errors: %q", r.GetErrors())
			for i, e := range tc.errs {
				require.Contains(t, r.GetErrors()[i], e)
			}
			// The rest of the report stands.
			require.Equal(t, wantNodeParams, params(r.GetStartupParams()))
		})
	}
}

func TestCollectFromPprof(t *testing.T) {
	fs := newFakeFS(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// The body net/http/pprof writes: arguments joined by NUL, no
		// trailing NUL. The node here differs from /proc's to tell them apart.
		_, _ = w.Write([]byte("banyand\x00liaison\x00--grpc-port=18912\x00--etcd-password\x00s3cr3t"))
	}))
	t.Cleanup(srv.Close)

	o := fs.options()
	o.PprofURL = srv.URL + "/debug/pprof/cmdline"
	o.HTTPClient = srv.Client()
	r := Collect(t.Context(), o)
	require.Empty(t, r.GetErrors())
	require.Equal(t, "pprof:"+o.PprofURL, r.GetSource())
	require.Equal(t, map[string][]string{"grpc-port": {"18912"}, "etcd-password": {Redacted}}, params(r.GetStartupParams()))

	// Credentials in the pprof URL never leave the node, not even in the
	// report's source.
	o.PprofURL = strings.Replace(srv.URL, "http://", "http://admin:urlpw@", 1) + "/debug/pprof/cmdline"
	r = Collect(t.Context(), o)
	require.NotContains(t, r.GetSource(), "urlpw")
	require.Contains(t, r.GetSource(), "pprof:")
	require.Equal(t, []string{"liaison"}, r.GetArgs())
	// /proc still supplies the environment and the runtime facts.
	require.Equal(t, "17912", r.GetEnvironment()["BYDB_GRPC_PORT"])
	require.Equal(t, "1.5", r.GetRuntimeConfig()[KeyCPULimit])
	requireNoSecrets(t, r)
}

// TestCollectRealPprofHandler reads this test binary's own command line
// through the real net/http/pprof handler, so that a change of its format
// breaks the test.
func TestCollectRealPprofHandler(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(pprof.Cmdline))
	t.Cleanup(srv.Close)
	o := Options{PprofURL: srv.URL + "/debug/pprof/cmdline", HTTPClient: srv.Client()}
	r := Collect(t.Context(), o)
	require.Empty(t, r.GetErrors())
	program, args := SplitProgram(os.Args)
	require.Equal(t, program, r.GetRuntimeConfig()[KeyProgram])
	wantParams, wantArgs := ParseArgs(args)
	require.Equal(t, Redact(wantParams), params(r.GetStartupParams()))
	require.Equal(t, len(wantArgs), len(r.GetArgs()))
}

func TestCollectOverride(t *testing.T) {
	fs := newFakeFS(t)
	o := fs.options()
	o.Cmdline = `banyand data --stream-root-path '/data/a b' --etcd-password="s3cr3t" -- extra`
	o.PprofURL = "http://127.0.0.1:1/never-asked"
	r := Collect(t.Context(), o)
	require.Empty(t, r.GetErrors())
	require.Equal(t, SourceOverride, r.GetSource())
	require.Equal(t, map[string][]string{"stream-root-path": {"/data/a b"}, "etcd-password": {Redacted}}, params(r.GetStartupParams()))
	require.Equal(t, []string{"data", "extra"}, r.GetArgs())
	requireNoSecrets(t, r)
}

func TestCollectFallbacksAndErrors(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	empty := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(empty.Close)
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", MaxReadBytes+1)))
	}))
	t.Cleanup(huge.Close)

	tests := []struct {
		name   string
		edit   func(t *testing.T, o *Options, fs fakeFS)
		source string
		errs   []string // one per error; " ... " separates substrings
	}{
		{
			name:   "bad override falls back to /proc",
			edit:   func(_ *testing.T, o *Options, _ fakeFS) { o.Cmdline = `banyand --etcd-password 's3cr3t` },
			source: "proc:4242",
			errs:   []string{"parse command line override: command line syntax: unterminated single quote at byte 24"},
		},
		{
			name:   "blank override falls back to /proc",
			edit:   func(_ *testing.T, o *Options, _ fakeFS) { o.Cmdline = "  " },
			source: "proc:4242",
			errs:   []string{"command line override is empty"},
		},
		{
			name: "pprof error status falls back to /proc, URL password redacted",
			edit: func(_ *testing.T, o *Options, _ fakeFS) {
				o.PprofURL = strings.Replace(failing.URL, "http://", "http://admin:urlpw@", 1) + "/debug/pprof/cmdline"
				o.HTTPClient = failing.Client()
			},
			source: "proc:4242",
			errs:   []string{"read command line from http://<redacted>@127.0.0.1: ... unexpected status 500"},
		},
		{
			name: "empty pprof body",
			edit: func(_ *testing.T, o *Options, _ fakeFS) {
				o.PprofURL = empty.URL
				o.HTTPClient = empty.Client()
			},
			source: "proc:4242",
			errs:   []string{"empty command line"},
		},
		{
			name: "oversized pprof body",
			edit: func(_ *testing.T, o *Options, _ fakeFS) {
				o.PprofURL = huge.URL
				o.HTTPClient = huge.Client()
			},
			source: "proc:4242",
			errs:   []string{"larger than 1048576 bytes"},
		},
		{
			name:   "bad pprof URL",
			edit:   func(_ *testing.T, o *Options, _ fakeFS) { o.PprofURL = "://bad" },
			source: "proc:4242",
			errs:   []string{"read command line from ://bad"},
		},
		{
			name: "process gone: every /proc read fails, nothing is fatal",
			edit: func(_ *testing.T, o *Options, _ fakeFS) { o.PID = 999 },
			errs: []string{
				"read command line of pid 999", "read environment of pid 999",
				"read start time of pid 999", "read cgroup of pid 999",
			},
		},
		{
			name: "nothing configured",
			edit: func(_ *testing.T, o *Options, _ fakeFS) { o.PID = 0 },
			errs: []string{"no source of the node's command line"},
		},
		{
			name: "malformed stat and no boot time",
			edit: func(t *testing.T, _ *Options, fs fakeFS) {
				fs.write(t, filepath.Join(fs.proc, strconv.Itoa(testPID), "stat"), "4242 (banyand) S 1 2")
			},
			source: "proc:4242",
			errs:   []string{"read start time of pid 4242: malformed stat: 5 fields"},
		},
		{
			name: "neither btime nor uptime",
			edit: func(t *testing.T, _ *Options, fs fakeFS) {
				fs.write(t, filepath.Join(fs.proc, "stat"), "cpu 1\n")
			},
			source: "proc:4242",
			errs:   []string{"read boot time: no btime in stat"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeFS(t)
			o := fs.options()
			tc.edit(t, &o, fs)
			r := Collect(t.Context(), o)
			require.Equal(t, tc.source, r.GetSource())
			require.Len(t, r.GetErrors(), len(tc.errs), "errors: %q", r.GetErrors())
			for i, e := range tc.errs {
				for part := range strings.SplitSeq(e, " ... ") {
					require.Contains(t, r.GetErrors()[i], part)
				}
			}
			if tc.source == "proc:4242" {
				require.Equal(t, wantNodeParams, params(r.GetStartupParams()))
			} else {
				require.Empty(t, r.GetStartupParams())
			}
			require.NotNil(t, r.GetCollectedAt())
			require.Equal(t, Redacted, r.GetAgentParams()["proxy-token"].GetValues()[0])
			b, err := proto.Marshal(r)
			require.NoError(t, err)
			for _, s := range secrets {
				require.NotContains(t, string(b), s)
			}
		})
	}
}

func TestCollectHonoursContext(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := Collect(ctx, Options{PprofURL: srv.URL, HTTPClient: srv.Client()})
	require.Len(t, r.GetErrors(), 1)
	require.Contains(t, r.GetErrors()[0], "context canceled")
}

// MemoryLimit reads the node's cgroup memory.max: the pressure trigger's
// limit for a node whose gauges carry none.
func TestMemoryLimit(t *testing.T) {
	fs := newFakeFS(t)
	o := fs.options()
	v, ok := MemoryLimit(o)
	require.True(t, ok)
	require.Equal(t, uint64(4294967296), v)

	fs.write(t, filepath.Join(fs.cgroup, "kubepods", "pod-uid", "node", "memory.max"), "max\n")
	_, ok = MemoryLimit(o)
	require.False(t, ok, "no limit")
	o.PID = 0
	_, ok = MemoryLimit(o)
	require.False(t, ok, "no process")
}
